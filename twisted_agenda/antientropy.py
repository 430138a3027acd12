"""Catch-up between two peers: what one sends so the other lacks nothing.

Each side of a peer session runs an ``OutboundStream``. It knows the peer's
version vector (from the handshake, every ack and every periodic ``Sync``)
and sends, in pages that fit one AMP value, exactly the ops above it. New ops
take the same path the moment they are durable, so "push" and "anti-entropy"
are one mechanism: the cost of catching a peer up follows what it missed, not
the size of the book. When our log no longer reaches back as far as the peer
needs (the journal was compacted), the stream sends our on-disk snapshot in
pages, then carries on with the ops after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from twisted_agenda.crdt import Op, VersionVector, merged
from twisted_agenda.hlc import ClockSkew
from twisted_agenda.journal import JournalUnavailable
from twisted_agenda.node import Node

log = Logger()

#: Bytes of op or record lines per AMP value; AMP's hard limit is 65,535.
PAGE_BYTES = 60_000
#: Op pages on the wire at once, per peer.
MAX_IN_FLIGHT = 4


def pages(lines: Iterator[bytes], limit: int = PAGE_BYTES) -> Iterator[list[bytes]]:
    """Group lines so each group joined with newlines stays within ``limit``."""
    page: list[bytes] = []
    size = 0
    for line in lines:
        if page and size + len(line) + 1 > limit:
            yield page
            page, size = [], 0
        page.append(line)
        size += len(line) + 1
    if page:
        yield page


class OutboundStream:
    """Sends one peer what it lacks. ``send_ops`` and ``send_snapshot_page``
    return Deferreds firing with the peer's version vector afterwards."""

    def __init__(
        self,
        node: Node,
        peer_id: str,
        peer_vv: VersionVector,
        send_ops: Callable[[bytes], defer.Deferred],
        send_snapshot_page: Callable[..., defer.Deferred],
        on_broken: Callable[[Any], None],
    ) -> None:
        self.node = node
        self.peer_id = peer_id
        self.acked: VersionVector = dict(peer_vv)
        self.sent: VersionVector = dict(peer_vv)
        self._send_ops = send_ops
        self._send_snapshot_page = send_snapshot_page
        self._on_broken = on_broken
        self._in_flight = 0
        self._snapshotting = False
        #: Origins whose next op the peer refused (clock skew): they wait for
        #: the next Sync, the other origins go on.
        self._held: set[str] = set()
        self._snapshot_held = False  # the peer refused our snapshot: same
        self._stopped = False
        self.node.peer_holds(peer_id, dict(self.acked))

    @property
    def behind(self) -> int:
        """Durable ops of ours the peer has not confirmed."""
        return sum(
            max(0, seq - self.acked.get(origin, 0))
            for origin, seq in self.node.durable_vv.items()
        )

    def stop(self) -> None:
        self._stopped = True

    def peer_has(self, vv: VersionVector) -> None:
        """The peer showed it holds ``vv`` (its ack, Sync, or ops it sent us)."""
        self.acked = merged(self.acked, vv)
        self.sent = merged(self.sent, self.acked)
        self.node.peer_holds(self.peer_id, dict(self.acked))

    def resync(self, vv: VersionVector) -> None:
        """A periodic Sync: rewind to what the peer really has and resend."""
        self.peer_has(vv)
        if self._in_flight == 0 and not self._snapshotting:
            # Anything sent but not acked goes again.
            self.sent = dict(self.acked)
        self._held.clear()
        self._snapshot_held = False
        self.pump()

    def pump(self) -> None:
        """Send whatever durable ops the peer lacks, a page at a time."""
        while (
            not (self._stopped or self._snapshotting)
            and self._in_flight < MAX_IN_FLIGHT
        ):
            if self.node.oplog.lacks_history(self.sent):
                if not self._snapshot_held:
                    self._start_snapshot()
                return
            page = self._next_page()
            if not page:
                return
            self._in_flight += 1
            top = {op.origin: op.seq for op in page}  # seqs rise per origin
            d = self._send_ops(b"\n".join(op.line for op in page))
            d.addCallbacks(self._ops_acked, self._failed, (top,))

    def _next_page(self) -> list[Op]:
        page: list[Op] = []
        size = 0
        upto = self.node.durable_vv
        if self._held:
            upto = {o: s for o, s in upto.items() if o not in self._held}
        for op in self.node.oplog.missing(self.sent, upto):
            if page and size + len(op.line) + 1 > PAGE_BYTES:
                break
            page.append(op)
            size += len(op.line) + 1
            self.sent[op.origin] = op.seq
        return page

    def _ops_acked(self, response: dict, top: VersionVector) -> None:
        self._in_flight -= 1
        self.peer_has(response["vv"])
        # Origins whose ops in this page the peer did not keep: it refused
        # one, or dropped them as a gap (it lacked an earlier op, say from a
        # page another peer had not finished sending it yet).
        short = [o for o, seq in top.items() if self.acked.get(o, 0) < seq]
        if response["refused"]:
            log.warn(
                "peer {peer} refused ops: {reason}; retrying at the next sync",
                peer=self.peer_id,
                reason=response["refused"],
            )
            self._held.update(short)
        else:
            for origin in short:
                self.sent[origin] = min(self.sent[origin], self.acked.get(origin, 0))
        self.pump()

    def _failed(self, failure) -> None:
        self._in_flight -= 1
        if not self._stopped:
            self._on_broken(failure)

    # -- snapshots -------------------------------------------------------------

    def _start_snapshot(self) -> None:
        if self.node.journal.compacting:
            # The snapshot on disk is about to be replaced by a newer one
            # that covers our log's base; the next durable batch retries.
            return
        self._snapshotting = True
        d = self.node.journal.read_snapshot()
        d.addCallback(self._send_snapshot)
        d.addCallbacks(self._snapshot_done, self._snapshot_failed)

    @defer.inlineCallbacks
    def _send_snapshot(self, snapshot):
        vv, records = snapshot
        log.info(
            "sending peer {peer} a snapshot of {records} records at {vv}",
            peer=self.peer_id,
            records=len(records),
            vv=vv,
        )
        all_pages = list(pages(iter(records))) or [[]]
        response = None
        for index, page in enumerate(all_pages):
            if self._stopped:
                return None
            last = index == len(all_pages) - 1
            response = yield self._send_snapshot_page(
                records=b"\n".join(page), last=last, vv=vv
            )
        return (vv, response)

    def _snapshot_done(self, result) -> None:
        self._snapshotting = False
        if result is None:
            return
        vv, response = result
        self.peer_has(merged(vv, response["vv"]))
        self.pump()

    def _snapshot_failed(self, failure) -> None:
        self._snapshotting = False
        if self._stopped:
            return
        if failure.check(ClockSkew, JournalUnavailable):
            log.warn(
                "peer {peer} refused our snapshot: {reason}; retrying at the next sync",
                peer=self.peer_id,
                reason=failure.getErrorMessage(),
            )
            self._snapshot_held = True
            return
        self._on_broken(failure)
