"""No reply shows a change before it is on disk, whoever made it."""

from __future__ import annotations

import pytest


def test_a_read_waits_for_the_fsync_of_what_it_shows(agenda):
    writer, reader = agenda.connect(), agenda.connect()
    agenda.runner.holding = True  # the disk is slow
    writer.send("ADD Bia 555-1234\n")
    reader.send("GET Bia\nLIST\nHELP\n")
    assert writer.lines() == [] and reader.lines() == [], "nothing durable yet"
    agenda.runner.release()
    assert writer.lines() == ["OK added Bia"]
    lines = reader.lines()
    assert lines[:4] == ["CONTACT Bia 555-1234", "OK 1", "CONTACT Bia 555-1234", "OK 1"]
    assert lines[-1] == "OK help"


@pytest.mark.logs_errors
def test_a_write_lost_to_a_failed_disk_was_never_shown(agenda):
    writer, reader = agenda.connect(), agenda.connect()
    agenda.runner.holding = True
    writer.send("ADD Bia 555-1234\n")
    reader.send("GET Bia\n")
    [(_write, _args, flush)] = agenda.runner.held
    agenda.runner.held.clear()
    flush.errback(OSError(28, "No space left on device"))  # the disk is full
    assert writer.lines()[0].startswith("ERR unavailable")
    assert reader.lines()[0].startswith("ERR unavailable")
    assert reader.request("GET Bia") == ["ERR not-found no contact named Bia"]


def test_reads_do_not_wait_when_nothing_is_pending(agenda):
    conn = agenda.connect()
    conn.request("ADD Bia 555-1234")
    agenda.runner.holding = True
    assert conn.request("GET Bia") == ["CONTACT Bia 555-1234", "OK 1"]
