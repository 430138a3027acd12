"""The peer protocol: AMP commands between nodes, on ``--sync-port``.

Typed commands only (no pickling, nothing that runs data). Every command
lists the errors it may raise, so a refused request is answered, not a dropped
connection. The reference is docs/peer-protocol.md.

- ``Hello`` opens a session: protocol version, cluster name, node id, version
  vector. Refused for our own id, a node already connected, another cluster or
  an unknown protocol version.
- ``PushOps`` carries a page of op lines; the answer is the receiver's durable
  version vector after applying them (and why it refused some, if it did).
- ``Sync`` swaps version vectors on a timer: anti-entropy and heartbeat.
- ``SnapshotPage`` carries a page of snapshot records when the sender's log
  no longer reaches back far enough.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols import amp

from twisted_agenda.antientropy import OutboundStream
from twisted_agenda.crdt import BadOp, Op, Record

log = Logger()

PROTOCOL_VERSION = 1


class VersionVectorArgument(amp.Argument):
    """A ``{origin: seq}`` map, as compact JSON."""

    def toString(self, inObject: dict) -> bytes:
        return json.dumps(inObject, separators=(",", ":")).encode()

    def fromString(self, inString: bytes) -> dict:
        vv = json.loads(inString)
        if not isinstance(vv, dict) or not all(
            isinstance(o, str) and type(s) is int and s >= 0 for o, s in vv.items()
        ):
            raise ValueError("not a version vector")
        return vv


class HandshakeRefused(Exception):
    """Hello refused; the message says why."""


class NotIntroduced(Exception):
    """A command before a successful Hello."""


class BadPayload(Exception):
    """Ops or records that do not parse."""


_ERRORS = {NotIntroduced: b"NOT_INTRODUCED", BadPayload: b"BAD_PAYLOAD"}


class Hello(amp.Command):
    arguments = [
        (b"protocol", amp.Integer()),
        (b"cluster", amp.Unicode()),
        (b"node", amp.Unicode()),
        (b"vv", VersionVectorArgument()),
    ]
    response = [(b"node", amp.Unicode()), (b"vv", VersionVectorArgument())]
    errors = {HandshakeRefused: b"REFUSED"}


class PushOps(amp.Command):
    arguments = [(b"ops", amp.String())]
    response = [(b"vv", VersionVectorArgument()), (b"refused", amp.Unicode())]
    errors = _ERRORS


class Sync(amp.Command):
    arguments = [(b"vv", VersionVectorArgument())]
    response = [(b"vv", VersionVectorArgument())]
    errors = _ERRORS


class SnapshotPage(amp.Command):
    arguments = [
        (b"records", amp.String()),
        (b"last", amp.Boolean()),
        (b"vv", VersionVectorArgument()),
    ]
    response = [(b"vv", VersionVectorArgument())]
    errors = _ERRORS


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

    # -- life cycle ------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
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

    def _welcomed(self, response: dict) -> None:
        reason = self.hub.admit(self, response["node"])
        if reason:
            log.warn(
                "closing session to {peer}: {reason}",
                peer=response["node"],
                reason=reason,
            )
            self.transport.loseConnection()
            return
        self._start(response["node"], response["vv"])

    def _refused(self, failure) -> None:
        if failure.check(HandshakeRefused):
            self.hub.dial_refused(self, str(failure.value))
        self.transport.loseConnection()

    def _start(self, peer_id: str, peer_vv: dict) -> None:
        self.peer_id = peer_id
        self.stream = OutboundStream(
            self.hub.node,
            peer_id,
            peer_vv,
            send_ops=lambda ops: self.callRemote(PushOps, ops=ops),
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
        self.hub.clock.callLater(0, self.stream.pump)

    def _broken(self, failure) -> None:
        log.warn(
            "session with {peer} failed: {error}; reconnecting",
            peer=self.peer_id,
            error=failure.getErrorMessage(),
        )
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
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
        d = self.callRemote(Sync, vv=dict(self.hub.node.durable_vv))
        return d.addCallback(lambda response: self.stream.resync(response["vv"]))

    # -- responders ------------------------------------------------------------

    @Hello.responder
    def hello(self, protocol: int, cluster: str, node: str, vv: dict) -> dict:
        if protocol != PROTOCOL_VERSION:
            reason = (
                f"unknown protocol version {protocol} (we speak {PROTOCOL_VERSION})"
            )
        elif cluster != self.hub.cluster:
            reason = f"peer is in cluster {cluster!r}, we are in {self.hub.cluster!r}"
        else:
            reason = self.hub.admit(self, node)
        if reason:
            log.warn("refused peer {peer}: {reason}", peer=node, reason=reason)
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
    def sync_responder(self, vv: dict) -> dict:
        self._introduced().resync(vv)
        return {"vv": dict(self.hub.node.durable_vv)}

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

    The delay resets only after a successful handshake (not on a mere TCP
    connect), so a peer that accepts and then refuses is not hammered. While
    another session with the same node already carries the traffic, dialing
    pauses until that session ends.
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

    def buildProtocol(self, addr) -> PeerProtocol:
        p = PeerProtocol(self.hub, dialed=True)
        p.factory = self
        self.session = p
        return p

    def connected(self, session: PeerProtocol) -> None:
        self.resetDelay()
        self.state = "connected"
        self.peer_id = session.peer_id

    def standby(self, peer_id: str) -> None:
        """Another session with ``peer_id`` carries the traffic: stop dialing."""
        self.peer_id = peer_id
        self.state = "standby"
        self.stopTrying()

    def resume(self) -> None:
        if self.state == "standby" and self.connector is not None:
            self.state = "retrying"
            self.resetDelay()
            self.retry()

    def clientConnectionFailed(self, connector, reason) -> None:
        if self.state != "standby":
            self.state = "retrying"
        super().clientConnectionFailed(connector, reason)

    def clientConnectionLost(self, connector, reason) -> None:
        self.session = None
        if self.state != "standby":
            self.state = "retrying"
        super().clientConnectionLost(connector, reason)
