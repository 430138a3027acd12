"""Dialing peers: backoff, handshake-gated delay reset, clean shutdown.

Sockets are a MemoryReactorClock's: connectTCP only records the attempt, and
a recorded attempt is joined to a peer's server protocol with iosim.
"""

from __future__ import annotations

from replication_harness import join, run_now
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from twisted_agenda.cluster import Cluster
from twisted_agenda.datadir import DataDir
from twisted_agenda.hlc import HybridClock
from twisted_agenda.node import Node
from twisted_agenda.peerproto import PeerProtocol


def make(tmp_path, name, reactor, peers=()):
    datadir = DataDir(str(tmp_path / name))
    datadir.open()
    node = Node(
        name, datadir, reactor, run_now, clock=HybridClock(wall=reactor.seconds)
    )
    return Cluster(node, list(peers), sync_interval=5.0, reactor=reactor)


def refuse(reactor):
    """The last dial attempt fails (a MemoryReactor reuses one connector)."""
    factory = reactor.tcpClients[0][2]
    factory.clientConnectionFailed(
        reactor.connectors[0], Failure(ConnectionRefusedError())
    )


def test_retries_back_off_to_the_cap_and_reset_after_handshake(tmp_path):
    reactor = MemoryReactorClock()
    a = make(tmp_path, "a", reactor, peers=[("127.0.0.1", 9006)])
    b = make(tmp_path, "b", reactor)
    a.startService()
    assert [c[:2] for c in reactor.tcpClients] == [("127.0.0.1", 9006)]
    dialer = a.dialers[0]
    delays = []
    for _ in range(12):
        refuse(reactor)
        call = dialer._callID
        delays.append(call.getTime() - reactor.seconds())
        reactor.advance(delays[-1])  # the retry dials again
    assert dialer.retries == 12
    assert delays[0] < 2 and max(delays) <= dialer.maxDelay * 1.5
    assert delays[-1] > 15, "the delay grows towards the cap"
    assert dialer.state == "retrying"

    # A TCP connection alone does not reset the delay; a handshake does.
    client = dialer.buildProtocol(None)
    server = PeerProtocol(b, dialed=False)
    pump = join(server, client, reactor)
    assert dialer.delay > dialer.initialDelay
    pump.flush()
    assert dialer.state == "connected" and "b" in a.sessions
    assert dialer.delay == dialer.initialDelay

    a.stopService()
    pump.flush()
    assert a.sessions == {} and b.sessions == {}
    assert not dialer.continueTrying
    assert not a._timer.running


def test_unanswered_sync_drops_the_session(tmp_path):
    reactor = MemoryReactorClock()
    a = make(tmp_path, "a", reactor, peers=[("127.0.0.1", 9006)])
    b = make(tmp_path, "b", reactor)
    a.startService()
    client = a.dialers[0].buildProtocol(None)
    server = PeerProtocol(b, dialed=False)
    pump = join(server, client, reactor)
    pump.flush()
    assert "b" in a.sessions
    # b goes silent (a half-open connection): a's syncs get no answer.
    reactor.advance(5)  # the sync is sent, and never pumped to b
    reactor.advance(15)  # three intervals later a gives up
    pump.flush()
    assert "b" not in a.sessions and "a" not in b.sessions
    # (iosim does not tell the connector; a real one would, and then:)
    a.dialers[0].clientConnectionLost(reactor.connectors[0], Failure(Exception()))
    assert a.dialers[0].state == "retrying" and a.dialers[0]._callID is not None
