"""Replication between in-memory nodes over real AMP sessions (iosim + Clock)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replication_harness import Harness, result
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent

from twisted_agenda.model import Contact
from twisted_agenda.node import Unavailable
from twisted_agenda.peerproto import PeerProtocol


@pytest.fixture
def net(tmp_path):
    return Harness(tmp_path)


@pytest.fixture
def caplog_events():
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_add_on_one_node_reaches_the_other(net):
    net.node("a"), net.node("b")
    seen = []
    net.nodes["b"].watchers.add(seen.append)
    net.connect("a", "b")
    net.settle()
    net.write("a", "add", "Maria da Silva", "+55 11 91234-5678", email="m@x.com")
    net.settle()
    assert net.book("b") == [Contact("Maria da Silva", "+55 11 91234-5678", "m@x.com")]
    assert [c.kind for c in seen] == ["added"]


def test_both_directions_share_one_session(net):
    net.node("a"), net.node("b")
    net.connect("a", "b")
    net.settle()
    net.write("b", "add", "Bia", "555-1234")
    net.settle()
    assert net.book("a") == net.book("b") == [Contact("Bia", "555-1234")]


def test_a_node_that_was_away_catches_up_with_nobody_writing(net):
    for name in "abc":
        net.node(name)
    net.connect("a", "b"), net.connect("b", "c"), net.connect("a", "c")
    net.settle()
    net.write("a", "add", "Ana", "111-111")
    net.settle()
    net.disconnect("b", "a"), net.disconnect("b", "c")
    net.write("a", "add", "Caio", "222-222")
    net.write("c", "update", "Ana", email="ana@x.com")
    net.write("c", "remove", "Ana")
    net.write("c", "add", "Duda", "333-333")
    net.settle()
    assert net.book("b") == [Contact("Ana", "111-111")]
    net.connect("b", "a"), net.connect("b", "c")
    net.settle()
    assert net.book("b") == net.book("a") == net.book("c")
    assert [c.name for c in net.book("b")] == ["Caio", "Duda"]


def test_chain_topology_converges(net):
    """A knows only B, C knows only B: B relays both ways."""
    for name in "abc":
        net.node(name)
    net.connect("a", "b"), net.connect("c", "b")
    net.settle()
    net.write("a", "add", "From A", "100-100")
    net.write("c", "add", "From C", "300-300")
    net.settle()
    names = ["From A", "From C"]
    for name in "abc":
        assert [c.name for c in net.book(name)] == names


MARIA = ("Maria", "111-111")


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param(
            ("a", "update", {"phone": "222-222"}),
            ("b", "update", {"email": "maria@x.com"}),
            [Contact("Maria", "222-222", "maria@x.com")],
            id="different fields: both edits kept",
        ),
        pytest.param(
            ("a", "update", {"phone": "222-222"}),
            ("b", "update", {"phone": "333-333"}),
            [Contact("Maria", "333-333", "old@x.com")],
            id="same field: the later stamp wins everywhere",
        ),
        pytest.param(
            ("a", "remove", {}),
            ("b", "update", {"note": "call back"}),
            [Contact("Maria", note="call back")],
            id="edit after a remove: back with the edit only",
        ),
        pytest.param(
            ("b", "update", {"note": "call back"}),
            ("a", "remove", {}),
            [],
            id="remove after an edit: gone",
        ),
    ],
)
def test_concurrent_edits_converge(net, first, second, expected):
    net.node("a"), net.node("b")
    net.connect("a", "b")
    net.write("a", "add", *MARIA, email="old@x.com")
    net.settle()
    net.disconnect("a", "b")
    for node, action, fields in (first, second):
        net.write(node, action, "Maria", **fields)
        net.clock.advance(0.001)  # the second edit is stamped later
    net.connect("a", "b")
    net.settle()
    assert net.book("a") == net.book("b") == expected


def test_twenty_thousand_ops_page_under_the_amp_limit(net):
    """A value over 65,535 bytes would raise TooLong and break the session."""
    net.node("a"), net.node("b")
    for i in range(20_000):
        net.nodes["a"].add(
            f"Contact number {i:05d} with a longish name", "+55 11 5555-0000"
        )
    net.clock.advance(0)
    net.connect("b", "a")
    net.settle()
    assert len(net.nodes["b"].replica) == 20_000
    assert net.nodes["b"].durable_vv == net.nodes["a"].durable_vv == {"a": 20_000}


def test_catch_up_cost_follows_what_was_missed(net):
    net.node("a"), net.node("b")
    for i in range(3_000):
        net.nodes["a"].add(f"Person {i}", "555-0000", note="x" * 100)
    net.clock.advance(0)
    net.connect("b", "a")
    net.settle()
    full_sync = net.bytes_moved
    net.disconnect("a", "b")
    for i in range(5):
        net.write("a", "update", f"Person {i}", email=f"p{i}@x.com")
    net.bytes_moved = 0
    net.connect("b", "a")
    net.settle()
    assert net.book("b") == net.book("a")
    assert net.bytes_moved < full_sync / 100


def test_new_node_receives_a_snapshot_when_the_log_was_compacted(net):
    a = net.node("a", compact_min_ops=100, compact_ratio=0.0)
    for i in range(1_500):
        a.add(f"Person {i:04d} " + "long name" * 5, "555-0000")
        if i % 100 == 0:
            net.clock.advance(0)
    a.remove("Person 0007 " + "long name" * 5)
    net.clock.advance(0)
    net.clock.advance(0)
    assert a.oplog.base.get("a", 0) > 0, "the log was trimmed by compaction"
    net.node("b")
    net.connect("b", "a")
    net.settle()
    assert net.book("b") == net.book("a")
    assert len(net.book("b")) == 1_499
    # b saved what it received: it survives a restart.
    b = net.restart("b")
    assert b.contacts() == net.book("a")
    # and later writes still flow as ops.
    net.connect("b", "a")
    net.write("a", "add", "After snapshot", "555-9999")
    net.settle()
    assert net.book("b") == net.book("a")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("same-id", "self:"),
        ("cluster", "cluster"),
    ],
)
def test_handshake_refusals(net, change, reason, caplog_events):
    net.node("a")
    if change == "same-id":
        other = net.node("b")
        other.node_id = "a"
    else:
        net.node("b")
        net.clusters["b"].cluster = "another"
    _client, _server = net.connect("a", "b")
    net.settle()
    assert net.clusters["a"].sessions == {} and net.clusters["b"].sessions == {}
    assert any(reason in str(e.get("reason", "")) for e in caplog_events)


def test_unknown_protocol_version_is_refused(net):
    from twisted_agenda import peerproto

    net.node("a"), net.node("b")
    client, _server = net.connect("a", "b")
    d = client.callRemote(
        peerproto.Hello, protocol=99, cluster="agenda", node="z", vv={}
    )
    failures = []
    d.addErrback(failures.append)
    net.settle()
    assert failures and failures[0].check(peerproto.HandshakeRefused)
    assert "protocol version 99" in str(failures[0].value)


def test_ops_before_hello_are_refused_without_closing(net):
    from twisted_agenda import peerproto

    net.node("a"), net.node("b")
    _client, server = net.connect("a", "b")
    d = server.callRemote(peerproto.PushOps, ops=b"")
    failures = []
    d.addErrback(failures.append)
    # Run only the first exchange: the server's call reaches the client
    # before the client's Hello completes.
    net.pumps[-1].pump()
    net.pumps[-1].pump()
    net.settle()
    assert failures and failures[0].check(peerproto.NotIntroduced)


def test_dialing_each_other_leaves_one_session(net):
    net.node("a"), net.node("b")
    net.connect("a", "b")
    net.connect("b", "a")
    net.settle()
    sa, sb = net.clusters["a"].sessions["b"], net.clusters["b"].sessions["a"]
    assert sa.dialed and not sb.dialed, "both keep the session the smaller id dialed"
    states = sorted(f.state for c in net.clusters.values() for f in c.dialers)
    assert states == ["connected", "standby"]
    net.write("b", "add", "Still works", "555-0000")
    net.settle()
    assert net.book("a") == net.book("b")


def test_second_connection_from_a_connected_node_is_refused(net):
    net.node("a"), net.node("b")
    net.connect("a", "b")
    net.settle()
    first = net.clusters["b"].sessions["a"]
    net.connect("a", "b")
    net.settle()
    assert net.clusters["b"].sessions["a"] is first
    assert net.clusters["a"].dialers[1].state == "standby"


def test_future_stamp_waits_until_our_clock_catches_up(net):
    net.node("a")
    net.node("b", skew=120.0)  # b's clock is two minutes fast
    net.nodes["a"].clock.max_offset = 60.0
    net.connect("a", "b")
    net.settle()
    net.write("b", "add", "From the future", "555-0000")
    net.settle()
    assert net.book("a") == []
    assert net.nodes["a"].clock.last < net.nodes["b"].clock.last, "never adopted"
    net.clock.advance(61)
    net.sync()
    assert [c.name for c in net.book("a")] == ["From the future"]


def test_a_refused_stamp_holds_back_only_its_own_origin(net):
    net.node("a")
    net.node("b", skew=600.0)  # b's clock is ten minutes fast
    net.node("c")
    net.nodes["a"].clock.max_offset = 60.0
    net.connect("a", "b"), net.connect("c", "b")  # a chain: a - b - c
    net.settle()
    for i in range(300):  # more than one page of b's ops, all refused by a
        net.write("b", "add", f"From the future {i:03d} " + "x" * 150, "555-0000")
    net.write("c", "add", "Honest", "555-0001")
    net.settle()
    net.sync()
    assert [c.name for c in net.book("a")] == ["Honest"], "relayed past b's ops"
    net.clock.advance(600)
    net.sync()
    assert len(net.book("a")) == 301


@pytest.mark.parametrize(
    "b_restarts",
    [
        pytest.param(False, id="b-hears-from-c"),
        # Back without c, b knows of c only once c answers: until then it
        # must not vouch for the cluster.
        pytest.param(True, id="b-restarted-while-c-is-away"),
    ],
)
def test_a_chain_end_keeps_tombstones_a_node_it_never_hears_from_may_need(
    net, b_restarts
):
    # a - b - c: a hears from b only; c's edit, older than a's removal,
    # reaches a only later, through b.
    a = net.node("a", expected_peers=1, compact_min_ops=1, compact_ratio=0.0)
    net.node("b", expected_peers=2)
    net.node("c", expected_peers=1)
    net.connect("a", "b"), net.connect("c", "b")
    net.write("a", "add", "Kim", "555-0000")
    net.settle()
    net.sync()
    net.disconnect("c", "b")
    net.write("c", "update", "Kim", note="from c")
    if b_restarts:
        net.restart("b", expected_peers=2)
        net.connect("a", "b")
    net.clock.advance(1)
    net.write("a", "remove", "Kim")
    net.settle()
    net.sync()
    for i in range(2):  # the second write compacts what the first wrote
        net.write("a", "add", f"Trigger {i}", "555-0001")
        net.settle()
    assert a.journal.lines_since_snapshot == 0, "a compacted"
    assert "kim" in a.replica.records, "a cannot know what c holds"
    net.connect("c", "b")
    net.settle()
    net.sync()
    for name in "abc":
        assert [c.name for c in net.book(name)] == ["Trigger 0", "Trigger 1"], name


def test_a_later_update_wins_even_when_it_repeats_the_value_here(net):
    net.node("a"), net.node("b")
    net.connect("a", "b")
    net.write("a", "add", "Kim", "555-0000", note="a")
    net.settle()
    net.disconnect("a", "b")
    net.write("b", "update", "Kim", note="b")
    net.clock.advance(1)
    net.write("a", "update", "Kim", note="a")  # what a already shows
    net.connect("a", "b")
    net.settle()
    assert net.book("a") == net.book("b") == [Contact("Kim", "555-0000", note="a")]


def test_tombstones_go_once_every_peer_has_them(net):
    names = "abc"
    for name in names:
        net.node(name, expected_peers=2, compact_min_ops=1, compact_ratio=0.0)
    net.connect("a", "b"), net.connect("a", "c"), net.connect("b", "c")
    net.write("a", "add", "Gone", "555-0000")
    net.write("a", "add", "Stays", "555-0001")
    net.settle()
    net.disconnect("c", "a"), net.disconnect("c", "b")
    net.write("a", "remove", "Gone")
    net.settle()
    net.sync()
    net.write("a", "add", "Trigger compaction", "555-0002")
    net.settle()
    assert "gone" in net.nodes["a"].replica.records, "c has not seen the removal"
    net.connect("c", "a"), net.connect("c", "b")
    net.settle()
    net.sync()
    net.write("a", "add", "Trigger again", "555-0003")
    net.settle()
    net.sync()
    net.write("b", "add", "And again", "555-0004")
    net.settle()
    assert "gone" not in net.nodes["a"].replica.records
    for name in names:
        assert [c.name for c in net.book(name)] == [
            "And again",
            "Stays",
            "Trigger again",
            "Trigger compaction",
        ]


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=3000))
def test_garbage_on_the_sync_port_changes_nothing(tmp_path_factory, garbage):
    net = Harness(tmp_path_factory.mktemp("garbage"))
    node = net.node("a")
    net.write("a", "add", "Ana", "111-111")
    server = PeerProtocol(net.clusters["a"], dialed=False)
    transport = StringTransport()
    server.makeConnection(transport)
    server.dataReceived(garbage)
    net.clock.advance(0)
    assert net.clusters["a"].sessions == {}
    assert node.contacts() == [Contact("Ana", "111-111")]
    assert node.replica.vv == {"a": 1}
    node.journal.close()
    node.journal._datadir.close()


def test_an_introduced_peer_sending_bad_ops_gets_an_error(net):
    from twisted_agenda import peerproto

    net.node("a"), net.node("b")
    client, _server = net.connect("a", "b")
    net.settle()
    failures = []
    client.callRemote(peerproto.PushOps, ops=b'{"not": "an op"}').addErrback(
        failures.append
    )
    net.settle()
    assert failures and failures[0].check(peerproto.BadPayload)
    assert "b" in net.clusters["a"].sessions, "the session survives"


def test_a_person_on_the_sync_port_is_told_where_to_go(net):
    net.node("a")
    server = PeerProtocol(net.clusters["a"], dialed=False)
    transport = StringTransport()
    server.makeConnection(transport)
    server.dataReceived(b"LIST\r\n")
    assert transport.value().startswith(b"ERR bad-request this is an agenda node's")
    assert transport.disconnecting


def test_a_node_that_joined_by_snapshot_stamps_its_writes_after_it(net):
    a = net.node("a")
    net.write("a", "add", "Maria", "111-111")
    a.journal.compact()
    net.clock.advance(0)
    assert a.oplog.base == {"a": 1}, "b will need the snapshot"
    net.node("b", skew=-30.0)  # b's wall clock is half a minute slow
    net.connect("b", "a")
    net.settle()
    net.write("b", "update", "Maria", phone="222-222")
    net.settle()
    assert net.book("a") == net.book("b") == [Contact("Maria", "222-222")]


def test_a_wiped_node_gets_its_own_changes_back_before_it_writes(net):
    net.node("a"), net.node("b")
    net.connect("a", "b")
    net.settle()
    net.write("a", "add", "Ana", "111-111")
    net.write("a", "add", "Bia", "222-222")
    net.settle()
    a = net.wipe("a")  # same --node-id, empty folder: its numbering starts over
    a.peer_holds("b", dict(net.nodes["b"].durable_vv))  # what b's Hello says
    with pytest.raises(Unavailable, match="own earlier changes"):
        result(net.write("a", "add", "Caio", "333-333"))
    net.connect("a", "b")
    net.settle()
    net.write("a", "update", "Ana", email="ana@x.com")
    net.write("a", "add", "Caio", "333-333")
    net.settle()
    assert (
        net.book("a")
        == net.book("b")
        == [
            Contact("Ana", "111-111", "ana@x.com"),
            Contact("Bia", "222-222"),
            Contact("Caio", "333-333"),
        ]
    )


def test_a_restored_node_names_the_changes_it_wrote_under_reused_numbers(
    net, caplog_events
):
    net.node("a"), net.node("b")
    net.connect("a", "b")
    net.settle()
    for name in ("Ana", "Bia", "Caio"):
        net.write("a", "add", name, "111-111")
    net.settle()
    net.wipe("a")
    net.write("a", "add", "Duda", "444-444")  # before any peer could warn it
    net.connect("a", "b")
    net.settle()
    said = [e for e in caplog_events if e.get("log_level") == LogLevel.critical]
    assert [formatEvent(e) for e in said] == [
        "changes a:1..1 (add Duda) were written here since start under numbers"
        " that peer b holds for other changes, and will not reach the peers:"
        " stop this node, empty its data folder, start it with a new --node-id,"
        " then enter those changes again"
    ]


# -- the handshake: refusals, validation, timeout --------------------------


def raw_peer(net, listener: str):
    """A bare AMP client on ``listener``'s sync port: it says only what the
    test makes it say."""
    from replication_harness import join
    from twisted.protocols import amp

    client = amp.AMP()
    server = PeerProtocol(net.clusters[listener], dialed=False)
    net.pumps.append(join(server, client, net.clock))
    return client, server


def hello(net, client, **kw):
    """Send a Hello (defaults: a valid one from node "z"); its failure or
    answer once the network settled."""
    from twisted_agenda import peerproto

    args = {"protocol": 1, "cluster": "agenda", "node": "z", "vv": {}, **kw}
    out = []
    client.callRemote(peerproto.Hello, **args).addBoth(out.append)
    net.settle()
    return out[0]


INJECTION = "evil\r\nOK status\r\nCONTACT Fake 1"


@pytest.mark.parametrize(
    ("hello_args", "code"),
    [
        ({"protocol": 99}, "version: "),
        ({"cluster": "beta"}, "cluster: "),
        ({"node": INJECTION}, "invalid: "),
        ({"node": ""}, "invalid: "),
        ({"node": "-starts-with-a-dash"}, "invalid: "),
        ({"node": "x" * 65}, "invalid: "),
        ({"vv": {"not an id!": 1}}, "invalid: "),
        ({"vv": {"b": -1}}, "invalid: "),
        ({"vv": {"b": 1.5}}, "invalid: "),
        ({"vv": [1, 2]}, "invalid: "),
        ({"node": "a"}, "self: "),
        ({"node": "b"}, "duplicate: a already has a session with b"),
    ],
)
def test_hello_refusals_start_with_their_code_word(
    net, caplog_events, hello_args, code
):
    from twisted_agenda import peerproto

    net.node("a"), net.node("b")
    net.connect("b", "a")  # so that "b" is a duplicate
    net.settle()
    client, _server = raw_peer(net, "a")
    failure = hello(net, client, **hello_args)
    assert failure.check(peerproto.HandshakeRefused)
    reason = str(failure.value)
    assert reason.startswith(code), reason
    assert set(net.clusters["a"].sessions) == {"b"}
    logged = [formatEvent(e) for e in caplog_events if e.get("reason") == reason]
    assert logged and logged[0].startswith("refused peer "), "logged on our side"
    # Whatever the node id, STATUS stays one line per peer.
    assert "\n" not in "".join(net.clusters["a"].status_lines())
    assert len(net.clusters["a"].status_lines()) == 1


def test_the_refusal_codes_are_the_ones_the_doc_lists():
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "peer-protocol.md").read_text()
    for code in ("version:", "cluster:", "invalid:", "self:", "duplicate:"):
        assert f"`{code}`" in doc, code


def test_a_listener_answering_with_an_invalid_id_is_dropped(net, caplog_events):
    net.node("a"), net.node("b")
    net.nodes["b"].node_id = INJECTION
    net.connect("a", "b")
    net.settle()
    assert net.clusters["a"].sessions == {}
    assert any(str(e.get("reason", "")).startswith("invalid: ") for e in caplog_events)


@pytest.mark.parametrize("sent", [b"", b"\x00\x05Hello", b"\x00\x01\xff" * 50])
def test_a_connection_that_never_completes_hello_is_closed(net, sent):
    from twisted_agenda.cluster import Cluster

    net.node("a")
    client, _server = raw_peer(net, "a")
    lost = []
    client.connectionLost = lost.append
    client.transport.write(sent)
    net.settle()
    net.clock.advance(Cluster.hello_timeout - 0.1)
    net.settle()
    assert not lost
    net.clock.advance(0.2)
    net.settle()
    assert lost, "closed after the Hello timeout"
    assert net.clusters["a"].connections == set()


def test_a_dialer_whose_hello_is_never_answered_hangs_up(net):
    net.node("a"), net.node("b")
    client, _server = net.connect("a", "b")
    frozen = net.pumps.pop()  # nothing goes through: b never answers
    net.clock.advance(net.clusters["a"].hello_timeout + 0.1)
    assert client.transport.disconnecting
    assert frozen is not None


def test_a_session_that_completed_hello_has_no_deadline(net):
    net.node("a"), net.node("b")
    net.connect("a", "b")
    net.settle()
    net.clock.advance(3600)
    net.settle()
    assert "b" in net.clusters["a"].sessions and "a" in net.clusters["b"].sessions


# -- a peer whose journal failed --------------------------------------------


def fail_journal(node) -> None:
    node.journal._failure = OSError(28, "No space left on device")


def test_a_peer_whose_journal_failed_refuses_ops_and_keeps_the_session(
    net, caplog_events
):
    net.node("a"), net.node("b")
    net.connect("a", "b")
    net.settle()
    fail_journal(net.nodes["b"])
    pushes = []
    receive = net.nodes["b"].receive

    def counted(ops):
        pushes.append(ops)
        return receive(ops)

    net.nodes["b"].receive = counted
    net.write("a", "add", "Ana", "111-111")
    net.settle()
    assert "b" in net.clusters["a"].sessions and "a" in net.clusters["b"].sessions
    warned = [formatEvent(e) for e in caplog_events if "refused ops" in formatEvent(e)]
    assert warned and "unavailable: its journal failed" in warned[0]
    # a holds its ops for b until the next sync, instead of pushing each one.
    for name in ("Bia", "Caio"):
        net.write("a", "add", name, "111-111")
    net.settle()
    assert len(pushes) == 1
    net.nodes["b"].journal._failure = None  # the disk has room again
    net.sync()
    assert net.book("b") == net.book("a") and len(net.book("b")) == 3


def test_a_peer_that_cannot_store_a_snapshot_keeps_the_session(net):
    a = net.node("a", compact_min_ops=10, compact_ratio=0.0)
    for i in range(50):
        a.add(f"Person {i:04d}", "555-0000")
        net.clock.advance(0)
    net.clock.advance(0)
    assert a.oplog.base.get("a", 0) > 0, "b will need the snapshot"
    b = net.node("b")
    fail_journal(b)
    net.connect("b", "a")
    net.settle()
    assert "b" in net.clusters["a"].sessions and "a" in net.clusters["b"].sessions
    assert net.book("b") == []
    b.journal._failure = None
    net.sync()
    assert net.book("b") == net.book("a") and len(net.book("b")) == 50


def test_a_snapshot_from_the_future_is_refused_and_the_session_kept(net):
    a = net.node("a", skew=600.0, compact_min_ops=10, compact_ratio=0.0)
    for i in range(50):
        a.add(f"Person {i:04d}", "555-0000")
        net.clock.advance(0)
    net.clock.advance(0)
    assert a.oplog.base.get("a", 0) > 0
    b = net.node("b")
    b.clock.max_offset = 60.0
    net.connect("b", "a")
    net.settle()
    assert "b" in net.clusters["a"].sessions and "a" in net.clusters["b"].sessions
    assert net.book("b") == []
    net.clock.advance(600)
    net.sync()
    assert len(net.book("b")) == 50
