"""The JSON-lines journal: group commit, torn-tail recovery, compaction.

``journal.jsonl`` holds one op per line, appended. ``snapshot.jsonl`` holds
the whole book as of a version vector: a header line, then one record per
line. Recovery reads the snapshot, then the journal; ops already covered by
the snapshot are skipped by the replica as duplicates.

Durability: ``append`` returns a Deferred that fires once the line is written
*and* fsync'd. Every line appended during one reactor turn (and while the
previous fsync runs) goes out in a single write + fsync on a dedicated writer
thread, so one disk flush acknowledges many ops and the reactor never waits
on the disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from attrs import define, field
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from twisted_agenda.crdt import BadOp, Op, Record, VersionVector, record_line
from twisted_agenda.datadir import DataDir, fsync_dir, write_atomically

log = Logger()

SNAPSHOT_FORMAT = 1


class JournalCorrupt(Exception):
    """A damaged line that is not the torn tail: never guess, stop."""

    def __init__(self, path: str, lineno: int, reason: str) -> None:
        super().__init__(f"{path} line {lineno}: {reason}")
        self.path = path
        self.lineno = lineno


class JournalUnavailable(Exception):
    """The disk failed under us; no further write can be acknowledged."""


@define
class Recovered:
    """What a data folder held at start."""

    snapshot_vv: VersionVector = field(factory=dict)
    records: list[tuple[str, Record]] = field(factory=list)
    ops: list[Op] = field(factory=list)
    dropped_tail: bool = False


def recover(datadir: DataDir) -> Recovered:
    """Read snapshot and journal; cut a torn last journal line off the file."""
    out = Recovered()
    if os.path.exists(datadir.snapshot):
        out.snapshot_vv, out.records = _read_snapshot(datadir.snapshot)
    if not os.path.exists(datadir.journal):
        return out
    with open(datadir.journal, "rb") as f:
        lines = f.read().split(b"\n")
    tail = lines.pop()  # what follows the last newline: b"" unless torn
    offset = 0
    for lineno, line in enumerate(lines, 1):
        try:
            out.ops.append(Op.decode(line))
        except BadOp as e:
            if lineno < len(lines) or tail:
                raise JournalCorrupt(datadir.journal, lineno, str(e)) from None
            tail = line
            break
        offset += len(line) + 1
    if tail:
        # Kept aside, not destroyed: a whole last line that does not parse is
        # most likely a write the crash cut short, but a person may look.
        kept = datadir.journal + ".torn"
        with open(kept, "wb") as f:
            f.write(tail)
            os.fsync(f.fileno())
        log.warn(
            "{path} line {lineno}: dropping a torn last line ({size} bytes)"
            " left by a crash; its bytes are in {kept}",
            path=datadir.journal,
            lineno=len(out.ops) + 1,
            size=len(tail),
            kept=kept,
        )
        out.dropped_tail = True
        with open(datadir.journal, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())
    return out


def _read_snapshot(path: str) -> tuple[VersionVector, list[tuple[str, Record]]]:
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    try:
        header = json.loads(lines[0])
        vv = {str(o): int(s) for o, s in header["vv"].items()}
        count = int(header["records"])
        if header.get("snapshot") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown snapshot format {header.get('snapshot')!r}")
    except (IndexError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise JournalCorrupt(path, 1, f"bad snapshot header: {e}") from None
    if len(lines) - 1 != count:
        raise JournalCorrupt(
            path, len(lines), f"snapshot has {len(lines) - 1} records, not {count}"
        )
    records = []
    for lineno, line in enumerate(lines[1:], 2):
        try:
            records.append(Record.from_json(json.loads(line)))
        except (BadOp, ValueError) as e:
            raise JournalCorrupt(path, lineno, str(e)) from None
    return vv, records


def snapshot_header(vv: VersionVector, records: int) -> bytes:
    header = {"snapshot": SNAPSHOT_FORMAT, "vv": vv, "records": records}
    return json.dumps(header, separators=(",", ":")).encode()


def thread_runner(reactor: Any) -> tuple[Callable[..., defer.Deferred], ThreadPool]:
    """A one-thread pool: writes and fsyncs happen in order, off the reactor.

    The caller starts the pool (after twistd has daemonized) and stops it.
    """
    pool = ThreadPool(minthreads=1, maxthreads=1, name="agenda-journal")

    def run(f, *args):
        return threads.deferToThreadPool(reactor, pool, f, *args)

    return run, pool


class Journal:
    """Appends op lines with group commit; compacts into a snapshot on request.

    ``run_blocking(f, *args)`` runs ``f`` away from the reactor and returns a
    Deferred (a one-thread pool in production, a synchronous call in tests).
    ``snapshot`` returns ``(vv, [(key, Record)])``: a copy of the book as it
    is now, which the writer thread encodes.
    """

    def __init__(
        self,
        datadir: DataDir,
        reactor: Any,
        run_blocking: Callable[..., defer.Deferred],
        snapshot: Callable[[], tuple[VersionVector, list[tuple[str, Record]]]],
    ) -> None:
        self._datadir = datadir
        self._reactor = reactor
        self._run_blocking = run_blocking
        self._snapshot = snapshot
        created = not os.path.exists(datadir.journal)
        self._open_journal()
        if created:
            # A new file's name must be durable too, or the first acknowledged
            # ops could vanish with it.
            fsync_dir(datadir.path)
        self._pending: list[bytes] = []
        self._waiters: list[defer.Deferred] = []
        self._compact_next = False
        self._scheduled = False
        self._busy = False
        self._failure: Exception | None = None
        self._snapshot_in_flight = False
        #: Called once, before any waiter hears of a failed write.
        self.on_failure: Callable[[], None] | None = None
        self.lines_since_snapshot = 0
        self.fsyncs = 0

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def compacting(self) -> bool:
        return self._compact_next or self._snapshot_in_flight

    def append(self, lines: Iterable[bytes]) -> defer.Deferred:
        """Fires with None once every line is on disk (written and fsync'd)."""
        self._pending.extend(lines)
        return self._wait()

    @property
    def idle(self) -> bool:
        """Nothing appended is waiting for the disk."""
        return not (self._busy or self._waiters)

    def barrier(self) -> defer.Deferred:
        """Fires once everything appended so far is on disk."""
        return defer.succeed(None) if self.idle else self._wait()

    def compact(self) -> defer.Deferred:
        """Fires once a snapshot of the book as it is now is on disk."""
        self._compact_next = True
        return self._wait()

    def _wait(self) -> defer.Deferred:
        if self._failure is not None:
            return defer.fail(JournalUnavailable(str(self._failure)))
        d = defer.Deferred()
        self._waiters.append(d)
        if not self._scheduled and not self._busy:
            self._scheduled = True
            self._reactor.callLater(0, self._flush)
        return d

    def read_snapshot(self) -> defer.Deferred:
        """Fires with ``(vv, record_lines)`` of the snapshot on disk.

        Read on the writer thread, so it never sees a half-replaced file.
        """
        return self._run_blocking(self._read_snapshot_lines)

    def _read_snapshot_lines(self) -> tuple[VersionVector, list[bytes]]:
        if not os.path.exists(self._datadir.snapshot):
            return {}, []
        with open(self._datadir.snapshot, "rb") as f:
            header, *records = f.read().split(b"\n")
        vv = json.loads(header)["vv"]
        return vv, [line for line in records if line]

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._waiters:
            return
        batch, self._pending = self._pending, []
        waiters, self._waiters = self._waiters, []
        snapshot = None
        if self._compact_next:
            self._compact_next = False
            # Taken now, on the reactor thread: it covers exactly the ops
            # written so far plus this batch, and nothing later.
            snapshot = self._snapshot()
            self._snapshot_in_flight = True
            self.lines_since_snapshot = 0
        else:
            self.lines_since_snapshot += len(batch)
        self._busy = True
        d = self._run_blocking(self._write, batch, snapshot)
        d.addCallbacks(self._written, self._write_failed, (waiters,), None, (waiters,))

    def _open_journal(self) -> None:
        # Unbuffered: bytes of a failed write must not linger in a buffer
        # that a later flush or close would still put on disk.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._fd = os.open(self._datadir.journal, flags, 0o644)
        #: The journal's length up to its last durable line.
        self._durable_size = os.fstat(self._fd).st_size

    def _write(self, batch: list[bytes], snapshot) -> None:
        if batch:
            data = b"".join(line + b"\n" for line in batch)
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
                os.fsync(self._fd)
            except OSError:
                self._cut_back()
                raise
            self._durable_size += len(data)
            self.fsyncs += 1
        if snapshot is not None:
            vv, records = snapshot
            lines = (record_line(key, record) for key, record in records)
            header = snapshot_header(vv, len(records))
            write_atomically(self._datadir.snapshot, [header, *lines])
            # The snapshot holds every journaled op now: start a new journal.
            os.close(self._fd)
            with open(self._datadir.journal + ".tmp", "wb") as f:
                os.fsync(f.fileno())
            os.replace(self._datadir.journal + ".tmp", self._datadir.journal)
            fsync_dir(self._datadir.path)
            self._open_journal()

    def _cut_back(self) -> None:
        """After a failed write: drop whatever part of it reached the file.

        Those ops were never acknowledged; a restart must not bring them back.
        """
        try:
            os.ftruncate(self._fd, self._durable_size)
            os.fsync(self._fd)
        except OSError as e:
            log.error(
                "could not cut {path} back to its last durable line ({size} bytes):"
                " {error}; a restart may drop or replay the failed write's ops",
                path=self._datadir.journal,
                size=self._durable_size,
                error=e,
            )

    def _written(self, _: None, waiters: list[defer.Deferred]) -> None:
        self._busy = self._snapshot_in_flight = False
        for d in waiters:
            d.callback(None)
        if self._waiters:
            self._flush()

    def _write_failed(self, failure, waiters: list[defer.Deferred]) -> None:
        self._busy = self._snapshot_in_flight = False
        self._failure = failure.value
        log.failure("journal write failed; this node no longer accepts writes", failure)
        if self.on_failure is not None:
            self.on_failure()
        error = JournalUnavailable(f"journal write failed: {failure.value}")
        for d in waiters + self._waiters:
            d.errback(error)
        self._waiters = []

    def close(self) -> defer.Deferred:
        """Wait for pending writes, then close the file."""
        idle = self.idle or self._failure is not None
        d = defer.succeed(None) if idle else self._wait()

        def closed(result):
            os.close(self._fd)
            return result

        return d.addBoth(closed)
