"""A simulated loopback network for Clusters: real dialers, real sessions,
no sockets, no sleeps.

``SimNet`` is the reactor a ``Cluster`` is given: time is a ``task.Clock``,
and ``connectTCP`` returns a connector that really connects (through an
iosim pump) to whichever Cluster listens on that address, fails with
"connection refused" when nobody does, and tells the dialing factory of a
lost connection after the protocol, as Twisted's TCP connector does. Nodes
can be stopped, killed (the peer sees the connection close) or cut off
(every connection freezes half-open: nothing arrives, nobody is told), and
started again on the same address.
"""

from __future__ import annotations

import itertools
from collections import Counter

from replication_harness import run_now
from twisted.internet import error, task
from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure
from twisted.test import iosim

from twisted_agenda.cluster import Cluster
from twisted_agenda.datadir import DataDir
from twisted_agenda.hlc import HybridClock
from twisted_agenda.node import Node
from twisted_agenda.peerproto import PeerServerFactory

EPOCH = 1_790_000_000.0
HOST = "127.0.0.1"


class SimConnector:
    def __init__(self, net: SimNet, address: tuple[str, int], factory) -> None:
        self.net = net
        self.address = address
        self.factory = factory
        self.state = "disconnected"
        self.transport = None
        self._pending = None

    def connect(self) -> None:
        self.net.attempts[self.address] += 1
        self.state = "connecting"
        self.factory.doStart()
        self._pending = self.net.clock.callLater(0, self._complete)

    def _complete(self) -> None:
        self._pending = None
        listener = self.net.listeners.get(self.address)
        if listener is None:
            self._failed(error.ConnectionRefusedError())
            return
        self.state = "connected"
        client = self.factory.buildProtocol(self.address)
        server = PeerServerFactory(listener).buildProtocol(None)
        lost = client.connectionLost

        def connectionLost(reason, lost=lost):
            lost(reason)  # the protocol first, then the factory: as tcp.Client
            self.state = "disconnected"
            self.transport = None
            self.factory.clientConnectionLost(self, reason)
            self.factory.doStop()

        client.connectionLost = connectionLost
        ephemeral = IPv4Address("TCP", HOST, next(self.net._ephemeral))
        listening = IPv4Address("TCP", *self.address)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, listening, ephemeral),
            client,
            iosim.FakeTransport(client, False, ephemeral, listening),
            greet=False,
            clock=self.net.clock,
        )
        self.transport = pump.clientIO
        self.net.pumps.append(pump)
        self.net.ends[pump.clientIO] = self.factory.hub
        self.net.ends[pump.serverIO] = listener

    def _failed(self, reason) -> None:
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, Failure(reason))
        self.factory.doStop()

    def stopConnecting(self) -> None:
        if self.state != "connecting":
            raise error.NotConnectingError()
        self._pending.cancel()
        self._pending = None
        self._failed(error.UserError())

    def disconnect(self) -> None:
        if self.state == "connecting":
            self.stopConnecting()
        elif self.state == "connected":
            self.transport.loseConnection()

    def getDestination(self):
        return self.address


class SimNet:
    """The reactor for every Cluster of one test (see the module docstring)."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.clock = task.Clock()
        self.clock.advance(EPOCH)
        self.listeners: dict[tuple[str, int], Cluster] = {}
        self.pumps: list = []
        self.frozen: list = []
        self.attempts: Counter = Counter()
        self._folders = itertools.count()
        self._ports = itertools.count(9100)
        self._ephemeral = itertools.count(40000)
        #: Which Cluster each end of each connection belongs to.
        self.ends: dict = {}

    # -- the reactor interface a Cluster uses ----------------------------------

    def callLater(self, delay, f, *args, **kw):
        return self.clock.callLater(delay, f, *args, **kw)

    def seconds(self) -> float:
        return self.clock.seconds()

    def getDelayedCalls(self):
        return self.clock.getDelayedCalls()

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        connector = SimConnector(self, (host, port), factory)
        connector.connect()
        return connector

    # -- nodes -----------------------------------------------------------------

    def address(self) -> tuple[str, int]:
        return (HOST, next(self._ports))

    def start(self, node_id: str, address, peers=(), sync_interval=5.0) -> Cluster:
        """A node with a fresh data folder listening on ``address``."""
        datadir = DataDir(str(self.tmp_path / f"{node_id}-{next(self._folders)}"))
        datadir.open()
        node = Node(
            node_id,
            datadir,
            self.clock,
            run_now,
            clock=HybridClock(wall=self.clock.seconds),
        )
        cluster = Cluster(node, list(peers), sync_interval=sync_interval, reactor=self)
        self.listeners[tuple(address)] = cluster
        cluster.startService()
        return cluster

    def stop(self, cluster: Cluster) -> None:
        """A clean shutdown: stopService, the listening port closes."""
        self._unlisten(cluster)
        cluster.stopService()
        self.settle()

    def kill(self, cluster: Cluster) -> None:
        """The process dies: its peers see their connections close."""
        self._unlisten(cluster)
        self._neuter(cluster)
        for end in self._ends_of(cluster):
            end.loseConnection()
        self.settle()

    def cut_off(self, cluster: Cluster) -> None:
        """The host vanishes: its connections stay open on the peers' side,
        and nothing more goes through them (half-open)."""
        self._unlisten(cluster)
        self._neuter(cluster)
        ours = self._ends_of(cluster)
        for pump in list(self.pumps):
            if pump.clientIO in ours or pump.serverIO in ours:
                self.pumps.remove(pump)
                self.frozen.append(pump)

    def _ends_of(self, cluster: Cluster) -> set:
        return {end for end, owner in self.ends.items() if owner is cluster}

    def _unlisten(self, cluster: Cluster) -> None:
        for address, listener in list(self.listeners.items()):
            if listener is cluster:
                del self.listeners[address]

    def _neuter(self, cluster: Cluster) -> None:
        # Nothing of a dead process runs any more.
        cluster._timer.stop()
        for dialer in cluster.dialers:
            dialer.stopTrying()
            dialer.stopped = True
        cluster.admit = lambda session, peer_id: "dead"
        cluster.forget = lambda session: None

    # -- running ---------------------------------------------------------------

    def settle(self) -> None:
        """Run until no pump moves data and no call is due now."""
        for _ in range(100_000):
            moved = False
            for pump in list(self.pumps):
                moved |= pump.pump(advanceClock=False)
                if pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self.pumps.remove(pump)
            for pump in self.frozen:
                # A half-open end that gives up learns so itself; the other
                # end is never told.
                for io in (pump.clientIO, pump.serverIO):
                    if io.disconnecting and not io.disconnected:
                        io.disconnected = True
                        io.reportDisconnect()
                        moved = True
            due = [
                c
                for c in self.clock.getDelayedCalls()
                if c.getTime() <= self.clock.seconds()
            ]
            if not moved and not due:
                return
            self.clock.advance(0)
        raise AssertionError("the network never settled")

    def run(self, seconds: float, step: float = 0.25) -> None:
        """Let ``seconds`` of simulated time pass, settling at every step."""
        end = self.clock.seconds() + seconds
        self.settle()
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))
            self.settle()

    def run_until(self, predicate, timeout: float, step: float = 0.25) -> float:
        """Simulated seconds until ``predicate()`` holds (AssertionError after
        ``timeout``)."""
        start = self.clock.seconds()
        self.settle()
        while not predicate():
            if self.clock.seconds() - start >= timeout:
                raise AssertionError(f"not true after {timeout}s (simulated)")
            self.clock.advance(step)
            self.settle()
        return self.clock.seconds() - start


def sessions(cluster: Cluster) -> set[str]:
    return set(cluster.sessions)


def status(cluster: Cluster) -> list[dict[str, str]]:
    """STATUS peer lines as dicts, parsed like a client would."""
    from twisted_agenda import quoting

    out = []
    for line in cluster.status_lines():
        words = dict(w.partition("=")[::2] for w in quoting.split(line))
        out.append(words)
    return out
