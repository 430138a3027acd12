"""Clients that do not read: the node stops reading them and caps WATCH."""

from __future__ import annotations

from twisted_agenda.lineproto import MAX_UNREAD_EVENTS


def test_a_watcher_that_never_reads_is_stopped_not_buffered_forever(agenda):
    watcher, writer = agenda.connect(), agenda.connect()
    assert watcher.request("WATCH") == ["OK watching"]
    watcher.proto.pauseProducing()  # its socket buffer is full
    assert watcher.transport.producerState == "paused", "no more requests read"
    for i in range(MAX_UNREAD_EVENTS + 5):
        agenda.node.add(f"Person {i}", "555-0000")
    agenda.settle()
    lines = watcher.lines()
    assert len(lines) == MAX_UNREAD_EVENTS + 1
    assert lines[-1].startswith("EVENT overflow 10000 changes unread; WATCH stopped")
    assert agenda.node.watchers == set()
    assert writer.request("GET 'Person 3'") == ['CONTACT "Person 3" 555-0000', "OK 1"]


def test_reading_resumes_when_the_client_catches_up(agenda):
    conn = agenda.connect()
    conn.proto.pauseProducing()
    assert conn.transport.producerState == "paused"
    conn.proto.resumeProducing()
    assert conn.transport.producerState == "producing"
    assert conn.request("ADD Bia 555-1234") == ["OK added Bia"]
