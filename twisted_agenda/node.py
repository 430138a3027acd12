"""The node: where a local write becomes an op, and a peer's op joins the book.

Everything that changes the book passes through here in the same order:
op -> replica (in memory) -> journal (group commit) -> once durable: the
caller's Deferred fires, watchers hear the change, peers are offered the op.
Peers only ever receive durable ops, so a crash can never make a node reuse
a sequence number that another node already holds; and the line protocol
holds any reply that shows the book until what it shows is durable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from twisted_agenda.crdt import (
    PUT,
    REMOVE,
    Applied,
    Change,
    Op,
    Record,
    Replica,
    VersionVector,
    covers,
    dominates,
    merged,
)
from twisted_agenda.datadir import DataDir
from twisted_agenda.hlc import ClockSkew, HybridClock
from twisted_agenda.journal import Journal, JournalUnavailable, Recovered, recover
from twisted_agenda.model import (
    FIELDS,
    Contact,
    clean_fields,
    clean_name,
    contact_key,
    fold,
    matches,
)
from twisted_agenda.oplog import OpLog
from twisted_agenda.phone import check_region, format_phone

log = Logger()


class NotFound(LookupError):
    pass


class Exists(ValueError):
    pass


class Unavailable(Exception):
    """The node cannot take writes just now; the message says why."""


class Node:
    """One replica of the book with its journal; knows nothing of sockets."""

    def __init__(
        self,
        node_id: str,
        datadir: DataDir,
        reactor: Any,
        run_blocking: Callable[..., defer.Deferred],
        clock: HybridClock | None = None,
        compact_min_ops: int = 10_000,
        compact_ratio: float = 4.0,
        log_keep_ops: int = 200_000,
        default_region: str | None = None,
    ) -> None:
        self.node_id = node_id
        #: Where numbers typed without +country are (phone.py), e.g. "BR".
        self.default_region = check_region(default_region)
        self.clock = clock or HybridClock()
        self.replica = Replica()
        self.compact_min_ops = compact_min_ops
        self.compact_ratio = compact_ratio
        self.log_keep_ops = log_keep_ops
        #: Called with each Change once it is durable (WATCH).
        self.watchers: set[Callable[[Change], None]] = set()
        #: Called (once per reactor turn at most) when new ops became durable.
        self.on_durable: set[Callable[[], None]] = set()
        #: Latest version vector each peer node reported (tombstone GC).
        #: Set through ``peer_holds``.
        self.peer_vvs: dict[str, VersionVector] = {}
        #: The nodes each peer hears from directly, as its last Sync said
        #: (tombstone GC). Set through ``peer_knows``.
        self.peer_members: dict[str, frozenset[str]] = {}
        #: The highest sequence number of our own origin a peer holds.
        self.own_history = 0
        #: How many configured peers have never answered (the Cluster tells).
        self.unidentified_peers: Callable[[], int] = lambda: 0
        self._reactor = reactor
        self._fanout_scheduled = False

        self._datadir = datadir
        recovered = self._load()
        self.journal = Journal(datadir, reactor, run_blocking, self._snapshot)
        self.journal.on_failure = self._journal_failed
        log.info(
            "node {node} opened {path}: {contacts} contacts, {ops} journal ops",
            node=node_id,
            path=datadir.path,
            contacts=len(self.replica),
            ops=len(recovered.ops),
        )

    def _load(self) -> Recovered:
        """Build the book from the data folder: the durable state only."""
        recovered = recover(self._datadir)
        self.replica = Replica()
        for key, record in recovered.records:
            self.replica.merge_record(key, record)
        self.replica.vv = dict(recovered.snapshot_vv)
        self.oplog = OpLog(recovered.snapshot_vv)
        waiting = 0
        for op in recovered.ops:
            self._apply(op)
            waiting += op.seq > self.replica.vv.get(op.origin, 0)
        if waiting:
            # Only a crash during a snapshot merge leaves these: the ops came
            # after the merged snapshot, which never reached the disk.
            log.warn(
                "{path}: {waiting} journal ops follow ops this folder lacks;"
                " they wait until a peer sends what comes before them",
                path=self._datadir.journal,
                waiting=waiting,
            )
        self.durable_vv: VersionVector = dict(self.replica.vv)
        self._listing = None
        #: Our own ops written since start come after this one.
        self._loaded_seq = self.replica.vv.get(self.node_id, 0)
        for record in self.replica.records.values():
            self.clock.observe(newest_stamp(record))
        return recovered

    def _journal_failed(self) -> None:
        """The disk refused a write: forget what never became durable.

        Ops are applied in memory before their fsync; the ones in the failed
        batch were never acknowledged, so reads must not show them either.
        The node stays up, read-only, until it is restarted.
        """
        try:
            self._load()
        except Exception:
            log.failure(
                "could not reread {path} after a failed write", path=self._datadir.path
            )
        log.critical(
            "node {node} is read-only: its journal failed; fix the disk and restart",
            node=self.node_id,
        )

    # -- reads ---------------------------------------------------------------

    def get(self, name: str) -> Contact:
        contact = self.replica.get(lookup_key(name))
        if contact is None:
            raise NotFound(name)
        return contact

    def contacts(self) -> list[Contact]:
        """Every contact, sorted; kept until the book changes (LIST, FIND)."""
        if self._listing is None:
            # Accented names sort with their letter: Álvaro before Bruno.
            self._listing = sorted(
                self.replica.contacts(), key=lambda c: (fold(c.name), c.key)
            )
        return self._listing

    def find(self, text: str) -> list[Contact]:
        return [c for c in self.contacts() if matches(c, text, self.default_region)]

    # -- local writes: each returns a Deferred firing once durable ------------

    def _clean(self, fields: dict[str, str]) -> dict[str, str]:
        fields = clean_fields(fields)
        if "phone" in fields:
            # clean_fields checked the text; __init__ checked the region.
            fields["phone"] = format_phone(fields["phone"], self.default_region)
        return fields

    def add(self, name: str, phone: str, **optional: str) -> defer.Deferred:
        fields = self._clean({"name": name, "phone": phone, **optional})
        key = contact_key(fields["name"])
        if self.replica.get(key) is not None:
            raise Exists(fields["name"])
        # Every field is written so that re-adding a removed contact does not
        # resurrect its old email or note.
        fields = {f: fields.get(f, "") for f in FIELDS}
        return self._write(key, PUT, fields)

    def update(self, name: str, **changes: str) -> defer.Deferred:
        fields = self._clean(changes)
        key = lookup_key(name)
        if self.replica.get(key) is None:
            raise NotFound(name)
        # Every field named is written, even one that already holds the
        # value here: another node may hold an older edit we have not seen,
        # and this later one must win over it everywhere.
        return self._write(key, PUT, fields)

    def remove(self, name: str) -> defer.Deferred:
        key = lookup_key(name)
        if self.replica.get(key) is None:
            raise NotFound(name)
        return self._write(key, REMOVE, {})

    def _write(self, key: str, kind: str, fields: dict[str, str]) -> defer.Deferred:
        if self.journal.failed:
            return defer.fail(JournalUnavailable("journal failed; writes are off"))
        seq = self.replica.vv.get(self.node_id, 0) + 1
        if seq <= self.own_history:
            return defer.fail(
                Unavailable(
                    f"this node is getting its own earlier changes back from its "
                    f"peers ({self.own_history - seq + 1} to go); try again shortly"
                )
            )
        op = Op.make(self.node_id, seq, self.clock.now(), key, kind, fields)
        change = self._apply(op)
        # The reply describes this write, whatever later writes do meanwhile.
        contact = self.replica.get(key) or (change.before if change else None)
        d = self._journal([op], [change] if change else [])
        return d.addCallback(lambda _: contact)

    # -- ops from peers ------------------------------------------------------

    def peer_holds(self, peer: str, vv: VersionVector) -> None:
        """Note what ``peer`` holds, and whether it holds more of us than we do.

        It can: when this data folder is older than the node (restored from
        a backup, or wiped and restarted with the same --node-id). A new
        local op would then reuse a sequence number the peer already holds
        for another change, and the peer would drop it as a duplicate. So
        local writes wait until the peers have sent our own ops back.
        """
        self.peer_vvs[peer] = vv
        ours = self.replica.vv.get(self.node_id, 0)
        theirs = vv.get(self.node_id, 0)
        if theirs <= max(ours, self.own_history):
            return
        self.own_history = theirs
        log.warn(
            "peer {peer} holds changes of ours up to {node}:{theirs}, but this"
            " node's data ends at {node}:{ours}: the data folder is older than"
            " the node (restored from a backup, or wiped and restarted with the"
            " same --node-id); writes wait until the peers send them back",
            peer=peer,
            node=self.node_id,
            theirs=theirs,
            ours=ours,
        )
        if ours > self._loaded_seq:
            # Written before any peer could warn us: these numbers collide.
            lost = self.oplog.missing(
                {self.node_id: self._loaded_seq}, {self.node_id: ours}
            )
            log.critical(
                "changes {node}:{first}..{last} ({changes}) were written here since"
                " start under numbers that peer {peer} holds for other changes, and"
                " will not reach the peers: stop this node, empty its data folder,"
                " start it with a new --node-id, then enter those changes again",
                node=self.node_id,
                first=self._loaded_seq + 1,
                last=ours,
                changes=", ".join(_describe(op) for op in lost)
                or "no longer in memory",
                peer=peer,
            )

    def peer_knows(self, peer: str, members: frozenset[str] | None) -> None:
        """``peer`` hears from ``members`` directly (its Sync said so); None:
        it does not know yet (a node it is configured with never answered)."""
        if members is None:
            self.peer_members.pop(peer, None)
        else:
            self.peer_members[peer] = members

    def members(self) -> list[str] | None:
        """The nodes we hear from directly, for our Syncs; None while a
        configured peer has never answered (it may hold anything)."""
        return None if self.unidentified_peers() else list(self.peer_vvs)

    def receive(self, ops: Iterable[Op]) -> tuple[defer.Deferred, str]:
        """Apply peer ops; the Deferred fires with our durable vv afterwards.

        Returns a refusal reason too ("" if none): an op stamped too far in
        the future holds back the rest of its origin's ops in the batch,
        until our clock catches up; other origins' ops are applied.
        """
        if self.journal.failed:
            # Nothing may change in memory that could not become durable.
            return defer.fail(JournalUnavailable("journal failed; writes are off")), ""
        applied: list[Op] = []
        changes: list[Change] = []
        refused = ""
        held: set[str] = set()
        for op in ops:
            if op.origin in held:
                continue  # its later ops would only be gaps now
            try:
                self.clock.check(op.hlc)
            except ClockSkew as e:
                # Only this origin waits; ops relayed from others go on.
                held.add(op.origin)
                reason = f"op {op.origin}:{op.seq} refused: {e}"
                log.warn("{reason}", reason=reason)
                refused = refused or reason
                continue
            have = self.replica.vv.get(op.origin, 0)
            change = self._apply(op)
            if self.replica.vv.get(op.origin, 0) != have:
                self.clock.observe(op.hlc)
                applied.append(op)
                if change is not None:
                    changes.append(change)
        if not applied:
            # Duplicates may still be on their way to disk (sent by another
            # peer a moment ago): answer once they are, so the vv shows them.
            d = self.journal.barrier()
            return d.addCallback(lambda _: dict(self.durable_vv)), refused
        d = self._journal(applied, changes)
        return d.addCallback(lambda _: dict(self.durable_vv)), refused

    def merge_snapshot(
        self, vv: VersionVector, records: Iterable[tuple[str, Record]]
    ) -> defer.Deferred:
        """Join a peer's whole book; fires once our own snapshot holds it.

        Refused whole (ClockSkew) if a record is stamped too far in our
        future, as such an op would be: the peer sends it again later.
        """
        if self.journal.failed:
            return defer.fail(JournalUnavailable("journal failed; writes are off"))
        records = list(records)
        for key, record in records:
            try:
                self.clock.check(newest_stamp(record))
            except ClockSkew as e:
                log.warn("snapshot refused: record {key!r}: {error}", key=key, error=e)
                return defer.fail(ClockSkew(f"snapshot record {key!r}: {e}"))
        changes = []
        for key, record in records:
            self.clock.observe(newest_stamp(record))
            change = self.replica.merge_record(key, record)
            if change is not None:
                changes.append(change)
                self._listing = None
        self.replica.vv = merged(self.replica.vv, vv)
        # Ops the snapshot covers are no longer replayable from our log.
        self.oplog.trim(self.replica.vv)
        target = dict(self.replica.vv)
        d = self.journal.compact()

        def durable(_):
            self.durable_vv = merged(self.durable_vv, target)
            self._announce(changes)
            log.info(
                "merged a snapshot of {records} records; now at {vv}",
                records=len(changes),
                vv=target,
            )
            return dict(self.durable_vv)

        return d.addCallback(durable)

    # -- internals -----------------------------------------------------------

    def _apply(self, op: Op) -> Change | None:
        status, change = self.replica.apply(op)
        if status is Applied.APPLIED:
            self.oplog.add(op)
        if change is not None:
            self._listing = None
        return change

    def _journal(self, ops: list[Op], changes: list[Change]) -> defer.Deferred:
        d = self.journal.append(op.line for op in ops)
        self._maybe_compact()

        def durable(_):
            for op in ops:
                if op.seq > self.durable_vv.get(op.origin, 0):
                    self.durable_vv[op.origin] = op.seq
            self._announce(changes)

        return d.addCallback(durable)

    def _announce(self, changes: list[Change]) -> None:
        for change in changes:
            for watcher in list(self.watchers):
                try:
                    watcher(change)
                except Exception:
                    log.failure("watcher failed on {key}", key=change.key)
        if not self._fanout_scheduled:
            self._fanout_scheduled = True
            self._reactor.callLater(0, self._fanout)

    def _fanout(self) -> None:
        self._fanout_scheduled = False
        for listener in list(self.on_durable):
            try:
                listener()
            except Exception:
                log.failure("durable-op listener failed")

    def _maybe_compact(self) -> None:
        due = max(self.compact_min_ops, self.compact_ratio * len(self.replica.records))
        if self.journal.lines_since_snapshot >= due and not self.journal.compacting:
            self.journal.compact().addErrback(
                lambda f: log.failure("compaction failed", f)
            )

    def _snapshot(self) -> tuple[VersionVector, list[tuple[str, Record]]]:
        """Called by the journal when it writes a snapshot: the book right now."""
        self.replica.drop(self._stable_tombstones())
        vv = dict(self.replica.vv)
        # Keep in memory what some peer may still ask for, within a budget.
        keep = vv
        if len(self.oplog) <= self.log_keep_ops:
            keep = {
                o: min([seq] + [v.get(o, 0) for v in self.peer_vvs.values()])
                for o, seq in vv.items()
            }
        self.oplog.trim(keep)
        # Only copied here; the journal's thread encodes it, so a big book
        # does not hold the reactor for the whole JSON encoding.
        return vv, self.replica.snapshot_records()

    def _stable_tombstones(self) -> list[str]:
        """Removed contacts every node has seen removed, with nothing pending.

        A tombstone may go once each peer reported it, and we hold everything
        those peers held then: any op concurrent with the removal has then
        reached us, and any later op is stamped after it. That covers every
        node only if every node is a peer of ours: every configured peer has
        answered, every origin we know is a peer, and every node our peers
        hear from is one we hear from too. In a chain A - B - C, A never hears
        from C (which may hold an edit older than the removal, unsent), so A
        keeps its tombstones; B, which hears from both, may drop them.
        """
        peers = self.peer_vvs
        if not peers or self.unidentified_peers():
            return []
        known = set(peers) | {self.node_id}
        if not set(self.replica.vv) <= known:
            return []
        for peer in peers:
            members = self.peer_members.get(peer)
            if members is None or not members <= known:
                return []
        if not all(dominates(self.replica.vv, vv) for vv in peers.values()):
            return []
        return [
            key
            for key, record in self.replica.records.items()
            if record.tomb is not None
            and record.contact() is None
            and all(covers(vv, record.tomb[1], record.tomb[2]) for vv in peers.values())
        ]

    def close(self) -> defer.Deferred:
        return self.journal.close()


def lookup_key(name: str) -> str:
    """The key of a name a client asks for; InvalidField if no name could be it."""
    return contact_key(clean_name(name))


def _describe(op: Op) -> str:
    """``add Duda``, ``update Ana``, ``remove Ana``: an op for a person to read."""
    if op.kind == REMOVE:
        return f"remove {op.key}"
    verb = "add" if set(op.fields) == set(FIELDS) else "update"
    return f"{verb} {op.fields.get('name', op.key)}"


def newest_stamp(record: Record) -> int:
    """The latest hlc a record holds, in a register or its tombstone."""
    stamps = [hlc for _, hlc, _ in record.registers.values()]
    if record.tomb is not None:
        stamps.append(record.tomb[0])
    return max(stamps, default=0)
