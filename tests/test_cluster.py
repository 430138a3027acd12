"""Dialing peers: backoff, handshake-gated delay reset, clean shutdown.

Sockets are a MemoryReactorClock's: connectTCP only records the attempt, and
a recorded attempt is joined to a peer's server protocol with iosim.
"""

from __future__ import annotations

import random

import pytest
from peer_network import SimNet, status
from replication_harness import join, run_now
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from twisted_agenda.cluster import Cluster
from twisted_agenda.datadir import DataDir
from twisted_agenda.hlc import HybridClock
from twisted_agenda.node import Node
from twisted_agenda.peerproto import PeerClientFactory, PeerProtocol


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


# -- dialing scenarios on a simulated network (tests/peer_network.py) ---------


@pytest.fixture
def net(tmp_path):
    return SimNet(tmp_path)


def pair(net, first="a", second="b", gap=0.0):
    """Two nodes that list each other; ``second`` starts ``gap`` s later."""
    addresses = {first: net.address(), second: net.address()}
    one = net.start(first, addresses[first], peers=[addresses[second]])
    net.run(gap)
    two = net.start(second, addresses[second], peers=[addresses[first]])
    return one, two, addresses


def pending(dialer) -> bool:
    """A next attempt is scheduled."""
    return dialer._callID is not None and dialer._callID.active()


def one_session(x, y) -> bool:
    return x.sessions.keys() == {y.node.node_id} and y.sessions.keys() == {
        x.node.node_id
    }


@pytest.mark.parametrize("gap", [0.0, 0.7, 3.0])
@pytest.mark.parametrize(("first", "second"), [("a", "b"), ("b", "a")])
def test_nodes_that_list_each_other_keep_one_session_and_stay_quiet(
    net, first, second, gap
):
    one, two, _ = pair(net, first, second, gap)
    net.run(1)
    assert one_session(one, two)
    # Both ends kept the same session: the one the smaller id dialed.
    small, large = sorted([one, two], key=lambda c: c.node.node_id)
    assert small.sessions[large.node.node_id].dialed
    assert not large.sessions[small.node.node_id].dialed
    assert [d.state for d in small.dialers] == ["connected"]
    assert [d.state for d in large.dialers] == ["standby"]
    before = sum(net.attempts.values())
    net.run(300)
    assert one_session(one, two), "the session lasts"
    assert sum(net.attempts.values()) == before, "nobody dials while connected"
    for cluster in (one, two):
        assert [p["state"] for p in status(cluster)] == ["connected"]


@pytest.mark.parametrize("dead", ["a", "b"])
def test_the_survivor_redials_a_dead_peer_until_it_is_back(net, dead):
    # a dials b before b is up; b's first attempt then succeeds, and a's
    # retry wins the tie: b's dialer stands by although it never failed.
    a_address, b_address = net.address(), net.address()
    a = net.start("a", a_address, peers=[b_address])
    net.run(0.2)
    b = net.start("b", b_address, peers=[a_address])
    net.run(5)
    assert one_session(a, b)
    assert b.dialers[0].state == "standby"
    victim, survivor = (a, b) if dead == "a" else (b, a)
    address = a_address if dead == "a" else b_address
    net.kill(victim)
    dialer = survivor.dialers[0]
    assert survivor.sessions == {}
    assert dialer.state == "retrying" and pending(dialer)
    assert status(survivor)[0]["state"] == "retrying"
    # It keeps trying with capped backoff: a few attempts a minute at most.
    before = net.attempts[address]
    net.run(600)
    tries = net.attempts[address] - before
    assert 20 <= tries <= 40, tries
    assert dialer._callID.getTime() - net.seconds() <= dialer.maxDelay * 1.5
    # The dead node comes back without --peers: only the survivor can dial.
    back = net.start(dead, address)
    net.run_until(lambda: one_session(back, survivor), timeout=45)
    assert dialer.state == "connected"


def test_a_peer_restarted_with_the_same_config_reconnects(net):
    a, b, addresses = pair(net)
    net.run(1)
    net.stop(a)
    a2 = net.start("a", addresses["a"], peers=[addresses["b"]])
    took = net.run_until(lambda: one_session(a2, b), timeout=5)
    assert took < 2
    before = sum(net.attempts.values())
    net.run(120)
    assert one_session(a2, b) and sum(net.attempts.values()) == before


@pytest.mark.parametrize("vanishes", ["a", "b"])
def test_a_half_open_session_left_by_a_vanished_peer_heals(net, vanishes):
    """The peer's host vanished (its connections stay half-open here) and it
    comes back, same id and config: it is refused as a duplicate until our
    heartbeat drops the stale session, then the two reconnect."""
    a, b, addresses = pair(net)
    net.run(1)
    gone, stays = (a, b) if vanishes == "a" else (b, a)
    net.cut_off(gone)
    me = gone.node.node_id
    other = stays.node.node_id
    back = net.start(me, addresses[me], peers=[addresses[other]])
    net.run(1)
    assert back.sessions == {}, "refused: the stale session is still there"
    assert back.dialers[0].state == "retrying" and pending(back.dialers[0])
    took = net.run_until(lambda: one_session(back, stays), timeout=60)
    assert took <= 4 * stays.sync_interval + back.dialers[0].maxDelay
    before = sum(net.attempts.values())
    net.run(300)
    assert one_session(back, stays)
    assert sum(net.attempts.values()) == before, "no storm once connected"
    for cluster in (back, stays):
        assert [p["state"] for p in status(cluster)] == ["connected"]


def test_three_nodes_started_at_once_end_with_one_session_per_pair(net):
    addresses = {name: net.address() for name in "abc"}
    clusters = {
        name: net.start(
            name, addresses[name], peers=[a for n, a in addresses.items() if n != name]
        )
        for name in "abc"
    }
    net.run(10)
    for name, cluster in clusters.items():
        assert cluster.sessions.keys() == set("abc") - {name}
        assert [p["state"] for p in status(cluster)] == ["connected", "connected"]
        assert {p["node"] for p in status(cluster)} == set("abc") - {name}
    before = sum(net.attempts.values())
    net.run(300)
    assert sum(net.attempts.values()) == before


def test_stopping_leaves_nothing_scheduled_or_dialing(net):
    """stopService closes every session; none of that may re-arm a dialer."""
    b, a, _ = pair(net, "b", "a")  # b fails once, then stands by
    c_address = net.address()  # listed, never up: a's dialer is retrying
    a.dialers.append(PeerClientFactory(a, c_address))
    a.dialers[-1].clock = net
    a.dialers[-1].connector = net.connectTCP(*c_address, a.dialers[-1])
    net.run(3)
    assert b.dialers[0].state == "standby"
    net.stop(b)  # b's standby dialer sees its session end while stopping
    net.stop(a)
    assert a.sessions == b.sessions == {}
    before = sum(net.attempts.values())
    assert [c for c in net.getDelayedCalls() if c.active()] == []
    net.run(120)
    assert sum(net.attempts.values()) == before
    assert all(d.state == "stopped" for d in a.dialers + b.dialers)


# -- STATUS -------------------------------------------------------------------


def test_a_node_that_lists_itself_says_so_and_stops_dialing_it(net):
    a_address, b_address = net.address(), net.address()
    b = net.start("b", b_address)
    a = net.start("a", a_address, peers=[a_address, b_address])
    net.run(120)
    lines = status(a)
    assert [(p["node"], p["state"]) for p in lines] == [
        ("a", "self"),
        ("b", "connected"),
    ]
    assert net.attempts[a_address] == 1
    assert b.sessions.keys() == {"a"}


def test_a_peer_that_is_down_shows_retrying_and_how_far_behind_it_is(net):
    a, b, _ = pair(net)
    c_address = net.address()  # listed, never up
    a.dialers.append(PeerClientFactory(a, c_address))
    a.dialers[-1].clock = net
    a.dialers[-1].connector = net.connectTCP(*c_address, a.dialers[-1])
    net.run(1)
    net.kill(b)
    for name in ("Ana", "Bia"):
        a.node.add(name, "111-111")
    net.run(10)
    down, never = status(a)
    assert down["node"] == "b" and down["state"] == "retrying"
    assert down["behind"] == "2", "by the last vector b sent us"
    assert float(down["last_seen"].rstrip("s")) >= 10
    assert never == {
        "peer": f"{c_address[0]}:{c_address[1]}",
        "node": "-",
        "state": "retrying",
        "behind": "unknown",
    }


def test_behind_follows_the_peers_answers_between_syncs(net):
    addresses = {name: net.address() for name in "ab"}
    a = net.start("a", addresses["a"], peers=[addresses["b"]], sync_interval=1000)
    b = net.start("b", addresses["b"], sync_interval=1000)
    net.run(1)
    a.node.add("Ana", "111-111")
    net.clock.advance(0)
    assert status(a)[0]["behind"] == "1", "pushed, not yet answered"
    net.settle()
    assert status(a)[0]["behind"] == "0", "PushOps' answer carries b's vector"
    assert [p["behind"] for p in status(b)] == ["0"]


def test_a_listed_peer_that_dialed_us_first_has_one_line(net):
    a_address, b_address = net.address(), net.address()
    a = net.start("a", a_address, peers=[b_address])
    net.run(20)  # a's attempts failed; the next one is many seconds away
    b = net.start("b", b_address, peers=[a_address])
    net.settle()
    assert [(p["peer"], p["node"], p["state"]) for p in status(a)] == [
        (f"{b_address[0]}:{b_address[1]}", "b", "connected")
    ]
    assert one_session(a, b)
    # A node no address names (it dialed us) gets a line of its own.
    c = net.start("c", net.address(), peers=[a_address])
    net.settle()
    assert [(p["node"], p["state"]) for p in status(a)] == [
        ("b", "connected"),
        ("c", "connected"),
    ]
    assert "c" in a.sessions and "a" in c.sessions


def test_status_values_are_quoted(net):
    a = net.start("a", net.address())
    # (Ids from the wire are checked at Hello; this is the second line.)
    line = a._peer_line("127.0.0.1:9", 'x "y" state=ok', None, "retrying", 0.0)
    assert status_fields(line) == {
        "peer": "127.0.0.1:9",
        "node": 'x "y" state=ok',
        "state": "retrying",
        "behind": "unknown",
    }


def status_fields(line):
    from twisted_agenda import quoting

    return dict(w.partition("=")[::2] for w in quoting.split(line))


@pytest.fixture
def seeded(request):
    """The dialers' jitter comes from ``random``: seed it, then put it back."""
    state = random.getstate()
    random.seed(request.node.callspec.params["seed"])
    yield
    random.setstate(state)


@pytest.mark.parametrize("seed", range(25))
def test_random_deaths_restarts_and_half_open_links_end_in_one_quiet_session(
    net, seeded, seed
):
    """Nodes list random peers (some under two addresses), then die, stop,
    vanish half-open and come back at random; once all are up, every pair
    that one side lists has one session both ends agree on, and nobody dials
    any more."""
    rnd = random.Random(seed)
    names = list("abcd"[: rnd.choice([2, 3, 4])])
    address = {x: net.address() for x in names}
    alias = {x: net.address() for x in names}
    peers = {
        x: [address[y] for y in names if y != x and rnd.random() < 0.7]
        + [alias[y] for y in names if y != x and rnd.random() < 0.2]
        for x in names
    }
    live = {}

    def start(x):
        live[x] = net.start(x, address[x], peers=peers[x], sync_interval=5.0)
        net.listeners[alias[x]] = live[x]

    for x in names:
        if rnd.random() < 0.8:
            start(x)
            net.run(rnd.choice([0, 0.3, 2]))
    for _ in range(rnd.randint(2, 8)):
        x = rnd.choice(names)
        action = rnd.choice(["kill", "stop", "cut_off", "start", "wait"])
        if action == "start" and x not in live:
            start(x)
        elif action in ("kill", "stop", "cut_off") and x in live:
            getattr(net, action)(live.pop(x))
            if rnd.random() < 0.7:
                net.run(rnd.choice([0, 0.5, 3, 20]))
                start(x)
        net.run(rnd.choice([0, 0.2, 1, 7, 40]))
    for x in names:
        if x not in live:
            start(x)
    listed = {
        (x, y)
        for x in names
        for y in names
        if x < y
        and (
            {address[y], alias[y]} & set(peers[x])
            or {address[x], alias[x]} & set(peers[y])
        )
    }

    def converged():
        return all(
            y in live[x].sessions
            and x in live[y].sessions
            and live[x].sessions[y].dialed != live[y].sessions[x].dialed
            for x, y in listed
        )

    net.run_until(converged, timeout=200)
    before = sum(net.attempts.values())
    net.run(300, step=1)
    assert converged()
    assert sum(net.attempts.values()) == before, "no dialing once connected"
    for cluster in live.values():
        assert {p["state"] for p in status(cluster)} <= {"connected"}
