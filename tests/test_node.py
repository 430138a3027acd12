"""Node: where a local write becomes a durable op, seen by readers and watchers."""

from __future__ import annotations

from itertools import pairwise

import pytest
from replication_harness import result

from twisted_agenda.crdt import Change
from twisted_agenda.journal import JournalUnavailable, recover
from twisted_agenda.model import Contact, InvalidField
from twisted_agenda.node import Exists, NotFound


def test_add_fires_with_the_contact_once_durable(agenda):
    d = agenda.node.add(" Maria ", "+55 11 91234-5678", email="m@example.com")
    assert not d.called
    assert agenda.node.durable_vv == {}
    agenda.settle()
    assert result(d) == Contact("Maria", "+55 11 91234-5678", "m@example.com")
    assert agenda.node.durable_vv == {"a1": 1}
    [op] = recover(agenda.datadir).ops
    assert (op.origin, op.seq, op.key, op.kind) == ("a1", 1, "maria", "put")
    assert op.fields == {
        "name": "Maria",
        "phone": "+55 11 91234-5678",
        "email": "m@example.com",
        "note": "",
    }


def test_add_refuses_bad_fields_before_writing(agenda):
    with pytest.raises(InvalidField, match="3 digits"):
        agenda.node.add("Maria", "12")
    with pytest.raises(InvalidField, match="unknown field 'age'"):
        agenda.node.add("Maria", "123", age="40")
    assert agenda.runner.calls == 0
    assert agenda.node.replica.vv == {}


def test_add_refuses_an_existing_name(agenda):
    agenda.node.add("João", "123")
    with pytest.raises(Exists):
        agenda.node.add("JOÃO", "456")


def test_get_and_contacts(agenda):
    agenda.node.add("Bia", "222")
    agenda.node.add("ana", "111")
    agenda.settle()
    assert agenda.node.get("BIA") == Contact("Bia", "222")
    with pytest.raises(NotFound):
        agenda.node.get("Carla")
    assert [c.name for c in agenda.node.contacts()] == ["ana", "Bia"]


def test_find(agenda):
    agenda.node.add("João", "(21) 3333-4444", email="jj@example.com")
    agenda.node.add("Maria", "+55 11 91234-5678")
    assert [c.name for c in agenda.node.find("joao")] == ["João"]
    assert [c.name for c in agenda.node.find("1191234")] == ["Maria"]
    assert [c.name for c in agenda.node.find("")] == ["João", "Maria"]


def test_update_writes_the_fields_it_names(agenda):
    agenda.node.add("Maria", "123", email="m@example.com", note="x")
    d = agenda.node.update("maria", phone="123", note="y")
    agenda.settle()
    assert result(d) == Contact("Maria", "123", "m@example.com", "y")
    assert recover(agenda.datadir).ops[-1].fields == {"phone": "123", "note": "y"}


def test_an_update_to_the_same_values_is_still_a_write_but_no_event(agenda):
    agenda.node.add("Maria", "123")
    agenda.settle()
    heard = []
    agenda.node.watchers.add(heard.append)
    d = agenda.node.update("Maria", phone="123", note="")
    agenda.settle()
    assert result(d) == Contact("Maria", "123")
    assert agenda.node.replica.vv == {"a1": 2}
    assert heard == [], "nothing a user would notice changed"


def test_update_refuses_unknown_contacts_and_bad_fields(agenda):
    agenda.node.add("Maria", "123")
    with pytest.raises(NotFound):
        agenda.node.update("Bia", phone="456")
    with pytest.raises(InvalidField):
        agenda.node.update("Maria", phone="")


def test_remove(agenda):
    agenda.node.add("Maria", "123")
    d = agenda.node.remove("MARIA")
    agenda.settle()
    assert result(d) == Contact("Maria", "123")
    with pytest.raises(NotFound):
        agenda.node.get("Maria")
    with pytest.raises(NotFound):
        agenda.node.remove("Maria")


def test_adding_again_after_remove_does_not_bring_old_fields_back(agenda):
    agenda.node.add("Maria", "123", email="old@example.com", note="old")
    agenda.node.remove("Maria")
    d = agenda.node.add("Maria", "456")
    agenda.settle()
    assert result(d) == Contact("Maria", "456")
    assert agenda.restart().get("Maria") == Contact("Maria", "456")


def test_each_reply_describes_its_own_write(agenda):
    node = agenda.node
    added = node.add("Maria", "123")
    updated = node.update("Maria", note="later")
    removed = node.remove("Maria")
    agenda.settle()
    assert result(added) == Contact("Maria", "123")
    assert result(updated) == Contact("Maria", "123", note="later")
    assert result(removed) == Contact("Maria", "123", note="later")


def test_sequence_numbers_and_stamps_grow(agenda):
    node = agenda.node
    for i in range(5):
        node.add(f"c{i}", "123")
    agenda.settle()
    ops = recover(agenda.datadir).ops
    assert [op.seq for op in ops] == [1, 2, 3, 4, 5]
    assert all(a.hlc < b.hlc for a, b in pairwise(ops))


def test_watchers_hear_each_change_once_it_is_durable(agenda):
    heard: list[Change] = []
    agenda.node.watchers.add(heard.append)
    agenda.runner.holding = True
    agenda.node.add("Maria", "123")
    agenda.settle()
    assert heard == []
    agenda.runner.release()
    assert [(c.kind, c.after) for c in heard] == [("added", Contact("Maria", "123"))]
    agenda.runner.holding = False
    agenda.node.update("Maria", email="m@example.com")
    agenda.node.remove("Maria")
    agenda.settle()
    assert [c.kind for c in heard] == ["added", "updated", "removed"]
    assert heard[1].before == Contact("Maria", "123")
    assert heard[2].before == Contact("Maria", "123", "m@example.com")
    assert heard[2].after is None


@pytest.mark.logs_errors
def test_a_failing_watcher_does_not_stop_the_others(agenda):
    heard = []

    def broken(change):
        raise RuntimeError("watcher bug")

    agenda.node.watchers.update({broken, heard.append})
    d = agenda.node.add("Maria", "123")
    agenda.settle()
    assert result(d) == Contact("Maria", "123")
    assert len(heard) == 1


def test_durable_listeners_run_once_per_turn(agenda):
    calls = []
    agenda.node.on_durable.add(lambda: calls.append(dict(agenda.node.durable_vv)))
    for i in range(10):
        agenda.node.add(f"c{i}", "123")
    agenda.settle()
    assert calls == [{"a1": 10}]


@pytest.mark.logs_errors
def test_no_write_is_accepted_once_the_journal_failed(agenda):
    agenda.runner.failing = OSError(28, "No space left on device")
    d = agenda.node.add("Maria", "123")
    agenda.settle()
    with pytest.raises(JournalUnavailable, match="No space left"):
        result(d)
    agenda.runner.failing = None
    with pytest.raises(JournalUnavailable):
        result(agenda.node.add("Bia", "456"))
    assert agenda.node.durable_vv == {}


@pytest.mark.logs_errors
def test_a_write_refused_by_the_disk_never_comes_back_after_a_restart(
    agenda, monkeypatch
):
    added = agenda.node.add("Ana", "111")
    agenda.settle()
    result(added)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    # The bytes reach the file, the flush fails: the write was not durable.
    monkeypatch.setattr("twisted_agenda.journal.os.fsync", disk_full)
    d = agenda.node.add("Bia", "222")
    agenda.settle()
    with pytest.raises(JournalUnavailable, match="No space left"):
        result(d)
    monkeypatch.undo()
    node = agenda.restart()
    assert [c.name for c in node.contacts()] == ["Ana"]


def test_close_flushes_what_is_pending(agenda):
    d = agenda.node.add("Maria", "123")
    closed = agenda.node.close()
    agenda.settle()
    assert d.called and closed.called
    assert len(recover(agenda.datadir).ops) == 1
