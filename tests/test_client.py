"""The client library: parsing in memory, then every command on a real node.

Failover is tested with real node processes that are killed, and with tiny
in-process servers that misbehave on purpose (close mid-request, never
answer, greet like something else).
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from nodeproc import NodeProcess, free_port, running_node, until
from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import StringTransport

from twisted_agenda import quoting
from twisted_agenda.client import (
    Address,
    AgendaClient,
    AgendaError,
    AgendaProtocol,
    BadRequest,
    ConnectionFailed,
    ConnectionLost,
    Event,
    Exists,
    NotFound,
    ProtocolError,
    Unavailable,
    UnknownCommand,
    error_from_line,
    parse_address,
    parse_contact,
    parse_event,
    parse_servers,
    parse_status,
    request_line,
)
from twisted_agenda.lineproto import parse_fields
from twisted_agenda.model import Contact

ODD_NAMES = [
    "Ana=Bia",
    "email=x@example.com",
    "x:y",
    'Ana "the boss" d\'Ávila',
    "back\\slash {brace} [bracket] $dollar #hash",
    "  spaced  out  ",
    "-dash",
    "名前",
]


def unique(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- parsing, in memory ----------------------------------------------------------


def test_contact_lines_parse_into_contacts():
    line = 'CONTACT "Maria da Silva" "+55 11 91234-5678" email=m@x.com note="a \\"b\\""'
    assert parse_contact(line) == Contact(
        "Maria da Silva", "+55 11 91234-5678", "m@x.com", 'a "b"'
    )


def test_names_that_look_like_fields_stay_names():
    assert parse_contact("CONTACT Ana=Bia 123 email=a@b.co") == Contact(
        "Ana=Bia", "123", "a@b.co"
    )


def test_fields_a_newer_node_might_add_are_ignored():
    assert parse_contact("CONTACT x 123 birthday=today") == Contact("x", "123")


def test_event_lines_parse_into_events():
    assert parse_event("EVENT removed x:y 123 note=bye") == Event(
        "removed", Contact("x:y", "123", note="bye")
    )


@pytest.mark.parametrize(
    "line", ["CONTACT", 'CONTACT "unbalanced', "EVENT added", "OK 1"]
)
def test_garbage_is_a_protocol_error_not_a_crash(line):
    with pytest.raises(ProtocolError):
        (parse_event if line.startswith("EVENT") else parse_contact)(line)


@pytest.mark.parametrize(
    ("line", "cls", "message"),
    [
        ("ERR not-found no contact named x", NotFound, "no contact named x"),
        ('ERR exists a contact named "A" exists', Exists, 'a contact named "A" exists'),
        ("ERR bad-request phone needs 3 digits", BadRequest, "phone needs 3 digits"),
        ("ERR unknown-command unknown command X", UnknownCommand, "unknown command X"),
        ("ERR unavailable journal failed", Unavailable, "journal failed"),
        ("ERR brand-new something", AgendaError, "something"),
    ],
)  # fmt: skip
def test_err_replies_become_the_matching_exception(line, cls, message):
    error = error_from_line(line)
    assert type(error) is cls
    assert error.message == message
    assert error.code == line.split()[1]


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1))
def test_requests_reach_the_node_as_sent_whatever_the_name(name):
    # The node's own parser reads back exactly what the client meant.
    line = request_line("ADD", name=name, phone="123", email="", note=None)
    verb, *args = quoting.split(line)
    assert verb == "ADD"
    assert parse_fields(args, ("name", "phone")) == {
        "name": name,
        "phone": "123",
        "email": "",
    }


def test_a_value_with_a_line_break_is_refused_before_sending():
    with pytest.raises(BadRequest, match="one line"):
        request_line("GET", "two\nlines")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9011", Address("127.0.0.1", 9011)),
        ("localhost", Address("localhost", 9010)),
        ("[::1]:9012", Address("::1", 9012)),
        ("::1", Address("::1", 9010)),
    ],
)
def test_addresses(text, address):
    assert parse_address(text) == address
    assert parse_address(str(address)) == address


@pytest.mark.parametrize("text", [":9010", "host:port", "host:0", "host:70000", "[::1"])
def test_bad_addresses_say_what_is_wrong(text):
    with pytest.raises(ValueError, match=r"host|port"):
        parse_address(text)


def test_server_lists_split_on_commas_and_spaces():
    assert parse_servers("a:1, b:2,c:3  d") == [
        Address("a", 1),
        Address("b", 2),
        Address("c", 3),
        Address("d", 9010),
    ]
    with pytest.raises(ValueError, match="no server"):
        parse_servers(" , ")


def test_status_lines_split_into_node_fields_and_peers():
    status = parse_status(
        [
            "node=a1",
            "contacts=3",
            "peer=127.0.0.1:9006 node=a2 state=connected behind=0",
            "peer=127.0.0.1:9007 node=- state=connecting",
        ]
    )
    assert status.fields == {"node": "a1", "contacts": "3"}
    assert [p["node"] for p in status.peers] == ["a2", "-"]
    assert status.peers[0]["state"] == "connected"


def _connected_protocol(events=None):
    proto = AgendaProtocol(on_event=(events.append if events is not None else None))
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"OK agenda 0.1.0 node=a1\r\n")
    return proto, transport


def test_pipelined_replies_are_matched_in_order_and_events_set_aside():
    events = []
    proto, transport = _connected_protocol(events)
    assert proto.greeted.result == "a1"
    first, second = proto.request("LIST"), proto.request("GET nobody")
    second.addErrback(lambda f: f.value)
    assert transport.value() == b"LIST\nGET nobody\n"
    proto.dataReceived(
        b"CONTACT a 111\r\nEVENT added b 222\r\nCONTACT c 333\r\nOK 2\r\n"
        b"ERR not-found no contact named nobody\r\n"
    )
    assert first.result == ["CONTACT a 111", "CONTACT c 333", "OK 2"]
    assert isinstance(second.result, NotFound)
    assert events == [Event("added", Contact("b", "222"))]


def test_a_watch_overflow_is_not_taken_for_a_reply():
    events = []
    proto, transport = _connected_protocol(events)
    d = proto.request("LIST")
    proto.dataReceived(
        b"EVENT overflow 10000 changes unread; WATCH stopped (send WATCH again, "
        b"then LIST to resync)\r\n"
    )
    assert not d.called, "LIST still waits for its own reply"
    assert events == []
    assert transport.disconnecting, "start over: re-WATCH on a fresh connection"


def test_a_lost_connection_fails_every_waiting_request():
    proto, _ = _connected_protocol()
    d = proto.request("LIST")
    proto.dataReceived(b"ERR timeout idle for too long; closing\r\n")
    d.addErrback(lambda f: f.value)
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    proto.connectionLost(Failure(ConnectionDone()))
    # The ERR arrived as LIST's reply here; a later request fails cleanly.
    assert not isinstance(d.result, ConnectionLost)
    later = proto.request("LIST")
    later.addErrback(lambda f: f.value)
    assert isinstance(later.result, ConnectionLost)


def test_a_peer_that_is_not_an_agenda_node_is_refused():
    proto = AgendaProtocol()
    proto.makeConnection(StringTransport())
    proto.greeted.addErrback(lambda f: f.value)
    proto.dataReceived(b"SSH-2.0-OpenSSH_9.2\r\n")
    assert isinstance(proto.greeted.result, ProtocolError)
    assert "not an agenda node" in str(proto.greeted.result)


# -- against a real node ---------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node("client", tmp_path_factory.mktemp("client-node")) as node:
        yield node


@pytest.fixture
def servers(node):
    return [f"127.0.0.1:{node.port}"]


@pytest_twisted.async_yield_fixture()
async def client(servers):
    client = AgendaClient(servers, reactor)
    yield client
    await client.close()


@pytest_twisted.ensureDeferred
async def test_every_command_on_a_real_node(client, node):
    name = unique("Maria da Silva")
    assert await client.add(name, "+55 11 91234-5678", email="m@example.com") == name
    assert await client.get(name.upper()) == Contact(
        name, "+55 11 91234-5678", "m@example.com"
    )
    assert Contact(name, "+55 11 91234-5678", "m@example.com") in await client.list()
    assert [c.name for c in await client.find(name[-8:])] == [name]
    # Digits however typed find the number.
    assert name in [c.name for c in await client.find("11 91234-5678")]
    assert await client.update(name, email="", note="likes tea") == name
    assert await client.get(name) == Contact(name, "+55 11 91234-5678", "", "likes tea")
    assert await client.remove(name) == name
    with pytest.raises(NotFound):
        await client.get(name)
    status = await client.status()
    assert status.fields["node"] == client.node_id
    assert int(status.fields["contacts"]) >= 0
    assert any("WATCH" in line for line in await client.help())
    assert client.address == Address("127.0.0.1", node.port)


@pytest_twisted.ensureDeferred
async def test_names_with_any_characters_work(client):
    names = [f"{n} {unique()}" for n in ODD_NAMES]
    for name in names:
        await client.add(name, "123 456", note="a=b c:d")
    listed = {c.name: c for c in await client.list()}
    for name in names:
        # The node trims outer spaces; anything inside the name stays.
        assert name.strip() in listed
        got = await client.get(name)
        assert got.note == "a=b c:d"
        await client.update(name, phone="654 321")
        assert (await client.get(name)).phone == "654 321"
        await client.remove(name)
    remaining = {c.name for c in await client.list()}
    assert not remaining & set(names)


@pytest_twisted.ensureDeferred
async def test_refusals_raise_clear_exceptions(client):
    name = unique("Taken")
    await client.add(name, "123 456")
    with pytest.raises(Exists, match="exists"):
        await client.add(name.lower(), "999 999")
    with pytest.raises(BadRequest, match="phone"):
        await client.add(unique("Bad"), "call me")
    with pytest.raises(BadRequest, match="email"):
        await client.update(name, email="not-an-email")
    with pytest.raises(NotFound, match="no contact named"):
        await client.remove(unique("Nobody"))
    with pytest.raises(BadRequest, match="nothing to update"):
        await client.update(name)
    with pytest.raises(UnknownCommand):
        await client.request("FROBNICATE")
    # The connection is still good after every refusal.
    assert (await client.get(name)).phone == "123 456"


@pytest_twisted.ensureDeferred
async def test_many_pipelined_requests_each_get_their_own_reply(client):
    names = [unique("Bulk") for _ in range(60)]
    await defer.gatherResults([client.add(n, "123 456") for n in names])
    got = await defer.gatherResults([client.get(n) for n in names])
    assert [c.name for c in got] == names


# -- failover ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_down_node_is_skipped_for_the_next(node):
    dead = free_port()
    statuses = []
    client = AgendaClient(
        [f"127.0.0.1:{dead}", f"127.0.0.1:{node.port}"],
        reactor,
        on_status=statuses.append,
    )
    try:
        await client.list()
        assert client.address == Address("127.0.0.1", node.port)
        assert [s.message for s in statuses] == [
            f"connecting to 127.0.0.1:{dead}…",
            f"connecting to 127.0.0.1:{node.port}…",
        ]
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_no_node_reachable_names_each_node_and_its_problem():
    ports = [free_port(), free_port()]
    client = AgendaClient([f"127.0.0.1:{p}" for p in ports], reactor)
    with pytest.raises(ConnectionFailed) as caught:
        await client.list()
    assert str(caught.value) == (
        f"no node reachable (127.0.0.1:{ports[0]}: connection refused; "
        f"127.0.0.1:{ports[1]}: connection refused)"
    )


class _Misbehaving(protocol.Protocol):
    """Greets like a node, then: closes on a request, or never answers."""

    def connectionMade(self):
        greeting = self.factory.greeting
        self.transport.write(greeting.encode() + b"\r\n")

    def dataReceived(self, data):
        self.factory.received.append(data)
        if self.factory.behaviour == "close":
            self.transport.loseConnection()
        elif self.factory.behaviour == "hang after WATCH" and self.factory.received == [
            b"WATCH\n"
        ]:
            # Watching, then never a word again (a node stopped with SIGSTOP).
            self.transport.write(b"OK watching\r\n")


@pytest.fixture
def misbehaving():
    ports = []

    def listen(behaviour, greeting="OK agenda 0.1.0 node=fake"):
        factory = protocol.Factory.forProtocol(_Misbehaving)
        factory.behaviour, factory.greeting, factory.received = behaviour, greeting, []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return factory, f"127.0.0.1:{port.getHost().port}"

    yield listen
    for port in ports:
        port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_read_cut_off_is_sent_again_to_the_next_node(node, misbehaving):
    factory, closing = misbehaving("close")
    client = AgendaClient([closing, f"127.0.0.1:{node.port}"], reactor)
    try:
        name = unique("Read")
        async with _added(node, name):
            assert name in [c.name for c in await client.list()]
        assert factory.received == [b"LIST\n"]
        assert client.address == Address("127.0.0.1", node.port)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_write_cut_off_is_not_repeated_and_says_so(node, misbehaving):
    _, closing = misbehaving("close")
    client = AgendaClient([closing, f"127.0.0.1:{node.port}"], reactor)
    try:
        name = unique("Write")
        with pytest.raises(ConnectionLost, match="may or may not have been made"):
            await client.add(name, "123 456")
        # Not sent twice: the good node never saw it.
        with pytest.raises(NotFound):
            await client.get(name)
        assert client.address == Address("127.0.0.1", node.port)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_hung_node_counts_as_down(node, misbehaving):
    _, silent = misbehaving("silent")
    client = AgendaClient(
        [silent, f"127.0.0.1:{node.port}"], reactor, request_timeout=0.5
    )
    try:
        status = await client.status()
        assert status.fields["node"] == client.node_id != "fake"
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_something_that_is_not_an_agenda_node_is_skipped(node, misbehaving):
    _, ssh = misbehaving("silent", greeting="SSH-2.0-OpenSSH_9.2")
    client = AgendaClient([ssh, f"127.0.0.1:{node.port}"], reactor)
    try:
        await client.list()
        assert client.address == Address("127.0.0.1", node.port)
    finally:
        await client.close()


class _added:
    """Add a contact through another connection for the block's duration."""

    def __init__(self, node, name):
        self.node, self.name = node, name

    async def __aenter__(self):
        with self.node.client() as c:
            c.ok(request_line("ADD", name=self.name, phone="123 456"))

    async def __aexit__(self, *exc):
        with self.node.client() as c:
            c.request(request_line("REMOVE", self.name))


# -- watching --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_watch_streams_changes_made_by_other_clients(client, node):
    events = []
    client.on_event = events.append
    await client.watch()
    name = unique("Watched")
    with node.client() as other:
        other.ok(request_line("ADD", name=name, phone="123 456"))
        other.ok(request_line("UPDATE", name=name, email="w@example.com"))
        other.ok(request_line("REMOVE", name))
    await until(lambda: len([e for e in events if e.contact.name == name]) == 3)
    assert [(e.kind, e.contact) for e in events if e.contact.name == name] == [
        ("added", Contact(name, "123 456")),
        ("updated", Contact(name, "123 456", "w@example.com")),
        ("removed", Contact(name, "123 456", "w@example.com")),
    ]


@pytest_twisted.ensureDeferred
async def test_watching_moves_to_the_next_node_when_its_node_dies(tmp_path):
    first = NodeProcess("first", tmp_path, node_id="first").start()
    second = NodeProcess("second", tmp_path, node_id="second").start()
    first.wait_ready()
    second.wait_ready()
    events, statuses = [], []
    client = AgendaClient(
        [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"],
        reactor,
        on_event=events.append,
        on_status=statuses.append,
    )
    try:
        await client.watch()
        assert client.node_id == "first"
        first.crash()
        # Watching again (not just connected) is what the status reports.
        await until(lambda: statuses[-1].message.startswith("reconnected"))
        messages = [s.message for s in statuses]
        assert any(m.startswith("lost node first at 127.0.0.1:") for m in messages)
        assert messages[-1] == (
            f"reconnected (moved from 127.0.0.1:{first.port}): "
            f"node second at 127.0.0.1:{second.port}"
        )
        with second.client() as other:
            other.ok("ADD Live 123456")
        await until(lambda: events)
        assert events == [Event("added", Contact("Live", "123456"))]

        # Every node down: it keeps trying, and comes back by itself.
        second.stop()
        await until(lambda: "retrying in" in client.last_status.message)
        second.start().wait_ready()
        await until(lambda: statuses[-1].message.startswith("reconnected"))
        with second.client() as other:
            other.ok("REMOVE Live")
        await until(lambda: len(events) == 2)
        assert events[-1].kind == "removed"
    finally:
        await client.close()
        first.stop()
        second.stop()


@pytest_twisted.ensureDeferred
async def test_a_watched_node_that_hangs_is_noticed_and_left(node, misbehaving):
    # Nothing is asked while only watching, so without a heartbeat a hung
    # node went unnoticed: "connected", and no change ever shown again.
    factory, hanging = misbehaving("hang after WATCH")
    events, statuses = [], []
    client = AgendaClient(
        [hanging, f"127.0.0.1:{node.port}"],
        reactor,
        on_event=events.append,
        on_status=statuses.append,
        heartbeat=0.2,
        heartbeat_timeout=0.5,
    )
    try:
        await client.watch()
        assert client.node_id == "fake"
        await until(lambda: statuses[-1].message.startswith("reconnected"), 10)
        messages = [s.message for s in statuses]
        assert f"lost node fake at {hanging} (no reply within 0.5 s)" in messages
        assert messages[-1] == (
            f"reconnected (moved from {hanging}): node {client.node_id} at "
            f"127.0.0.1:{node.port}"
        )
        # The heartbeat was a second WATCH, which a watching node just
        # acknowledges.
        assert factory.received == [b"WATCH\n", b"WATCH\n"]
        name = unique("After")
        async with _added(node, name):
            await until(lambda: any(e.contact.name == name for e in events))
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_the_heartbeat_keeps_a_quiet_watch_where_it_is(client):
    statuses = []
    client.on_status = statuses.append
    client.heartbeat, client.heartbeat_timeout = 0.05, 2.0
    sent = []
    await client.watch()
    statuses.clear()
    protocol = client.protocol
    request = protocol.request
    protocol.request = lambda line: (sent.append(line), request(line))[1]
    await until(lambda: len(sent) >= 5)
    assert set(sent) == {"WATCH"}
    assert statuses == [], "still connected, to the same node"
    assert client.protocol is protocol
