"""In-memory clusters for replication tests: real Nodes and AMP sessions,
joined by iosim pumps and driven by one task.Clock (no sockets, no sleeps)."""

from __future__ import annotations

import shutil

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.test import iosim

from twisted_agenda.cluster import Cluster
from twisted_agenda.datadir import DataDir
from twisted_agenda.hlc import HybridClock
from twisted_agenda.node import Node
from twisted_agenda.peerproto import PeerClientFactory, PeerProtocol

EPOCH = 1_790_000_000.0


def join(server, client, clock) -> iosim.IOPump:
    """Connect two protocols in memory; the pump moves their bytes."""
    return iosim.connect(
        server,
        iosim.makeFakeServer(server),
        client,
        iosim.makeFakeClient(client),
        greet=False,
        clock=clock,
    )


def result(d):
    """The value a fired Deferred holds (raises its failure)."""
    out = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def run_now(f, *args):
    return defer.maybeDeferred(f, *args)


class Harness:
    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.nodes: dict[str, Node] = {}
        self.clusters: dict[str, Cluster] = {}
        self.pumps: list[iosim.IOPump] = []
        self.bytes_moved = 0

    def node(self, name: str, skew: float = 0.0, expected_peers: int = 0, **kw) -> Node:
        datadir = DataDir(str(self.tmp_path / name))
        datadir.open()
        hlc = HybridClock(wall=lambda: self.clock.seconds() + skew)
        node = Node(name, datadir, self.clock, run_now, clock=hlc, **kw)
        cluster = Cluster(node, [], reactor=self.clock)
        # Configured peers it has not heard from yet, as a Cluster counts them.
        node.unidentified_peers = lambda: max(0, expected_peers - len(node.peer_vvs))
        self.nodes[name] = node
        self.clusters[name] = cluster
        return node

    def restart(self, name: str, **kw) -> Node:
        """Reopen a node from its data folder, as after a crash."""
        self._close(name)
        return self.node(name, **kw)

    def wipe(self, name: str, **kw) -> Node:
        """Start a node again with the same id and an empty data folder."""
        self._close(name)
        shutil.rmtree(self.tmp_path / name)
        return self.node(name, **kw)

    def _close(self, name: str) -> None:
        old = self.nodes[name]
        for session in list(self.clusters[name].sessions.values()):
            session.transport.loseConnection()
        self.settle()
        old.journal.close()
        old.journal._datadir.close()

    def connect(self, dialer: str, listener: str) -> tuple[PeerProtocol, PeerProtocol]:
        """``dialer`` opens a session to ``listener`` (handshake included)."""
        factory = PeerClientFactory(self.clusters[dialer], (listener, 0))
        factory.clock = self.clock
        self.clusters[dialer].dialers.append(factory)
        client = factory.buildProtocol(None)
        server = PeerProtocol(self.clusters[listener], dialed=False)
        pump = join(server, client, self.clock)
        for proto in (client, server):
            original = proto.dataReceived

            def counted(data, original=original):
                self.bytes_moved += len(data)
                original(data)

            proto.dataReceived = counted
        self.pumps.append(pump)
        return client, server

    def disconnect(self, a: str, b: str) -> None:
        session = self.clusters[a].sessions.get(b)
        if session is not None:
            session.transport.loseConnection()
        self.settle()

    def settle(self) -> None:
        """Run until no pump moves data and no call is due now."""
        for _ in range(100_000):
            moved = False
            for pump in self.pumps:
                moved |= pump.pump()
            if not moved and not [
                c
                for c in self.clock.getDelayedCalls()
                if c.getTime() <= self.clock.seconds()
            ]:
                return
            self.clock.advance(0)
        raise AssertionError("the cluster never settled")

    def write(self, name: str, action: str, *args, **fields):
        d = getattr(self.nodes[name], action)(*args, **fields)
        self.clock.advance(0)
        return d

    def sync(self) -> None:
        for cluster in self.clusters.values():
            cluster.sync_all()
        self.settle()

    def book(self, name: str) -> list:
        return self.nodes[name].contacts()
