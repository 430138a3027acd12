"""The client line protocol: what a person types in ``nc`` or ``telnet``.

Requests end with ``\\n`` (a trailing ``\\r`` is ignored); replies end with
``\\r\\n``. Arguments split like a POSIX shell and reply values are quoted
the same way. Every request gets its reply in order, even when writes wait
for the disk, so a client may pipeline many requests. The full reference is
docs/protocol.md.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_agenda import __version__, quoting
from twisted_agenda.crdt import Change
from twisted_agenda.journal import JournalUnavailable
from twisted_agenda.model import Contact, InvalidField
from twisted_agenda.node import Exists, Node, NotFound, Unavailable

log = Logger()

MAX_LINE = 16 * 1024
DEFAULT_IDLE_TIMEOUT = 300.0
#: Stop reading from a client with this many replies still waiting.
MAX_PENDING_REPLIES = 2000
#: Changes a watcher may leave unread (while its socket is full) before its
#: WATCH is stopped.
MAX_UNREAD_EVENTS = 10_000

HELP = """\
ADD <name> <phone> [email=<e>] [note=<n>]   add a contact
UPDATE <name> [<phone>] [phone=<p>] [email=<e>] [note=<n>]   change fields ("" clears)
REMOVE <name>                remove a contact
GET <name>                   show one contact
LIST                         every contact, sorted by name
FIND <text>                  contacts whose name, phone or email contain text
WATCH / UNWATCH              stream changes from every node as EVENT lines
STATUS                       node, replication and peer state
HELP                         this text
QUIT                         close the connection
Quote values with spaces: ADD "Maria da Silva" "+55 11 91234-5678\""""


#: Commands whose replies (answers or errors like not-found) show the book.
SHOWS_STATE = frozenset({"GET", "LIST", "FIND", "STATUS", "ADD", "UPDATE", "REMOVE"})


class RequestError(Exception):
    """A request the protocol refuses: ``ERR <code> <message>``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def contact_line(contact: Contact, verb: str = "CONTACT") -> str:
    parts = [verb, quoting.quote(contact.name), quoting.quote(contact.phone)]
    parts += [
        f"{f}={quoting.quote(getattr(contact, f))}"
        for f in ("email", "note")
        if getattr(contact, f)
    ]
    return " ".join(parts)


def event_line(change: Change) -> str:
    contact = change.after if change.after is not None else change.before
    assert contact is not None
    return contact_line(contact, f"EVENT {change.kind}")


def parse_fields(args: list[str], positional: tuple[str, ...]) -> dict[str, str]:
    """``name phone email=x`` -> fields; positionals fill ``positional`` in order."""
    fields: dict[str, str] = {}
    slots = list(positional)
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key.isalpha() and key.isascii():
            key = key.lower()  # unknown names are refused by clean_fields
        else:
            # A positional fills the next slot not already named: name=x 123.
            slots = [s for s in slots if s not in fields]
            if not slots:
                raise RequestError("bad-request", f"unexpected argument {arg!r}")
            key, value = slots.pop(0), arg
        if key in fields:
            raise RequestError("bad-request", f"{key} given twice")
        fields[key] = value
    return fields


@implementer(IHalfCloseableProtocol, IPushProducer)
class AgendaLineProtocol(protocol.Protocol, TimeoutMixin):
    def __init__(self) -> None:
        self._buffer = b""
        self._discarding = False
        self._replies: deque[_Slot] = deque()
        self._paused = False  # too many replies waiting for the disk
        self._blocked = False  # the client does not read what we write
        self._unread_events = 0
        self._closing = False
        self._watching = False

    @property
    def node(self) -> Node:
        return self.factory.node

    # -- connection ----------------------------------------------------------

    def connectionMade(self) -> None:
        # The transport tells us (pauseProducing) when the client stops
        # reading: we stop reading its requests, and cap what WATCH queues.
        self.transport.registerProducer(self, True)
        self.setTimeout(self.factory.idle_timeout)
        self._send([f"OK agenda {__version__} node={quoting.quote(self.node.node_id)}"])

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.setTimeout(None)
        self._unwatch()
        self._closing = True

    def readConnectionLost(self) -> None:
        # The client sent all it will (``nc -N``, a script's shutdown): answer
        # what it asked, as after QUIT, instead of dropping pending replies.
        self._closing = True
        if not self._replies:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        self._send(["ERR timeout idle for too long; closing"])
        self.transport.loseConnection()

    # -- framing -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        # Split once per read, not once per line: a 64 KiB read of pipelined
        # requests would otherwise copy the rest of the buffer per line.
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            if self._closing:
                self._buffer = b""
                return
            if self._discarding:
                # The tail of a line that was already answered with too-long.
                self._discarding = False
                continue
            if len(line) > MAX_LINE + line.endswith(b"\r"):
                self._reply(too_long())
                continue
            self._line(line.removesuffix(b"\r"))
        if len(self._buffer) > MAX_LINE + 1 and not self._closing:  # (+ "\r")
            self._buffer = b""
            if not self._discarding:
                self._discarding = True
                self._reply(too_long())

    def _line(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._reply(["ERR bad-request request is not valid UTF-8"])
            return
        if not text.strip():
            return
        self._reply(self._dispatch(text))

    # -- ordered replies -----------------------------------------------------

    def _reply(self, result: list[str] | defer.Deferred) -> None:
        slot = _Slot()
        self._replies.append(slot)
        # (type() first: isinstance on Deferred takes a slow path)
        if type(result) is not list and isinstance(result, defer.Deferred):
            result.addErrback(self._error_lines).addCallback(self._fill, slot)
        else:
            self._fill(result, slot)
        if len(self._replies) > MAX_PENDING_REPLIES and not self._paused:
            self._paused = True
            self._update_reading()

    def _fill(self, lines: list[str], slot: _Slot) -> None:
        slot.lines = lines
        while self._replies and self._replies[0].lines is not None:
            self._send(self._replies.popleft().lines)
        if self._paused and len(self._replies) < MAX_PENDING_REPLIES // 2:
            self._paused = False
            self._update_reading()
        if self._closing and not self._replies and self.connected:
            self.transport.loseConnection()

    def _send(self, lines: list[str]) -> None:
        self.transport.write("".join(line + "\r\n" for line in lines).encode("utf-8"))

    # -- dispatch ------------------------------------------------------------

    def _dispatch(self, text: str) -> list[str] | defer.Deferred:
        try:
            args = quoting.split(text)
        except ValueError as e:
            return [f"ERR bad-request cannot split request: {e}"]
        if not args:
            return []
        verb, args = args[0].upper(), args[1:]
        handler: Callable | None = getattr(self, f"do_{verb}", None)
        if handler is None:
            return [
                f"ERR unknown-command unknown command {quoting.shown(verb)}; try HELP"
            ]
        try:
            result = handler(args)
        except Exception:
            result = self._error_lines(Failure())
        if verb in SHOWS_STATE and type(result) is list and not self.node.journal.idle:
            # Changes applied in memory are not on disk yet: hold this reply
            # until they are, so no reply ever shows a change that a crash
            # could still take back (the rule a write's own OK follows).
            result = self.node.journal.barrier().addCallback(lambda _, r=result: r)
        return result

    def _error_lines(self, failure) -> list[str]:
        error = failure.value
        if isinstance(error, RequestError):
            return [f"ERR {error.code} {error}"]
        if isinstance(error, InvalidField):
            return [f"ERR bad-request {error}"]
        if isinstance(error, NotFound):
            return [f"ERR not-found no contact named {quoting.quote(str(error))}"]
        if isinstance(error, Exists):
            return [f"ERR exists a contact named {quoting.quote(str(error))} exists"]
        if isinstance(error, (JournalUnavailable, Unavailable)):
            return [f"ERR unavailable {error}"]
        log.failure("request failed", failure)
        return ["ERR internal the node failed to handle this request (see its log)"]

    # -- commands ------------------------------------------------------------

    def do_HELP(self, args: list[str]) -> list[str]:
        return [*HELP.splitlines(), "OK help"]

    def do_QUIT(self, args: list[str]) -> list[str]:
        self._closing = True
        return ["OK bye"]

    def do_ADD(self, args: list[str]) -> defer.Deferred:
        fields = parse_fields(args, ("name", "phone"))
        if "name" not in fields or "phone" not in fields:
            raise RequestError("bad-request", "usage: ADD <name> <phone> [email=<e>]")
        d = self.node.add(**fields)
        return d.addCallback(lambda c: [f"OK added {quoting.quote(c.name)}"])

    def do_UPDATE(self, args: list[str]) -> defer.Deferred:
        fields = parse_fields(args, ("name", "phone"))
        name = fields.pop("name", None)
        if name is None or not fields:
            raise RequestError(
                "bad-request", "usage: UPDATE <name> [<phone>] [email=<e>] [note=<n>]"
            )
        d = self.node.update(name, **fields)
        return d.addCallback(lambda c: [f"OK updated {quoting.quote(c.name)}"])

    def do_REMOVE(self, args: list[str]) -> defer.Deferred:
        name = self._one_name(args, "REMOVE")
        contact = self.node.get(name)
        d = self.node.remove(name)
        return d.addCallback(lambda _: [f"OK removed {quoting.quote(contact.name)}"])

    def do_GET(self, args: list[str]) -> list[str]:
        contact = self.node.get(self._one_name(args, "GET"))
        return [contact_line(contact), "OK 1"]

    def do_LIST(self, args: list[str]) -> list[str]:
        if args:
            raise RequestError("bad-request", "LIST takes no arguments; try FIND")
        return self._contact_lines(self.node.contacts())

    def do_FIND(self, args: list[str]) -> list[str]:
        text = " ".join(args)
        if not text.strip():  # FIND "" would be LIST
            raise RequestError("bad-request", "usage: FIND <text>")
        return self._contact_lines(self.node.find(text))

    def do_WATCH(self, args: list[str]) -> list[str]:
        if not self._watching:
            self._watching = True
            self.node.watchers.add(self._event)
            # A watcher is quiet by design: it must not time out.
            self.setTimeout(None)
        return ["OK watching"]

    def do_UNWATCH(self, args: list[str]) -> list[str]:
        self._unwatch()
        self.setTimeout(self.factory.idle_timeout)
        return ["OK unwatched"]

    def do_STATUS(self, args: list[str]) -> list[str]:
        return [*self.factory.status(), "OK status"]

    # -- helpers -------------------------------------------------------------

    def _one_name(self, args: list[str], verb: str) -> str:
        if len(args) != 1:
            raise RequestError("bad-request", f"usage: {verb} <name>")
        return args[0]

    def _contact_lines(self, contacts: list[Contact]) -> list[str]:
        return [*(contact_line(c) for c in contacts), f"OK {len(contacts)}"]

    def _event(self, change: Change) -> None:
        if self._blocked:
            self._unread_events += 1
            if self._unread_events > MAX_UNREAD_EVENTS:
                # A watcher that never reads would hold the node's memory.
                # An EVENT line, not an ERR: it arrives between replies, and
                # a client must not take it for the reply to a request.
                self._unwatch()
                self._send(
                    [
                        f"EVENT overflow {MAX_UNREAD_EVENTS} changes unread; "
                        "WATCH stopped (send WATCH again, then LIST to resync)"
                    ]
                )
                return
        self._send([event_line(change)])

    # -- flow control (IPushProducer, driven by the transport) -----------------

    def pauseProducing(self) -> None:
        self._blocked = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._blocked = False
        self._unread_events = 0
        self._update_reading()

    def stopProducing(self) -> None:
        self._unwatch()

    def _update_reading(self) -> None:
        if self.transport is None or not self.connected:
            return
        if self._paused or self._blocked:
            self.transport.pauseProducing()
        else:
            self.transport.resumeProducing()

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self.node.watchers.discard(self._event)


def too_long() -> list[str]:
    return [f"ERR too-long request longer than {MAX_LINE} bytes; ignored"]


class _Slot:
    """A reply's place in line; ``lines`` is None until the reply is ready."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines: list[str] | None = None


class AgendaLineFactory(protocol.Factory):
    protocol = AgendaLineProtocol
    noisy = False

    def __init__(
        self,
        node: Node,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        status: Callable[[], list[str]] | None = None,
        clock=None,
    ) -> None:
        self.node = node
        self.idle_timeout = idle_timeout
        self.status = status or (lambda: basic_status(node))
        self.clock = clock

    def buildProtocol(self, addr):
        p = super().buildProtocol(addr)
        if self.clock is not None:
            p.callLater = self.clock.callLater
        return p


def basic_status(node: Node) -> list[str]:
    """STATUS lines about the node itself (the cluster adds one per peer)."""
    vv = ",".join(f"{o}:{s}" for o, s in sorted(node.replica.vv.items()))
    lines = [
        f"node={quoting.quote(node.node_id)}",
        f"version={__version__}",
        f"contacts={len(node.replica)}",
        f"vv={vv or '-'}",
    ]
    if node.default_region:
        # Clients compare phone numbers typed locally with the same region.
        lines.append(f"default_region={node.default_region}")
    return lines
