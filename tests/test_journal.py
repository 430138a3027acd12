"""The journal and the data folder: group commit, recovery, compaction, lock."""

from __future__ import annotations

import os

import pytest
from twisted.internet import defer, task

from twisted_agenda.crdt import PUT, REMOVE, Op
from twisted_agenda.datadir import DataDir, DataDirError
from twisted_agenda.journal import (
    Journal,
    JournalCorrupt,
    JournalUnavailable,
    recover,
)
from twisted_agenda.model import Contact


def op(seq: int, name: str = "", kind: str = PUT, origin: str = "a1") -> Op:
    name = name or f"c{seq}"
    fields = {"name": name, "phone": f"{seq:03d}"} if kind == PUT else {}
    return Op.make(origin, seq, 1000 + seq, name.casefold(), kind, fields)


def write_journal(datadir: DataDir, data: bytes) -> None:
    os.makedirs(datadir.path, exist_ok=True)
    with open(datadir.journal, "wb") as f:
        f.write(data)


def lines(*ops: Op) -> bytes:
    return b"".join(o.line + b"\n" for o in ops)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def datadir(tmp_path):
    d = DataDir(str(tmp_path / "data"))
    d.open()
    yield d
    d.close()


def make_journal(datadir, clock, run_blocking=None, snapshot=None) -> Journal:
    return Journal(
        datadir,
        clock,
        run_blocking or (lambda f, *a: defer.maybeDeferred(f, *a)),
        snapshot or (lambda: ({}, [])),
    )


# -- group commit -------------------------------------------------------------


def test_appends_of_one_reactor_turn_share_one_fsync(datadir):
    clock = task.Clock()
    journal = make_journal(datadir, clock)
    ds = [journal.append([op(i).line]) for i in range(1, 51)]
    assert not any(d.called for d in ds)
    assert journal.fsyncs == 0
    clock.advance(0)
    assert journal.fsyncs == 1
    assert all(d.called for d in ds)
    assert read(datadir.journal) == lines(*(op(i) for i in range(1, 51)))


def test_each_reactor_turn_gets_its_own_fsync(datadir):
    clock = task.Clock()
    journal = make_journal(datadir, clock)
    for i in range(1, 4):
        journal.append([op(i).line])
        clock.advance(0)
    assert journal.fsyncs == 3


def test_appends_during_a_slow_fsync_go_out_together_next(datadir):
    clock = task.Clock()
    held = []

    def slow(f, *args):
        d = defer.Deferred()
        held.append((f, args, d))
        return d

    journal = make_journal(datadir, clock, run_blocking=slow)
    first = journal.append([op(1).line])
    clock.advance(0)
    assert len(held) == 1
    later = [journal.append([op(i).line]) for i in range(2, 20)]
    clock.advance(0)
    assert len(held) == 1  # one write at a time, in order

    f, args, d = held.pop(0)
    d.callback(f(*args))
    assert first.called and not any(d.called for d in later)
    assert len(held) == 1  # everything that queued meanwhile: one batch
    f, args, d = held.pop(0)
    d.callback(f(*args))
    assert all(d.called for d in later)
    assert journal.fsyncs == 2
    assert read(datadir.journal) == lines(*(op(i) for i in range(1, 20)))


def test_an_append_fires_only_once_its_line_is_on_disk(datadir):
    clock = task.Clock()
    journal = make_journal(datadir, clock)
    seen = []
    journal.append([op(1).line]).addCallback(
        lambda _: seen.append((read(datadir.journal), journal.fsyncs))
    )
    clock.advance(0)
    assert seen == [(lines(op(1)), 1)]


def test_node_writes_in_one_turn_share_one_fsync(agenda):
    node = agenda.node
    ds = [node.add(f"c{i}", f"{i:03d}") for i in range(200)]
    assert node.journal.fsyncs == 0
    agenda.settle()
    assert node.journal.fsyncs == 1
    assert all(d.called for d in ds)
    assert len(recover(agenda.datadir).ops) == 200


@pytest.mark.logs_errors
def test_a_failed_write_fails_its_waiters_and_every_later_append(datadir):
    clock = task.Clock()

    def broken(f, *args):
        return defer.fail(OSError(5, "Input/output error"))

    journal = make_journal(datadir, clock, run_blocking=broken)
    d1 = journal.append([op(1).line])
    clock.advance(0)
    assert journal.failed
    failure = []
    d1.addErrback(failure.append)
    assert failure[0].check(JournalUnavailable)
    assert "Input/output error" in str(failure[0].value)
    d2 = journal.append([op(2).line])
    d2.addErrback(failure.append)
    assert failure[1].check(JournalUnavailable)


def test_close_waits_for_pending_writes(datadir):
    clock = task.Clock()
    journal = make_journal(datadir, clock)
    journal.append([op(1).line])
    closed = journal.close()
    assert not closed.called
    clock.advance(0)
    assert closed.called
    assert read(datadir.journal) == lines(op(1))


# -- recovery -----------------------------------------------------------------


def test_a_missing_journal_is_an_empty_book(datadir):
    recovered = recover(datadir)
    assert (recovered.ops, recovered.records, recovered.snapshot_vv) == ([], [], {})
    assert not recovered.dropped_tail


def test_recover_reads_every_line(datadir):
    write_journal(datadir, lines(op(1), op(2), op(3)))
    recovered = recover(datadir)
    assert recovered.ops == [op(1), op(2), op(3)]
    assert not recovered.dropped_tail


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b'{"o":"a1","s":4,"h":10', id="partial-line"),
        pytest.param(b"\x00\x00\x00\x00", id="zeros"),
        pytest.param(op(4).line, id="whole-op-without-newline"),
        pytest.param(b"garbage\n", id="complete-garbage-line"),
        pytest.param(b'{"o":"a1"}\n', id="complete-json-not-an-op"),
    ],
)
def test_a_torn_last_line_is_dropped_and_cut_off(datadir, tail):
    good = lines(op(1), op(2), op(3))
    write_journal(datadir, good + tail)
    recovered = recover(datadir)
    assert recovered.ops == [op(1), op(2), op(3)]
    assert recovered.dropped_tail
    assert read(datadir.journal) == good
    assert read(datadir.journal + ".torn") == tail.removesuffix(b"\n")


def test_later_appends_after_a_torn_tail_are_clean(agenda):
    agenda.node.add("Ana", "111")
    agenda.node.add("Bia", "222")
    agenda.settle()
    agenda.close()
    with open(agenda.datadir.journal, "ab") as f:
        f.write(b'{"o":"a1","s":3,"h":')
    node = agenda.open()
    assert [c.name for c in node.contacts()] == ["Ana", "Bia"]
    node.add("Carla", "333")
    agenda.settle()
    node = agenda.restart()
    assert [c.name for c in node.contacts()] == ["Ana", "Bia", "Carla"]
    assert not recover(agenda.datadir).dropped_tail


def test_a_bad_middle_line_is_corruption(datadir):
    data = lines(op(1)) + b"not json\n" + lines(op(3))
    write_journal(datadir, data)
    with pytest.raises(JournalCorrupt) as caught:
        recover(datadir)
    assert caught.value.path == datadir.journal
    assert caught.value.lineno == 2
    assert str(caught.value).startswith(f"{datadir.journal} line 2: not an op")
    assert read(datadir.journal) == data  # never "repaired" by guessing


def test_a_mistyped_op_in_the_middle_is_corruption(datadir):
    bad = op(2).line.replace(b'"s":2', b'"s":"2"')
    write_journal(datadir, lines(op(1)) + bad + b"\n" + lines(op(3)))
    with pytest.raises(JournalCorrupt, match=r"journal\.jsonl line 2: op has"):
        recover(datadir)


def test_an_empty_middle_line_is_corruption(datadir):
    write_journal(datadir, lines(op(1)) + b"\n" + lines(op(3)))
    with pytest.raises(JournalCorrupt, match="line 2"):
        recover(datadir)


def test_a_bad_last_line_followed_by_a_torn_one_is_corruption(datadir):
    write_journal(datadir, lines(op(1)) + b"garbage\n" + b'{"o":')
    with pytest.raises(JournalCorrupt, match="line 2"):
        recover(datadir)


def test_restart_rebuilds_the_book(agenda):
    node = agenda.node
    node.add("Maria da Silva", "+55 11 91234-5678", email="maria@example.com")
    node.add("João", "(21) 3333-4444", note="vizinho")
    node.add("Bia", "555")
    agenda.settle()
    node.update("João", email="joao@example.com", note="")
    node.remove("Bia")
    agenda.settle()
    before = (node.contacts(), dict(node.replica.vv), node.clock.last)

    node = agenda.restart()
    assert (
        node.contacts()
        == before[0]
        == [
            Contact("João", "(21) 3333-4444", "joao@example.com", ""),
            Contact("Maria da Silva", "+55 11 91234-5678", "maria@example.com", ""),
        ]
    )
    assert node.replica.vv == before[1] == {"a1": 5}
    assert node.durable_vv == {"a1": 5}
    # The clock and the sequence go on from where they were.
    assert node.clock.now() > before[2]
    node.add("Bia", "666")
    agenda.settle()
    assert recover(agenda.datadir).ops[-1].seq == 6
    assert node.get("bia") == Contact("Bia", "666")


def test_a_crash_loses_only_what_was_not_acknowledged(agenda):
    acked = agenda.node.add("Ana", "111")
    agenda.settle()
    assert acked.called
    agenda.runner.holding = True
    pending = agenda.node.add("Bia", "222")
    agenda.settle()
    assert not pending.called
    node = agenda.restart(crash=True)
    assert [c.name for c in node.contacts()] == ["Ana"]


# -- compaction ---------------------------------------------------------------


def fill(agenda) -> list[Contact]:
    node = agenda.node
    for i in range(20):
        node.add(f"Contact {i:02d}", f"{i:03d}", email=f"c{i}@example.com")
    agenda.settle()
    for i in range(0, 20, 3):
        node.update(f"contact {i:02d}", note=f"note {i}")
    for i in range(0, 20, 4):
        node.remove(f"Contact {i:02d}")
    agenda.settle()
    return node.contacts()


def test_compaction_writes_a_snapshot_and_empties_the_journal(agenda):
    book = fill(agenda)
    vv = dict(agenda.node.replica.vv)
    d = agenda.node.journal.compact()
    agenda.settle()
    assert d.called
    assert os.path.getsize(agenda.datadir.journal) == 0
    assert not os.path.exists(agenda.datadir.snapshot + ".tmp")
    recovered = recover(agenda.datadir)
    assert recovered.snapshot_vv == vv
    assert recovered.ops == []
    assert len(recovered.records) == 20  # removed ones keep their tombstone

    node = agenda.restart()
    assert node.contacts() == book
    assert node.replica.vv == vv
    for i in range(0, 20, 4):
        assert node.replica.get(f"contact {i:02d}") is None


def test_writes_after_compaction_land_in_the_new_journal(agenda):
    fill(agenda)
    agenda.node.journal.compact()
    agenda.settle()
    agenda.node.add("Late", "999")
    agenda.node.remove("Contact 01")
    agenda.settle()
    book = agenda.node.contacts()
    assert len(recover(agenda.datadir).ops) == 2
    node = agenda.restart()
    assert node.contacts() == book
    assert node.get("late") == Contact("Late", "999")


def test_compaction_happens_by_itself_when_the_journal_grows(make_agenda):
    # Due at max(compact_min_ops, 4 x records): 5 contacts edited over and over.
    agenda = make_agenda(compact_min_ops=10)
    node = agenda.node
    for i in range(5):
        node.add(f"c{i}", f"{i:03d}")
    agenda.settle()
    for n in range(20):
        for i in range(5):
            node.update(f"c{i}", note=f"edit {n}")
        agenda.settle()
    assert os.path.exists(agenda.datadir.snapshot)
    assert len(recover(agenda.datadir).ops) < 20
    book = node.contacts()
    assert {c.note for c in book} == {"edit 19"}
    node = agenda.restart()
    assert node.contacts() == book
    assert node.replica.vv == {"a1": 105}


def test_compaction_waits_for_enough_ops(make_agenda):
    agenda = make_agenda(compact_min_ops=50)
    for i in range(40):
        agenda.node.add(f"c{i}", f"{i:03d}")
        agenda.settle()
    assert not os.path.exists(agenda.datadir.snapshot)


def test_writes_during_compaction_are_kept(agenda):
    fill(agenda)
    agenda.runner.holding = True
    agenda.node.journal.compact()
    agenda.settle()
    d = agenda.node.add("During", "777")
    agenda.settle()
    agenda.runner.release()
    assert d.called
    book = agenda.node.contacts()
    node = agenda.restart()
    assert node.contacts() == book
    assert node.get("during") == Contact("During", "777")


def test_a_crash_between_snapshot_and_new_journal_loses_nothing(agenda):
    # The snapshot was renamed into place but the old journal survived:
    # its ops are all in the snapshot, and replaying them changes nothing.
    book = fill(agenda)
    old_journal = read(agenda.datadir.journal)
    agenda.node.journal.compact()
    agenda.settle()
    agenda.close()
    write_journal(agenda.datadir, old_journal)
    node = agenda.open()
    assert node.contacts() == book


def test_leftover_temporary_files_are_ignored(agenda):
    book = fill(agenda)
    agenda.close()
    for name in ("snapshot.jsonl.tmp", "journal.jsonl.tmp", "node-id.tmp"):
        with open(os.path.join(agenda.datadir.path, name), "wb") as f:
            f.write(b"half written")
    assert agenda.open().contacts() == book


def test_a_damaged_snapshot_is_corruption(agenda):
    fill(agenda)
    agenda.node.journal.compact()
    agenda.settle()
    agenda.close()
    snapshot = read(agenda.datadir.snapshot).split(b"\n")
    snapshot[3] = b'{"k":"x","r":'
    with open(agenda.datadir.snapshot, "wb") as f:
        f.write(b"\n".join(snapshot))
    with pytest.raises(JournalCorrupt) as caught:
        recover(agenda.datadir)
    assert caught.value.path == agenda.datadir.snapshot
    assert caught.value.lineno == 4


def test_a_truncated_snapshot_is_corruption(agenda):
    fill(agenda)
    agenda.node.journal.compact()
    agenda.settle()
    agenda.close()
    snapshot = read(agenda.datadir.snapshot)
    with open(agenda.datadir.snapshot, "wb") as f:
        f.write(snapshot[: len(snapshot) // 2].rsplit(b"\n", 1)[0] + b"\n")
    with pytest.raises(JournalCorrupt, match=r"snapshot has \d+ records, not 20"):
        recover(agenda.datadir)


# -- the data folder ----------------------------------------------------------


def test_a_second_open_of_the_same_folder_is_refused(datadir):
    again = DataDir(datadir.path)
    with pytest.raises(DataDirError) as caught:
        again.open()
    assert str(caught.value) == (
        f"data folder {datadir.path} is in use by another agenda node "
        f"(pid {os.getpid()})"
    )


def test_the_folder_is_free_again_after_close(datadir):
    datadir.close()
    again = DataDir(datadir.path)
    again.open()
    again.close()


def test_open_creates_the_folder(tmp_path):
    d = DataDir(str(tmp_path / "a" / "b"))
    d.open()
    try:
        assert os.path.isdir(d.path)
    finally:
        d.close()


def test_a_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataDirError, match=r"cannot use data folder .*file"):
        DataDir(str(tmp_path / "file")).open()


def test_the_node_id_is_made_once_and_kept(tmp_path):
    d = DataDir(str(tmp_path / "data"))
    d.open()
    made = d.node_id()
    assert made == d.node_id()
    d.close()
    again = DataDir(str(tmp_path / "data"))
    again.open()
    assert again.node_id() == made
    assert again.node_id(made) == made
    again.close()


def test_a_wanted_node_id_is_stored_and_then_enforced(tmp_path):
    d = DataDir(str(tmp_path / "data"))
    d.open()
    assert d.node_id("a1") == "a1"
    assert d.node_id() == "a1"
    with pytest.raises(DataDirError, match="belongs to node 'a1', not 'b2'"):
        d.node_id("b2")
    d.close()


def test_node_ids_differ_between_folders(tmp_path):
    ids = set()
    for name in ("x", "y", "z"):
        d = DataDir(str(tmp_path / name))
        d.open()
        ids.add(d.node_id())
        d.close()
    assert len(ids) == 3


def test_removals_survive_restart(agenda):
    agenda.node.add("Ana", "111")
    agenda.settle()
    agenda.node.remove("ana")
    agenda.settle()
    assert agenda.restart().contacts() == []
    assert recover(agenda.datadir).ops[-1].kind == REMOVE


def test_journal_ops_after_a_gap_wait_for_a_peer(agenda):
    agenda.close()
    # As a crash during a snapshot merge leaves it: b:5 follows b:1-4, which
    # were in the snapshot that never reached the disk.
    write_journal(agenda.datadir, lines(op(1), op(5, "b5", origin="b1")))
    node = agenda.open()
    assert [c.name for c in node.contacts()] == ["c1"]
    assert node.replica.vv == {"a1": 1}
