"""A client for the agenda line protocol, on Twisted, with failover.

::

    client = AgendaClient(parse_servers("127.0.0.1:9010,127.0.0.1:9011"))
    await client.add("Maria da Silva", "+55 11 91234-5678")
    for contact in await client.list():
        ...

Every command returns a Deferred; an ``ERR`` reply becomes the matching
``AgendaError`` subclass (``NotFound``, ``Exists``, ``BadRequest``...).
When a node cannot be reached the client tries the next one in the list.
A read that was cut off is retried on the next node; a write that was cut
off is not (the node may have made it), it fails with ``ConnectionLost``.

After ``watch()`` the client stays connected: it reconnects (trying the
other nodes too) whenever the connection drops, watches again and reports
each step to ``on_status`` so a window can say what happened.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from attrs import define, field, frozen
from twisted.internet import defer, error
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
)
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from twisted_agenda import quoting
from twisted_agenda.model import FIELDS, OPTIONAL_FIELDS, Contact

log = Logger()

DEFAULT_PORT = 9010
#: The local three-node cluster of tap-configs/cluster.sh.
DEFAULT_SERVERS = "127.0.0.1:9010,127.0.0.1:9011,127.0.0.1:9012"
#: Seconds to wait for a TCP connection and the node's greeting.
CONNECT_TIMEOUT = 5.0
#: Seconds a request may wait for its reply before the node counts as hung.
REQUEST_TIMEOUT = 30.0
#: Seconds between rounds of reconnection when every node is down (capped).
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)
#: Seconds between heartbeats on a watching connection, and the longest a
#: heartbeat may wait for its reply (capped by the request timeout).
HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TIMEOUT = 10.0


# -- addresses -----------------------------------------------------------------


@frozen
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """``host``, ``host:port`` or ``[v6]:port`` -> Address; ValueError if not."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else rest
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not host:port")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        # No colon: a bare host. Several: a bare IPv6 address.
        host, port = text, ""
    if not host:
        raise ValueError(f"{text!r} is not host:port (the host is missing)")
    if not port:
        return Address(host, default_port)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number 1-65535")
    return Address(host, int(port))


def parse_servers(text: str) -> list[Address]:
    """``"h1:9010, h2:9011"`` -> addresses; ValueError naming the bad one."""
    items = [item for item in text.replace(",", " ").split() if item]
    if not items:
        raise ValueError("no server given: use host:port, comma-separated")
    return [parse_address(item) for item in items]


# -- errors --------------------------------------------------------------------


class AgendaError(Exception):
    """An ``ERR <code> <message>`` reply, or a failure to talk to any node."""

    code = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(AgendaError):
    code = "bad-request"


class UnknownCommand(AgendaError):
    code = "unknown-command"


class NotFound(AgendaError):
    code = "not-found"


class Exists(AgendaError):
    code = "exists"


class TooLong(AgendaError):
    code = "too-long"


class Unavailable(AgendaError):
    code = "unavailable"


class InternalError(AgendaError):
    code = "internal"


class IdleTimeout(AgendaError):
    code = "timeout"


class ProtocolError(AgendaError):
    """The peer does not speak the agenda protocol (or broke it)."""

    code = "protocol"


class ConnectionFailed(AgendaError):
    """No node in the list could be reached; the message names each one."""

    code = "connection"


class ConnectionLost(AgendaError):
    """The connection dropped while a request waited for its reply."""

    code = "connection-lost"


ERRORS: dict[str, type[AgendaError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        UnknownCommand,
        NotFound,
        Exists,
        TooLong,
        Unavailable,
        InternalError,
        IdleTimeout,
    )
}


def error_from_line(line: str) -> AgendaError:
    """``ERR not-found no contact named x`` -> NotFound("no contact named x")."""
    _, _, rest = line.partition(" ")
    code, _, message = rest.partition(" ")
    cls = ERRORS.get(code, AgendaError)
    return cls(message or code or "error", code=code or None)


# -- parsing -------------------------------------------------------------------


@frozen
class Event:
    """A change from WATCH: ``kind`` is added, updated or removed."""

    kind: str
    contact: Contact


def _split(line: str) -> list[str]:
    try:
        return quoting.split(line)
    except ValueError as e:
        raise ProtocolError(f"cannot read reply {line!r}: {e}") from None


def _contact(tokens: list[str], line: str) -> Contact:
    if len(tokens) < 2:
        raise ProtocolError(f"contact without a name: {line!r}")
    values = {"name": tokens[0], "phone": tokens[1] if len(tokens) > 1 else ""}
    for token in tokens[2:]:
        key, eq, value = token.partition("=")
        # Fields a newer node may add are ignored, not fatal.
        if eq and key in OPTIONAL_FIELDS:
            values[key] = value
    return Contact(**values)


def parse_contact(line: str) -> Contact:
    """``CONTACT <name> <phone> [email=..] [note=..]`` -> Contact."""
    tokens = _split(line)
    if not tokens or tokens[0] != "CONTACT":
        raise ProtocolError(f"expected a CONTACT line, got {line!r}")
    return _contact(tokens[1:], line)


def parse_event(line: str) -> Event:
    """``EVENT <kind> <name> <phone> [email=..] [note=..]`` -> Event."""
    tokens = _split(line)
    if len(tokens) < 3 or tokens[0] != "EVENT":
        raise ProtocolError(f"expected an EVENT line, got {line!r}")
    return Event(tokens[1], _contact(tokens[2:], line))


@frozen
class NodeStatus:
    """A STATUS reply: the node's own ``key=value`` fields, and its peers."""

    fields: dict[str, str]
    #: One dict per ``peer=<address> node=.. state=..`` line.
    peers: list[dict[str, str]]


def parse_status(lines: Iterable[str]) -> NodeStatus:
    """STATUS body lines -> NodeStatus (fields in the node's order)."""
    fields: dict[str, str] = {}
    peers = []
    for line in lines:
        words = {}
        for word in _split(line):
            key, _, value = word.partition("=")
            words[key] = value
        if "peer" in words:
            peers.append(words)
        else:
            fields.update(words)
    return NodeStatus(fields, peers)


def parse_greeting(line: str) -> str:
    """``OK agenda <version> node=<id>`` -> the node id."""
    tokens = _split(line)
    if tokens[:2] != ["OK", "agenda"]:
        raise ProtocolError(f"not an agenda node (it said {line[:80]!r})")
    for token in tokens[2:]:
        key, eq, value = token.partition("=")
        if eq and key == "node":
            return value
    return "?"


def is_final(line: str) -> bool:
    """Whether a line ends a reply (``OK ...`` or ``ERR ...``)."""
    word = line.split(" ", 1)[0]
    return word in ("OK", "ERR")


def request_line(verb: str, *args: str, **fields: str | None) -> str:
    """A request with every value quoted; fields given as None are left out.

    Names and phones go as ``name=`` / ``phone=`` fields, so that a name
    like ``Ana=Bia`` is never read as a field called "ana".
    """
    parts = [verb, *(quoting.quote(a) for a in args)]
    parts += [f"{k}={quoting.quote(v)}" for k, v in fields.items() if v is not None]
    line = " ".join(parts)
    if "\n" in line or "\r" in line:
        raise BadRequest("values must be one line (no line breaks)")
    return line


def _ok_value(line: str) -> str:
    """``OK added "Maria da Silva"`` -> ``Maria da Silva``."""
    tokens = _split(line)
    return tokens[2] if len(tokens) > 2 else ""


# -- the protocol --------------------------------------------------------------


@define
class _Pending:
    deferred: defer.Deferred
    lines: list[str] = field(factory=list)


class AgendaProtocol(LineOnlyReceiver):
    """One connection: requests in order, replies matched in order.

    ``greeted`` fires with the node id; ``lost`` fires when the connection
    ends. EVENT lines go to ``on_event`` whenever they come.
    """

    delimiter = b"\r\n"
    # A contact line is a few KiB at most; this only guards against garbage.
    MAX_LENGTH = 1 << 20

    def __init__(self, on_event: Callable[[Event], Any] | None = None) -> None:
        self.on_event = on_event
        self.node_id: str | None = None
        self.greeted: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()
        self.connected_ = False
        self._pending: deque[_Pending] = deque()
        self._last_error: str | None = None

    def connectionMade(self) -> None:
        self.connected_ = True

    def lineReceived(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace")
        if not self.greeted.called:
            try:
                self.node_id = parse_greeting(line)
            except AgendaError as e:
                self.greeted.errback(e)
                self.transport.loseConnection()
                return
            self.greeted.callback(self.node_id)
            return
        if line.startswith("EVENT overflow"):
            # We fell 10,000 changes behind and the node stopped our WATCH:
            # start over on a fresh connection (re-WATCH, reload) rather than
            # show a book with holes in it.
            log.warn(
                "node {node} stopped our WATCH: {line}", node=self.node_id, line=line
            )
            self.transport.loseConnection()
            return
        if line.startswith("EVENT "):
            self._event(line)
            return
        if not self._pending:
            # Only an unsolicited goodbye, e.g. "ERR timeout idle ...".
            self._last_error = line
            log.debug("unsolicited line from node: {line}", line=line)
            return
        pending = self._pending[0]
        pending.lines.append(line)
        if is_final(line):
            self._pending.popleft()
            if line.startswith("OK"):
                pending.deferred.callback(pending.lines)
            else:
                pending.deferred.errback(error_from_line(line))

    def _event(self, line: str) -> None:
        try:
            event = parse_event(line)
        except AgendaError:
            log.failure("bad EVENT line {line!r}", line=line)
            return
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.failure("event handler failed on {line!r}", line=line)

    def request(self, line: str) -> defer.Deferred:
        """Send one request; fires with its lines (the last is ``OK ...``)."""
        if not self.connected_:
            return defer.fail(ConnectionLost("not connected"))
        pending = _Pending(defer.Deferred())
        self._pending.append(pending)
        # Requests end with "\n" only: the node accepts both, netcat-style.
        self.transport.write(line.encode("utf-8") + b"\n")
        return pending.deferred

    def lineLengthExceeded(self, line: bytes) -> None:
        self._last_error = "the node sent a line too long to be a reply"
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:
        self.connected_ = False
        why = self._last_error or "the connection closed"
        pending, self._pending = self._pending, deque()
        # The client learns of the loss first, so that a request retried
        # from the errbacks below goes to the next node, not this one again.
        self.lost.callback(why)
        for p in pending:
            p.deferred.errback(ConnectionLost(why))
        if not self.greeted.called:
            self.greeted.errback(ConnectionLost(f"closed before greeting: {why}"))


# -- the client ----------------------------------------------------------------


@frozen
class Status:
    """Where the client stands, for a status bar: ``state`` + a sentence."""

    state: str  # "connecting", "connected", "disconnected" or "closed"
    message: str
    address: Address | None = None
    node_id: str | None = None


def _endpoint(reactor: Any, address: Address, timeout: float):
    """A TCP endpoint; IP addresses skip the resolver (and its threads)."""
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        return HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
    if ip.version == 6:
        return TCP6ClientEndpoint(reactor, address.host, address.port, timeout)
    return TCP4ClientEndpoint(reactor, address.host, address.port, timeout)


def _deferred(method):
    """Let an ``async def`` method return a Deferred, Twisted-style."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs) -> defer.Deferred:
        return defer.ensureDeferred(method(*args, **kwargs))

    return wrapper


def _describe(failure_or_error: Any) -> str:
    value = getattr(failure_or_error, "value", failure_or_error)
    if isinstance(value, AgendaError):
        return value.message
    if isinstance(value, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, (error.TimeoutError, defer.TimeoutError)):
        return "no answer (timed out)"
    if isinstance(value, error.DNSLookupError):
        return "unknown host"
    text = str(value).strip()
    return text or type(value).__name__


class AgendaClient:
    """The nodes in ``servers``, as one: commands, failover, watching."""

    def __init__(
        self,
        servers: Iterable[Address | str],
        reactor: Any = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        request_timeout: float | None = REQUEST_TIMEOUT,
        on_event: Callable[[Event], Any] | None = None,
        on_status: Callable[[Status], Any] | None = None,
        heartbeat: float | None = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.servers = [
            s if isinstance(s, Address) else parse_address(s) for s in servers
        ]
        if not self.servers:
            raise ValueError("no server given")
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.on_event = on_event
        self.on_status = on_status
        self.protocol: AgendaProtocol | None = None
        self.address: Address | None = None
        self._index = 0
        self._waiters: list[defer.Deferred] = []
        self.last_status: Status | None = None
        self._watching = False
        self._closed = False
        self._retry_call = None
        self._retries = 0
        #: Seconds between heartbeats while watching (None: none).
        self.heartbeat = heartbeat
        if heartbeat_timeout is None:
            heartbeat_timeout = min(
                request_timeout or HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT
            )
        self.heartbeat_timeout = heartbeat_timeout
        self._heartbeat_call = None

    # -- connection --------------------------------------------------------

    @property
    def node_id(self) -> str | None:
        return self.protocol.node_id if self.protocol else None

    @property
    def connected(self) -> bool:
        return self.protocol is not None and self.protocol.connected_

    def connect(self) -> defer.Deferred:
        """Connect to the first node that answers; fires with its node id.

        Starts with the node in use (or the first), then tries the others in
        order. Fails with ConnectionFailed, naming each node and its problem.
        """
        if self.connected:
            return defer.succeed(self.node_id)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        if len(self._waiters) == 1:
            # One attempt at a time; everyone waiting shares its outcome.
            defer.ensureDeferred(self._connect()).addBoth(self._connected)
        return d

    def _connected(self, result: Any) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(result)

    async def _connect(self) -> str:
        if self._closed:
            raise ConnectionFailed("the client is closed")
        problems = []
        for step in range(len(self.servers)):
            address = self.servers[(self._index + step) % len(self.servers)]
            self._status("connecting", f"connecting to {address}…", address)
            try:
                protocol = await self._open(address)
            except Exception as e:
                problems.append(f"{address}: {_describe(e)}")
                log.info("cannot use {address}: {why}", address=address, why=e)
                continue
            if self._closed:
                protocol.transport.loseConnection()
                raise ConnectionFailed("the client is closed")
            self._index = (self._index + step) % len(self.servers)
            self.protocol, self.address = protocol, address
            protocol.lost.addCallback(self._lost, protocol, address)
            return protocol.node_id
        raise ConnectionFailed("no node reachable (" + "; ".join(problems) + ")")

    async def _open(self, address: Address) -> AgendaProtocol:
        endpoint = _endpoint(self.reactor, address, self.connect_timeout)
        protocol = AgendaProtocol(on_event=self._event)
        await connectProtocol(endpoint, protocol)
        greeted = protocol.greeted
        greeted.addTimeout(self.connect_timeout, self.reactor)
        try:
            await greeted
        except Exception:
            protocol.transport.abortConnection()
            raise
        return protocol

    def _lost(self, why: str, protocol: AgendaProtocol, address: Address) -> None:
        if protocol is not self.protocol:
            return
        self.protocol = None
        if not why.startswith("ERR timeout"):
            # The next attempt starts with the node after the one that failed
            # (a node that only closed an idle connection is still fine).
            self._index = (self._index + 1) % len(self.servers)
        if self._closed:
            return
        node = protocol.node_id or "?"
        self._status(
            "disconnected", f"lost node {node} at {address} ({why})", address, node
        )
        if self._watching:
            self._reconnect_soon(0)

    def _reconnect_soon(self, delay: float) -> None:
        if self._retry_call is None or not self._retry_call.active():
            self._retry_call = self.reactor.callLater(delay, self._rewatch)

    def _rewatch(self) -> None:
        self._retry_call = None
        if self._closed or not self._watching or self.connected:
            return
        previous = self.address
        d = defer.ensureDeferred(self._watch_again(previous))
        d.addErrback(self._rewatch_failed)

    async def _watch_again(self, previous: Address | None) -> None:
        await self.connect()
        await self._request("WATCH", retry=False)
        self._retries = 0
        self._beat_soon()
        moved = previous is not None and previous != self.address
        how = f"reconnected (moved from {previous})" if moved else "reconnected"
        self._status(
            "connected",
            f"{how}: node {self.node_id} at {self.address}",
            self.address,
            self.node_id,
        )

    # A watching connection is quiet by design, so a node that hangs (stopped,
    # swapped out, a dead link that TCP has not noticed) would go unnoticed:
    # the client would say "connected" and show no change ever again. Every
    # ``heartbeat`` seconds it sends WATCH again, which a watching node
    # answers at once with "OK watching" and nothing else (docs/protocol.md:
    # "WATCH twice is the same as once"); no reply within
    # ``heartbeat_timeout`` counts as the node being down, so the client
    # moves to the next node, as when the connection drops.

    def _beat_soon(self) -> None:
        if self.heartbeat is None or self._closed or not self._watching:
            return
        if self._heartbeat_call is not None and self._heartbeat_call.active():
            self._heartbeat_call.cancel()
        self._heartbeat_call = self.reactor.callLater(self.heartbeat, self._beat)

    def _beat(self) -> None:
        self._heartbeat_call = None
        protocol = self.protocol
        if self._closed or not self._watching or protocol is None:
            return
        if not protocol.connected_:
            return  # the loss is on its way, and with it a new WATCH
        d = protocol.request("WATCH")
        d.addTimeout(self.heartbeat_timeout, self.reactor, self._hung(protocol))

        def answered(_: Any) -> None:
            if protocol is self.protocol:
                self._beat_soon()

        def failed(failure: Failure) -> None:
            # Lost (or hung, which counts as lost): reconnecting is under
            # way and starts the heartbeat again. An ERR reply (a node that
            # stopped our WATCH) is a reason to start over, the same way.
            failure.trap(AgendaError)
            if protocol is self.protocol and not failure.check(ConnectionLost):
                log.info("heartbeat refused: {why}", why=_describe(failure))
                protocol.transport.loseConnection()

        d.addCallbacks(answered, failed)

    def _rewatch_failed(self, failure: Failure) -> None:
        if self._closed or not self._watching:
            return
        delay = RETRY_DELAYS[min(self._retries, len(RETRY_DELAYS) - 1)]
        self._retries += 1
        self._status(
            "disconnected",
            f"{_describe(failure)}; retrying in {delay:g} s",
        )
        self._reconnect_soon(delay)

    def _status(
        self,
        state: str,
        message: str,
        address: Address | None = None,
        node_id: str | None = None,
    ) -> None:
        self.last_status = Status(state, message, address, node_id)
        if self.on_status is not None:
            try:
                self.on_status(self.last_status)
            except Exception:
                log.failure("status handler failed")

    def _event(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def close(self) -> defer.Deferred:
        """Stop watching and reconnecting; close politely. Fires when closed."""
        self._closed = True
        self._watching = False
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        if self._heartbeat_call is not None and self._heartbeat_call.active():
            self._heartbeat_call.cancel()
        protocol, self.protocol = self.protocol, None
        if protocol is None or not protocol.connected_:
            return defer.succeed(None)
        protocol.transport.loseConnection()
        return protocol.lost.addBoth(lambda _: None)

    # -- requests ----------------------------------------------------------

    async def _request(self, line: str, retry: bool) -> list[str]:
        """Send on the current node (connecting if needed).

        ``retry``: the request changes nothing, so if the connection drops
        before its reply it is sent again to the next node.
        """
        attempts = len(self.servers) if retry else 1
        for attempt in range(attempts):
            await self.connect()
            protocol = self.protocol
            if protocol is None:
                raise ConnectionLost("the connection closed as it opened")
            d = protocol.request(line)
            if self.request_timeout is not None:
                d.addTimeout(self.request_timeout, self.reactor, self._hung(protocol))
            try:
                return await d
            except ConnectionLost as e:
                if attempt + 1 == attempts:
                    if retry:
                        raise
                    raise ConnectionLost(
                        f"lost node {protocol.node_id} before it answered ({e}); "
                        "the change may or may not have been made"
                    ) from None
        raise AssertionError("unreachable")

    def _hung(self, protocol: AgendaProtocol):
        def on_timeout(result, timeout):
            # A node that stopped answering is as good as down.
            why = f"no reply within {timeout:g} s"
            protocol._last_error = why
            protocol.connected_ = False
            protocol.transport.abortConnection()
            # Give up on it now, not when the abort is done: a retry must
            # not pick the same node again.
            if self.address is not None:
                self._lost(why, protocol, self.address)
            return Failure(ConnectionLost(why))

        return on_timeout

    @_deferred
    async def request(self, line: str) -> list[str]:
        """A raw request line; fires with the reply lines (last is ``OK``)."""
        verb = line.split(" ", 1)[0].upper()
        return await self._request(line, retry=verb in _READS)

    @_deferred
    async def list(self) -> list[Contact]:
        lines = await self._request("LIST", retry=True)
        return [parse_contact(line) for line in lines[:-1]]

    @_deferred
    async def find(self, text: str) -> list[Contact]:
        lines = await self._request(request_line("FIND", text), retry=True)
        return [parse_contact(line) for line in lines[:-1]]

    @_deferred
    async def get(self, name: str) -> Contact:
        lines = await self._request(request_line("GET", name), retry=True)
        return parse_contact(lines[0])

    @_deferred
    async def add(
        self, name: str, phone: str, email: str | None = None, note: str | None = None
    ) -> str:
        """Add a contact; fires with its name as the node stored it."""
        line = request_line("ADD", name=name, phone=phone, email=email, note=note)
        return _ok_value((await self._request(line, retry=False))[-1])

    @_deferred
    async def update(
        self,
        name: str,
        phone: str | None = None,
        email: str | None = None,
        note: str | None = None,
    ) -> str:
        """Change the given fields ("" clears email or note)."""
        if phone is None and email is None and note is None:
            raise BadRequest("nothing to update: give a phone, email or note")
        line = request_line("UPDATE", name=name, phone=phone, email=email, note=note)
        return _ok_value((await self._request(line, retry=False))[-1])

    @_deferred
    async def remove(self, name: str) -> str:
        line = request_line("REMOVE", name)
        return _ok_value((await self._request(line, retry=False))[-1])

    @_deferred
    async def status(self) -> NodeStatus:
        lines = await self._request("STATUS", retry=True)
        return parse_status(lines[:-1])

    @_deferred
    async def help(self) -> list[str]:
        return (await self._request("HELP", retry=True))[:-1]

    @_deferred
    async def watch(self) -> str:
        """Stream changes to ``on_event``, across reconnections, until close."""
        self._watching = True
        await self._request("WATCH", retry=True)
        self._beat_soon()
        self._status(
            "connected",
            f"connected to node {self.node_id} at {self.address}",
            self.address,
            self.node_id,
        )
        return self.node_id or "?"

    @_deferred
    async def unwatch(self) -> None:
        self._watching = False
        if self._heartbeat_call is not None and self._heartbeat_call.active():
            self._heartbeat_call.cancel()
        if self.connected:
            await self._request("UNWATCH", retry=False)


_READS = frozenset({"LIST", "FIND", "GET", "STATUS", "HELP", "WATCH", "UNWATCH"})

__all__ = [
    "ERRORS",
    "FIELDS",
    "Address",
    "AgendaClient",
    "AgendaError",
    "AgendaProtocol",
    "BadRequest",
    "ConnectionFailed",
    "ConnectionLost",
    "Event",
    "Exists",
    "IdleTimeout",
    "InternalError",
    "NodeStatus",
    "NotFound",
    "ProtocolError",
    "Status",
    "TooLong",
    "Unavailable",
    "UnknownCommand",
    "error_from_line",
    "parse_address",
    "parse_contact",
    "parse_event",
    "parse_servers",
    "parse_status",
    "request_line",
]
