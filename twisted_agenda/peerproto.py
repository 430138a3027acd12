"""The peer protocol: AMP commands between nodes, on ``--sync-port``.

Typed commands only (no pickling, nothing that runs data). Every command
lists the errors it may raise, so a refused request is answered, not a dropped
connection. The reference is docs/peer-protocol.md.

- ``Hello`` opens a session: protocol version, cluster name, node id, version
  vector. Refused (with a reason starting with a code word: ``version:``,
  ``cluster:``, ``invalid:``, ``self:``, ``duplicate:``, ``shutdown:``) for an
  unknown protocol version, another cluster, a malformed node id or vector,
  our own id, a node already connected, or a node shutting down. A connection
  that has not completed ``Hello`` within ``HELLO_TIMEOUT`` seconds is closed.
- ``PushOps`` carries a page of op lines; the answer is the receiver's durable
  version vector after applying them (and why it refused some, if it did), or
  ``UNAVAILABLE`` when the receiver's journal failed.
- ``Sync`` swaps version vectors on a timer: anti-entropy and heartbeat.
- ``SnapshotPage`` carries a page of snapshot records when the sender's log
  no longer reaches back far enough (refused with ``UNAVAILABLE`` or
  ``CLOCK_SKEW``; the sender tries again after the next ``Sync``).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import error, protocol
from twisted.logger import Logger
from twisted.protocols import amp

from twisted_agenda.antientropy import OutboundStream
from twisted_agenda.crdt import BadOp, Op, Record
from twisted_agenda.datadir import NODE_ID
from twisted_agenda.hlc import ClockSkew
from twisted_agenda.journal import JournalUnavailable

log = Logger()

PROTOCOL_VERSION = 1

#: Seconds a new peer connection may take to complete ``Hello``.
HELLO_TIMEOUT = 10.0


def valid_node_id(node_id: object) -> bool:
    """The ``--node-id`` rule, for ids that come from the wire."""
    return isinstance(node_id, str) and NODE_ID.fullmatch(node_id) is not None


def parse_vv(data: bytes) -> dict:
    """A version vector from JSON; ValueError unless ``{node id: int >= 0}``."""
    vv = json.loads(data)
    if not isinstance(vv, dict) or not all(
        valid_node_id(o) and type(s) is int and s >= 0 for o, s in vv.items()
    ):
        raise ValueError("not a version vector of node ids to non-negative ints")
    return vv


class VersionVectorArgument(amp.Argument):
    """A ``{origin: seq}`` map, as compact JSON."""

    def toString(self, inObject: dict) -> bytes:
        return json.dumps(inObject, separators=(",", ":")).encode()

    def fromString(self, inString: bytes) -> dict:
        return parse_vv(inString)


class InvalidVector:
    """What ``HelloVersionVector`` hands the responder for a malformed vector."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class HelloVersionVector(VersionVectorArgument):
    """Like ``VersionVectorArgument``, but a malformed vector reaches the
    ``Hello`` responder (as ``InvalidVector``), which refuses it with a reason
    instead of an anonymous parse error."""

    def fromString(self, inString: bytes) -> dict | InvalidVector:
        try:
            return parse_vv(inString)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            return InvalidVector(str(e))


class HandshakeRefused(Exception):
    """Hello refused; the message says why."""


class NotIntroduced(Exception):
    """A command before a successful Hello."""


class BadPayload(Exception):
    """Ops or records that do not parse."""


_ERRORS = {NotIntroduced: b"NOT_INTRODUCED", BadPayload: b"BAD_PAYLOAD"}
#: Commands that write to the receiver's journal may find it failed.
_WRITE_ERRORS = {**_ERRORS, JournalUnavailable: b"UNAVAILABLE"}
#: A snapshot is refused whole if a record is stamped too far ahead.
_SNAPSHOT_ERRORS = {**_WRITE_ERRORS, ClockSkew: b"CLOCK_SKEW"}


class Hello(amp.Command):
    arguments = [
        (b"protocol", amp.Integer()),
        (b"cluster", amp.Unicode()),
        (b"node", amp.Unicode()),
        (b"vv", HelloVersionVector()),
    ]
    response = [(b"node", amp.Unicode()), (b"vv", VersionVectorArgument())]
    errors = {HandshakeRefused: b"REFUSED"}


class PushOps(amp.Command):
    arguments = [(b"ops", amp.String())]
    response = [(b"vv", VersionVectorArgument()), (b"refused", amp.Unicode())]
    errors = _WRITE_ERRORS


class NodeIdsArgument(amp.Argument):
    """A list of node ids, as compact JSON; ValueError unless all are valid."""

    def toString(self, inObject: list[str]) -> bytes:
        return json.dumps(sorted(inObject), separators=(",", ":")).encode()

    def fromString(self, inString: bytes) -> frozenset[str]:
        ids = json.loads(inString)
        if not isinstance(ids, list) or not all(valid_node_id(i) for i in ids):
            raise ValueError("not a list of node ids")
        return frozenset(ids)


class Sync(amp.Command):
    # ``peers``: the nodes the sender hears from directly (tombstone GC);
    # left out while some node it is configured with has not answered yet.
    arguments = [
        (b"vv", VersionVectorArgument()),
        (b"peers", NodeIdsArgument(optional=True)),
    ]
    response = [
        (b"vv", VersionVectorArgument()),
        (b"peers", NodeIdsArgument(optional=True)),
    ]
    errors = _ERRORS


class SnapshotPage(amp.Command):
    arguments = [
        (b"records", amp.String()),
        (b"last", amp.Boolean()),
        (b"vv", VersionVectorArgument()),
    ]
    response = [(b"vv", VersionVectorArgument())]
    errors = _SNAPSHOT_ERRORS


class PeerProtocol(amp.AMP):
    """One session with one peer, in either direction.

    ``hub`` (the Cluster) owns the session registry; this class only speaks
    AMP and hands work to the node and to the outbound stream.
    """

    def __init__(self, hub: Any, dialed: bool) -> None:
        super().__init__()
        self.hub = hub
        self.dialed = dialed
        self.peer_id: str | None = None
        self.stream: OutboundStream | None = None
        self.last_seen: float | None = None
        self._snapshot_records: list[tuple[str, Record]] = []
        self._greeted_text = False
        self._hello_timer: Any = None
        self._first_pump: Any = None

    # -- life cycle ------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self.hub.opened(self)
        timeout = getattr(self.hub, "hello_timeout", HELLO_TIMEOUT)
        self._hello_timer = self.hub.clock.callLater(timeout, self._hello_overdue)
        if self.dialed:
            node = self.hub.node
            d = self.callRemote(
                Hello,
                protocol=PROTOCOL_VERSION,
                cluster=self.hub.cluster,
                node=node.node_id,
                vv=dict(node.durable_vv),
            )
            d.addCallbacks(self._welcomed, self._refused)

    def _hello_overdue(self) -> None:
        self._hello_timer = None
        peer = self.transport.getPeer()
        log.warn(
            "closing peer connection {direction} {host}:{port}: no Hello within"
            " {timeout}s",
            direction="to" if self.dialed else "from",
            host=getattr(peer, "host", "?"),
            port=getattr(peer, "port", "?"),
            timeout=getattr(self.hub, "hello_timeout", HELLO_TIMEOUT),
        )
        self.transport.abortConnection()

    def _cancel_timers(self) -> None:
        for name in ("_hello_timer", "_first_pump"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)

    def _welcomed(self, response: dict) -> None:
        peer_id = response["node"]
        if not valid_node_id(peer_id):
            reason = f"invalid: the peer's node id {peer_id!r} is not a valid id"
        else:
            reason = self.hub.admit(self, peer_id)
        if reason:
            log.warn(
                "closing session to {address}: {reason}",
                address=self.factory.address,
                reason=reason,
            )
            self.transport.loseConnection()
            return
        self._start(peer_id, response["vv"])

    def _refused(self, failure) -> None:
        if failure.check(HandshakeRefused):
            self.hub.dial_refused(self, str(failure.value))
        elif not failure.check(error.ConnectionClosed):
            log.warn(
                "peer at {address} did not answer Hello: {error}",
                address=self.factory.address,
                error=failure.getErrorMessage(),
            )
        self.transport.loseConnection()

    def _start(self, peer_id: str, peer_vv: dict) -> None:
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None
        self.peer_id = peer_id
        self.stream = OutboundStream(
            self.hub.node,
            peer_id,
            peer_vv,
            send_ops=self._send_ops,
            send_snapshot_page=lambda **kw: self.callRemote(SnapshotPage, **kw),
            on_broken=self._broken,
        )
        log.info(
            "session with {peer} open ({direction}); it is {behind} ops behind",
            peer=peer_id,
            direction="dialed" if self.dialed else "accepted",
            behind=self.stream.behind,
        )
        self.hub.started(self)
        # After this turn: a Hello's answer must reach the peer before ops.
        self._first_pump = self.hub.clock.callLater(0, self._pump_first)

    def _pump_first(self) -> None:
        self._first_pump = None
        if self.stream is not None:
            self.stream.pump()

    def _send_ops(self, ops: bytes):
        d = self.callRemote(PushOps, ops=ops)
        return d.addErrback(self._ops_unavailable)

    def _ops_unavailable(self, failure) -> dict:
        """The peer's journal failed: a refusal, so the stream holds its pages
        until the next Sync instead of dropping the session."""
        failure.trap(JournalUnavailable)
        return {
            "vv": {},
            "refused": f"unavailable: its journal failed ({failure.getErrorMessage()})",
        }

    def _broken(self, failure) -> None:
        log.warn(
            "session with {peer} failed: {error}; reconnecting",
            peer=self.peer_id,
            error=failure.getErrorMessage(),
        )
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        self._cancel_timers()
        if self.stream is not None:
            self.stream.stop()
        self.hub.forget(self)
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        if (
            self.peer_id is None
            and not self._greeted_text
            and data[:1]
            not in (
                b"\x00",
                b"",
            )
        ):
            # Every AMP box starts with a zero byte; this is a person (or a
            # client) who dialed the wrong port: tell them, then hang up.
            self._greeted_text = True
            self.transport.write(
                b"ERR bad-request this is an agenda node's peer (AMP) port; "
                b"clients use the node's --port\r\n"
            )
            self.transport.loseConnection()
            return
        super().dataReceived(data)

    def ampBoxReceived(self, box) -> None:
        self.last_seen = self.hub.clock.seconds()
        super().ampBoxReceived(box)

    def sync(self):
        """One anti-entropy round; fires with the peer's answer."""
        node = self.hub.node
        d = self.callRemote(Sync, vv=dict(node.durable_vv), peers=node.members())
        return d.addCallback(self._synced)

    def _synced(self, response: dict) -> None:
        self.hub.node.peer_knows(self.peer_id, response.get("peers"))
        self.stream.resync(response["vv"])

    # -- responders ------------------------------------------------------------

    @Hello.responder
    def hello(self, protocol: int, cluster: str, node: str, vv) -> dict:
        if protocol != PROTOCOL_VERSION:
            reason = (
                f"version: unknown protocol version {protocol}"
                f" (we speak {PROTOCOL_VERSION})"
            )
        elif cluster != self.hub.cluster:
            reason = (
                f"cluster: peer is in cluster {cluster!r}, we are in"
                f" {self.hub.cluster!r}"
            )
        elif not valid_node_id(node):
            reason = (
                f"invalid: node id {node!r} is not 1-64 letters, digits, '.', '_'"
                " or '-' starting with a letter or digit"
            )
        elif isinstance(vv, InvalidVector):
            reason = f"invalid: bad version vector ({vv.reason})"
        elif self.dialed:
            reason = "invalid: Hello goes from the dialing node to the listener"
        elif self.stream is not None:
            reason = "invalid: this connection already completed Hello"
        else:
            reason = self.hub.admit(self, node)
        if reason:
            log.warn("refused peer {peer!r}: {reason}", peer=node, reason=reason)
            raise HandshakeRefused(reason)
        self._start(node, vv)
        return {"node": self.hub.node.node_id, "vv": dict(self.hub.node.durable_vv)}

    def _introduced(self) -> OutboundStream:
        if self.stream is None:
            raise NotIntroduced("send Hello first")
        return self.stream

    @PushOps.responder
    def push_ops(self, ops: bytes):
        stream = self._introduced()
        try:
            batch = [Op.decode(line) for line in ops.split(b"\n") if line]
        except BadOp as e:
            raise BadPayload(str(e)) from None
        # The sender holds these: never echo them back.
        have: dict[str, int] = {}
        for op in batch:
            have[op.origin] = max(have.get(op.origin, 0), op.seq)
        stream.peer_has(have)
        d, refused = self.hub.node.receive(batch)
        return d.addCallback(lambda vv: {"vv": vv, "refused": refused})

    @Sync.responder
    def sync_responder(self, vv: dict, peers: frozenset[str] | None = None) -> dict:
        stream = self._introduced()
        node = self.hub.node
        node.peer_knows(self.peer_id, peers)
        stream.resync(vv)
        return {"vv": dict(node.durable_vv), "peers": node.members()}

    @SnapshotPage.responder
    def snapshot_page(self, records: bytes, last: bool, vv: dict):
        self._introduced()
        try:
            page = [
                Record.from_json(json.loads(line))
                for line in records.split(b"\n")
                if line
            ]
        except (BadOp, ValueError) as e:
            self._snapshot_records = []
            raise BadPayload(str(e)) from None
        self._snapshot_records.extend(page)
        if not last:
            return {"vv": dict(self.hub.node.durable_vv)}
        received, self._snapshot_records = self._snapshot_records, []
        d = self.hub.node.merge_snapshot(vv, received)
        return d.addCallback(lambda vv: {"vv": vv})


class PeerServerFactory(protocol.Factory):
    """Accepts sessions on ``--sync-port``."""

    noisy = False

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def buildProtocol(self, addr) -> PeerProtocol:
        return PeerProtocol(self.hub, dialed=False)


class PeerClientFactory(protocol.ReconnectingClientFactory):
    """Dials one ``--peers`` address and keeps dialing, with capped backoff.

    States: ``connecting`` (first attempt), ``connected`` (our session is
    up), ``retrying`` (waiting for, or making, the next attempt),
    ``standby`` (another live session with the same node, one it dialed or
    one we dialed at another address, carries the traffic: no dialing until
    it ends), ``self`` (the address is this
    node: never dialed again) and ``stopped`` (the node is shutting down).

    The delay resets only after a successful handshake (not on a mere TCP
    connect), so a peer that accepts and then refuses is not hammered. The
    Cluster only puts a dialer in standby while a live session with its node
    exists, and resumes it the moment that session ends.
    """

    maxDelay = 30.0
    initialDelay = 0.5
    noisy = False

    def __init__(self, hub: Any, address: tuple[str, int]) -> None:
        self.hub = hub
        self.address = address
        self.state = "connecting"
        self.peer_id: str | None = None
        self.session: PeerProtocol | None = None
        self.stopped = False

    def dial(self, reactor: Any) -> None:
        """The first attempt; the connector is kept for every later one."""
        host, port = self.address
        self.connector = reactor.connectTCP(host, port, self, timeout=10)

    def buildProtocol(self, addr) -> PeerProtocol:
        p = PeerProtocol(self.hub, dialed=True)
        p.factory = self
        self.session = p
        return p

    @property
    def waiting(self) -> bool:
        """Between attempts: a retry is scheduled, nothing is connecting."""
        return self._callID is not None and self._callID.active()

    def connected(self, session: PeerProtocol) -> None:
        if self.stopped:
            return
        self._cancel_retry()
        self.resetDelay()
        self.state = "connected"
        self.peer_id = session.peer_id

    def standby(self, peer_id: str) -> None:
        """A session with ``peer_id`` carries the traffic: stop dialing."""
        self.peer_id = peer_id
        if self.stopped:
            return
        self.state = "standby"
        self.continueTrying = 0
        self._cancel_retry()

    def resume(self) -> None:
        """The session we stood by for is gone: dial again, soon."""
        if self.stopped or self.state != "standby":
            return
        self.state = "retrying"
        self.resetDelay()
        self.retry()

    def dial_soon(self) -> None:
        """Bring the next scheduled attempt forward to now (backoff kept)."""
        if not self.stopped and self.waiting:
            self._callID.reset(0)

    def stop(self) -> None:
        """Shutting down: no more attempts, ever; abandon one in progress."""
        self.stopped = True
        self.state = "stopped"
        self.stopTrying()
        if self.connector is not None:
            self.connector.disconnect()

    def is_self(self, node_id: str) -> None:
        """The address is this node's own: never dial it again."""
        self.peer_id = node_id
        self.state = "self"
        self.continueTrying = 0
        self._cancel_retry()

    def _cancel_retry(self) -> None:
        if self._callID is not None and self._callID.active():
            self._callID.cancel()
        self._callID = None

    def retry(self, connector=None) -> None:
        if self.stopped or not self.continueTrying:
            return
        if self.peer_id is not None and self.hub.carried(self.peer_id, self):
            # Another session with that node is up: no need to dial.
            self.standby(self.peer_id)
            return
        self.state = "retrying"
        if connector is None and self.connector is None:
            return  # never dialed (sessions joined by hand in tests)
        super().retry(connector)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.session = None
        super().clientConnectionFailed(connector, reason)

    def clientConnectionLost(self, connector, reason) -> None:
        self.session = None
        super().clientConnectionLost(connector, reason)
