"""The node's peers: who is connected, who is dialed, and the sync timer.

One ``Cluster`` per node. It admits sessions (one per peer node: when two
nodes dial each other at once, both keep the session dialed by the smaller
node id and close the other), dials every ``--peers`` address through a
``PeerClientFactory``, pushes new durable ops to every session, and runs an
anti-entropy ``Sync`` with each peer every ``sync_interval`` seconds, which
doubles as the heartbeat: a peer that does not answer within three intervals
is disconnected and redialed.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from twisted_agenda.peerproto import PeerClientFactory, PeerProtocol

log = Logger()

DEFAULT_CLUSTER = "agenda"


class Cluster(service.Service):
    def __init__(
        self,
        node: Any,
        addresses: list[tuple[str, int]],
        cluster: str = DEFAULT_CLUSTER,
        sync_interval: float = 5.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.node = node
        self.cluster = cluster
        self.sync_interval = sync_interval
        self.clock = reactor
        self._reactor = reactor
        self.sessions: dict[str, PeerProtocol] = {}
        #: When we last heard from peers that are gone (STATUS).
        self.last_seen: dict[str, float | None] = {}
        self.dialers = [PeerClientFactory(self, address) for address in addresses]
        for dialer in self.dialers:
            dialer.clock = reactor
        node.expected_peers = len(addresses)
        node.on_durable.add(self.pump_all)
        self._timer = task.LoopingCall(self.sync_all)
        self._timer.clock = reactor

    # -- service ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        for dialer in self.dialers:
            host, port = dialer.address
            self._reactor.connectTCP(host, port, dialer, timeout=10)
        self._timer.start(self.sync_interval, now=False)

    def stopService(self):
        super().stopService()
        if self._timer.running:
            self._timer.stop()
        for dialer in self.dialers:
            dialer.stopTrying()
            if dialer.connector is not None:
                dialer.connector.disconnect()
        for session in list(self.sessions.values()):
            session.transport.loseConnection()
        return defer.succeed(None)

    # -- sessions --------------------------------------------------------------

    def admit(self, session: PeerProtocol, peer_id: str) -> str:
        """Register a handshaken session; return why not ("" if admitted)."""
        me = self.node.node_id
        if peer_id == me:
            return "self: that is this node's own id (a node dialed itself)"
        existing = self.sessions.get(peer_id)
        if existing is not None and existing is not session:
            if not self._prefer(session, existing, peer_id):
                if session.dialed:
                    session.factory.standby(peer_id)
                return f"duplicate: node {peer_id} is already connected"
            log.info("two sessions with {peer}; keeping one", peer=peer_id)
            if existing.dialed:
                existing.factory.standby(peer_id)
            existing.transport.loseConnection()
        self.sessions[peer_id] = session
        return ""

    def _prefer(self, new: PeerProtocol, old: PeerProtocol, peer_id: str) -> bool:
        """Both ends keep the session dialed by the smaller node id."""
        me = self.node.node_id

        def dialer(session: PeerProtocol) -> str:
            return me if session.dialed else peer_id

        if dialer(new) == dialer(old):
            return False
        return dialer(new) == min(me, peer_id)

    def started(self, session: PeerProtocol) -> None:
        if session.dialed:
            session.factory.connected(session)

    def dial_refused(self, session: PeerProtocol, reason: str) -> None:
        log.warn(
            "peer at {address} refused us: {reason}",
            address=session.factory.address,
            reason=reason,
        )
        code = reason.partition(":")[0]
        if code == "duplicate":
            session.factory.standby(session.factory.peer_id)
        elif code == "self":
            session.factory.stopTrying()
            session.factory.state = "self"

    def forget(self, session: PeerProtocol) -> None:
        peer_id = session.peer_id
        if peer_id is None or self.sessions.get(peer_id) is not session:
            return
        del self.sessions[peer_id]
        self.last_seen[peer_id] = session.last_seen
        log.info("session with {peer} closed", peer=peer_id)
        for dialer in self.dialers:
            if dialer.state == "standby" and dialer.peer_id in (peer_id, None):
                dialer.resume()

    # -- replication -----------------------------------------------------------

    def pump_all(self) -> None:
        for session in list(self.sessions.values()):
            if session.stream is not None:
                session.stream.pump()

    def sync_all(self) -> None:
        for session in list(self.sessions.values()):
            if session.stream is None:
                continue
            d = session.sync()
            d.addTimeout(3 * self.sync_interval, self._reactor)
            d.addErrback(self._sync_failed, session)

    def _sync_failed(self, failure, session: PeerProtocol) -> None:
        log.warn(
            "peer {peer} did not answer a sync: {error}; disconnecting",
            peer=session.peer_id,
            error=failure.getErrorMessage(),
        )
        session.transport.abortConnection()

    # -- STATUS ----------------------------------------------------------------

    def status_lines(self) -> list[str]:
        now = self.clock.seconds()
        lines = []
        shown = set()
        for dialer in self.dialers:
            session = self.sessions.get(dialer.peer_id) if dialer.peer_id else None
            shown.add(dialer.peer_id)
            lines.append(
                self._peer_line(
                    f"{dialer.address[0]}:{dialer.address[1]}",
                    dialer.peer_id,
                    session,
                    dialer.state,
                    now,
                )
            )
        for peer_id, session in self.sessions.items():
            if peer_id not in shown:
                peer = session.transport.getPeer()
                lines.append(
                    self._peer_line(
                        f"{peer.host}:{peer.port}", peer_id, session, "connected", now
                    )
                )
        return lines

    def _peer_line(self, address, peer_id, session, state, now) -> str:
        if session is not None:
            state = "connected"
        parts = [f"peer={address}", f"node={peer_id or '-'}", f"state={state}"]
        if session is not None and session.stream is not None:
            parts.append(f"behind={session.stream.behind}")
        seen = session.last_seen if session else self.last_seen.get(peer_id)
        if seen is not None:
            parts.append(f"last_seen={now - seen:.1f}s")
        return " ".join(parts)
