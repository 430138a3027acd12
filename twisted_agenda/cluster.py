"""The node's peers: who is connected, who is dialed, and the sync timer.

One ``Cluster`` per node. It admits sessions (one per peer node: when two
nodes dial each other at once, both keep the session dialed by the smaller
node id and close the other), dials every ``--peers`` address through a
``PeerClientFactory``, pushes new durable ops to every session, and runs an
anti-entropy ``Sync`` with each peer every ``sync_interval`` seconds, which
doubles as the heartbeat: a peer that does not answer within three intervals
is disconnected and redialed.

A dialer is always in one of three conditions: its own session is up, a
session with the same node that this node accepted is up (the dialer stands
by, and resumes the moment that session ends), or it is retrying with capped
backoff. A peer that refuses us as a duplicate while we hold no session with
it holds a stale one (a half-open connection, or we restarted): we keep
retrying, and its heartbeat drops the stale session within three intervals.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.application import service
from twisted.internet import defer, error, task
from twisted.logger import Logger

from twisted_agenda.peerproto import (
    HELLO_TIMEOUT,
    PeerClientFactory,
    PeerProtocol,
    valid_node_id,
)
from twisted_agenda.quoting import quote

log = Logger()

DEFAULT_CLUSTER = "agenda"

#: The ``duplicate:`` refusal names both ends, so the dialer learns which
#: node is behind the address it dialed.
_DUPLICATE_REASON = "duplicate: {listener} already has a session with {dialer}"
_DUPLICATE = re.compile(
    r"duplicate: (?P<listener>\S+) already has a session with (?P<dialer>\S+)"
)


class Cluster(service.Service):
    #: Seconds a peer connection may take to complete Hello before it is closed.
    hello_timeout = HELLO_TIMEOUT

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
        #: Handshaken sessions, one per peer node id.
        self.sessions: dict[str, PeerProtocol] = {}
        #: Every open peer connection, handshaken or not.
        self.connections: set[PeerProtocol] = set()
        #: When we last heard from peers that are gone (STATUS).
        self.last_seen: dict[str, float | None] = {}
        #: The last version vector we knew of peers that are gone (STATUS).
        self.last_vv: dict[str, dict[str, int]] = {}
        self._stopping = False
        self.dialers = [PeerClientFactory(self, address) for address in addresses]
        for dialer in self.dialers:
            dialer.clock = reactor
        node.unidentified_peers = self._unidentified_peers
        node.on_durable.add(self.pump_all)
        self._timer = task.LoopingCall(self.sync_all)
        self._timer.clock = reactor

    # -- service ---------------------------------------------------------------

    def _unidentified_peers(self) -> int:
        """``--peers`` addresses whose node we have never heard from."""
        return sum(d.peer_id is None and d.state != "self" for d in self.dialers)

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        for dialer in self.dialers:
            dialer.dial(self._reactor)
        self._timer.start(self.sync_interval, now=False)

    def stopService(self):
        super().stopService()
        # First, so that sessions closing below resume nothing.
        self._stopping = True
        if self._timer.running:
            self._timer.stop()
        for dialer in self.dialers:
            dialer.stop()
        for connection in list(self.connections):
            connection.transport.loseConnection()
        return defer.succeed(None)

    # -- sessions --------------------------------------------------------------

    def opened(self, connection: PeerProtocol) -> None:
        self.connections.add(connection)
        if self._stopping:
            connection.transport.loseConnection()

    def carried(self, peer_id: str, dialer: PeerClientFactory) -> bool:
        """Is a session with ``peer_id`` up that is not ``dialer``'s own?"""
        session = self.sessions.get(peer_id)
        return session is not None and session.factory is not dialer

    def admit(self, session: PeerProtocol, peer_id: str) -> str:
        """Register a handshaken session; return why not ("" if admitted)."""
        me = self.node.node_id
        if self._stopping:
            return "shutdown: this node is stopping"
        if peer_id == me:
            if session.dialed:
                session.factory.is_self(me)
            return "self: that is this node's own id (a node dialed itself)"
        existing = self.sessions.get(peer_id)
        if existing is not None and existing is not session:
            if not self._prefer(session, existing, peer_id):
                if session.dialed:
                    session.factory.standby(peer_id)
                return _DUPLICATE_REASON.format(listener=me, dialer=peer_id)
            log.info("two sessions with {peer}; keeping one", peer=peer_id)
            if existing.dialed:
                existing.factory.standby(peer_id)
            existing.transport.loseConnection()
        self.sessions[peer_id] = session
        for dialer in self.dialers:
            if dialer is session.factory:
                continue
            if dialer.peer_id == peer_id and dialer.waiting:
                # A session with that node is up: no need to dial it.
                dialer.standby(peer_id)
            elif dialer.peer_id is None:
                # Perhaps that node is behind this address too: find out now
                # (the attempt is only brought forward, its backoff kept).
                dialer.dial_soon()
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
        dialer = session.factory
        log.warn(
            "peer at {address} refused us: {reason}",
            address=dialer.address,
            reason=reason,
        )
        code = reason.partition(":")[0]
        if code == "duplicate":
            said = _DUPLICATE.fullmatch(reason)
            if (
                said
                and said["dialer"] == self.node.node_id
                and valid_node_id(said["listener"])
            ):
                listener = said["listener"]
                dialer.peer_id = listener
                if self.carried(listener, dialer):
                    dialer.standby(listener)
            # Otherwise it holds a session with us that we do not have (a
            # half-open connection, or we restarted): its heartbeat drops
            # that one soon; we keep retrying.
        elif code == "self":
            dialer.is_self(self.node.node_id)

    def forget(self, session: PeerProtocol) -> None:
        self.connections.discard(session)
        peer_id = session.peer_id
        if peer_id is None or self.sessions.get(peer_id) is not session:
            return
        del self.sessions[peer_id]
        self.last_seen[peer_id] = session.last_seen
        if session.stream is not None:
            self.last_vv[peer_id] = dict(session.stream.acked)
        log.info("session with {peer} closed", peer=peer_id)
        if self._stopping:
            return
        for dialer in self.dialers:
            if dialer.state == "standby" and dialer.peer_id == peer_id:
                dialer.resume()

    def _check_dialers(self) -> None:
        """Safety net: nobody stands by for a session that is not there, and
        nobody waits to dial a node whose session is up."""
        for dialer in self.dialers:
            if dialer.state == "standby" and dialer.peer_id not in self.sessions:
                dialer.resume()
            elif (
                dialer.peer_id is not None
                and dialer.waiting
                and self.carried(dialer.peer_id, dialer)
            ):
                dialer.standby(dialer.peer_id)

    # -- replication -----------------------------------------------------------

    def pump_all(self) -> None:
        for session in list(self.sessions.values()):
            if session.stream is not None:
                session.stream.pump()

    def sync_all(self) -> None:
        self._check_dialers()
        for session in list(self.sessions.values()):
            if session.stream is None:
                continue
            d = session.sync()
            d.addTimeout(3 * self.sync_interval, self._reactor)
            d.addErrback(self._sync_failed, session)

    def _sync_failed(self, failure, session: PeerProtocol) -> None:
        if failure.check(error.ConnectionClosed):
            return  # the session ended before the answer; nothing to do
        if failure.check(defer.TimeoutError):
            why = f"no answer within {3 * self.sync_interval:g}s"
        else:
            why = failure.getErrorMessage()
        log.warn(
            "peer {peer} did not answer a sync: {error}; disconnecting",
            peer=session.peer_id,
            error=why,
        )
        session.transport.abortConnection()

    # -- STATUS ----------------------------------------------------------------

    def status_lines(self) -> list[str]:
        """One line per ``--peers`` address (matched to whichever session
        with that node is up, dialed or accepted), then one per session with
        a node that no address names (it dialed us)."""
        now = self.clock.seconds()
        lines = []
        named = set()
        for dialer in self.dialers:
            peer_id = dialer.peer_id
            named.add(peer_id)
            session = self.sessions.get(peer_id) if peer_id else None
            if session is not None:
                state = "connected"
            elif dialer.state in ("self", "connecting", "stopped"):
                state = dialer.state
            else:
                state = "retrying"
            address = f"{dialer.address[0]}:{dialer.address[1]}"
            lines.append(self._peer_line(address, peer_id, session, state, now))
        for peer_id, session in sorted(self.sessions.items()):
            if peer_id not in named:
                peer = session.transport.getPeer()
                host, port = getattr(peer, "host", "?"), getattr(peer, "port", "?")
                address = f"{host}:{port}"
                lines.append(
                    self._peer_line(address, peer_id, session, "connected", now)
                )
        return lines

    def _peer_line(self, address, peer_id, session, state, now) -> str:
        parts = [
            f"peer={quote(address)}",
            f"node={quote(peer_id or '-')}",
            f"state={state}",
        ]
        if state != "self":
            parts.append(f"behind={self._behind(peer_id, session)}")
        seen = session.last_seen if session else self.last_seen.get(peer_id)
        if seen is not None:
            parts.append(f"last_seen={now - seen:.1f}s")
        return " ".join(parts)

    def _behind(self, peer_id: str | None, session: PeerProtocol | None) -> str:
        """How many of our durable ops the peer lacks, by the latest vector
        we have of it (its answers, Syncs and the ops it sent us), even if it
        is gone; ``unknown`` if we never had one."""
        if session is not None and session.stream is not None:
            vv = session.stream.acked
        else:
            vv = self.last_vv.get(peer_id) if peer_id else None
        if vv is None:
            return "unknown"
        return str(
            sum(
                max(0, seq - vv.get(origin, 0))
                for origin, seq in self.node.durable_vv.items()
            )
        )
