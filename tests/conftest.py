"""Shared fixtures: in-memory nodes driven by a Clock, and real node processes.

In memory (``agenda`` fixture): a real ``Node`` on a real data folder, whose
journal writes run through ``runner`` (synchronous by default, or held until
released, or failing) and whose timers run on a ``task.Clock``. Connections
are ``StringTransport``s; nothing touches the network or sleeps.

Real processes (``spawn_node`` fixture): see ``nodeproc.py``. Every process
a test starts is stopped at teardown, and when the test fails each node's log
is attached to the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings
from nodeproc import NodeProcess
from twisted.internet import defer, error, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twisted_agenda.datadir import DataDir
from twisted_agenda.lineproto import AgendaLineFactory, AgendaLineProtocol
from twisted_agenda.node import Node

# Timing is the benchmarks' job (bench/), never a test's: the machines that
# run the tests are shared and noisy, so Hypothesis sets no deadline.
settings.register_profile("agenda", deadline=None)
settings.load_profile("agenda")


# -- in-memory nodes ----------------------------------------------------------


class Runner:
    """``run_blocking`` for tests.

    Runs each call at once (like a writer thread that is never slow), or,
    while ``holding``, keeps calls until ``release()`` (a slow disk), or,
    when ``failing`` is set, fails them with it (a broken disk).
    """

    def __init__(self) -> None:
        self.holding = False
        self.failing: Exception | None = None
        self.held: list[tuple[Callable, tuple, defer.Deferred]] = []
        self.calls = 0

    def __call__(self, f: Callable, *args: Any) -> defer.Deferred:
        self.calls += 1
        if self.failing is not None:
            return defer.fail(self.failing)
        if self.holding:
            d: defer.Deferred = defer.Deferred()
            self.held.append((f, args, d))
            return d
        return defer.maybeDeferred(f, *args)

    def release(self) -> int:
        """Run every held call in order (and any they cause); how many ran."""
        ran = 0
        while self.held:
            f, args, d = self.held.pop(0)
            defer.maybeDeferred(f, *args).chainDeferred(d)
            ran += 1
        return ran


class Conn:
    """One client connection to an in-memory node, over a StringTransport."""

    def __init__(self, factory: AgendaLineFactory, clock: task.Clock) -> None:
        self.clock = clock
        self.proto: AgendaLineProtocol = factory.buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 40000)
        )
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)
        )
        self.proto.makeConnection(self.transport)
        self.greeting = self.lines()

    def send(self, data: bytes | str, settle: bool = True) -> None:
        """Feed bytes to the protocol, then let the reactor turn (group commit)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.proto.dataReceived(data)
        if settle:
            self.clock.advance(0)

    def raw(self) -> bytes:
        """Everything written since the last read."""
        out = self.transport.value()
        self.transport.clear()
        return out

    def lines(self) -> list[str]:
        """The reply lines written since the last read; each ended by CRLF."""
        out = self.raw()
        if not out:
            return []
        assert out.endswith(b"\r\n"), out
        text = out.decode("utf-8")
        lines = text[:-2].split("\r\n")
        assert not any("\r" in line or "\n" in line for line in lines), out
        return lines

    def request(self, line: str) -> list[str]:
        self.send(line + "\n")
        return self.lines()

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    def lose(self) -> None:
        """The client goes away (connectionLost as the reactor would call it)."""
        self.transport.loseConnection()
        self.proto.connectionLost(Failure(error.ConnectionDone()))


class InMemoryAgenda:
    """A node in ``path`` on a Clock, restartable as if the process restarted."""

    def __init__(self, path: str, node_id: str = "a1", **node_kw: Any) -> None:
        self.path = path
        self.node_id = node_id
        self.node_kw = node_kw
        self.clock: task.Clock
        self.runner: Runner
        self.conns: list[Conn] = []
        self.datadir: DataDir | None = None
        self.node: Node = self.open()

    def open(self) -> Node:
        # A fresh reactor and writer per start: nothing of the last one runs.
        self.clock = task.Clock()
        self.runner = Runner()
        self.datadir = DataDir(self.path)
        self.datadir.open()
        self.node = Node(
            self.node_id,
            self.datadir,
            reactor=self.clock,
            run_blocking=self.runner,
            **self.node_kw,
        )
        return self.node

    def settle(self) -> None:
        """One reactor turn: the journal's group commit runs."""
        self.clock.advance(0)

    def close(self) -> None:
        """Flush and let go of the folder, like a clean shutdown."""
        for conn in self.conns:
            if not conn.closed:
                conn.lose()
        self.conns.clear()
        self.runner.holding = False
        self.runner.release()
        d = self.node.close()
        self.settle()
        self.runner.release()
        assert d.called
        assert self.datadir is not None
        self.datadir.close()

    def crash(self) -> None:
        """Stop without flushing: whatever was not fsync'd is lost."""
        for conn in self.conns:
            if not conn.closed:
                conn.lose()
        self.conns.clear()
        self.runner.held.clear()
        os.close(self.node.journal._fd)
        assert self.datadir is not None
        self.datadir.close()

    def restart(self, crash: bool = False) -> Node:
        if crash:
            self.crash()
        else:
            self.close()
        return self.open()

    def factory(self, idle_timeout: float | None = 300.0) -> AgendaLineFactory:
        return AgendaLineFactory(self.node, idle_timeout=idle_timeout, clock=self.clock)

    def connect(self, idle_timeout: float | None = 300.0) -> Conn:
        conn = Conn(self.factory(idle_timeout), self.clock)
        self.conns.append(conn)
        return conn

    def request(self, line: str) -> list[str]:
        """One request on a fresh connection."""
        return self.connect().request(line)


@pytest.fixture
def agenda(tmp_path) -> Iterator[InMemoryAgenda]:
    agenda = InMemoryAgenda(str(tmp_path / "data"))
    yield agenda
    if agenda.datadir is not None and agenda.datadir._lock_fd is not None:
        agenda.close()


@pytest.fixture
def make_agenda(tmp_path) -> Iterator[Callable[..., InMemoryAgenda]]:
    """Build in-memory nodes with Node options (``compact_min_ops=...``)."""
    made: list[InMemoryAgenda] = []

    def make(name: str = "data", **kw: Any) -> InMemoryAgenda:
        agenda = InMemoryAgenda(str(tmp_path / name), **kw)
        made.append(agenda)
        return agenda

    yield make
    for agenda in made:
        if agenda.datadir is not None and agenda.datadir._lock_fd is not None:
            agenda.close()


# -- real processes -----------------------------------------------------------

_NODES = pytest.StashKey[list[NodeProcess]]()


@pytest.fixture
def spawn_node(request, tmp_path) -> Iterator[Callable[..., NodeProcess]]:
    """Start ``twistd agenda`` processes; all are stopped at teardown.

    ``spawn_node(name, wait=True, **NodeProcess fields)`` returns a started
    node, already greeting unless ``wait=False`` (for nodes expected to fail).
    Nodes share ``tmp_path`` as their run folder.
    """
    nodes = request.node.stash.setdefault(_NODES, [])

    def spawn(name: str = "a", wait: bool = True, **kw: Any) -> NodeProcess:
        node = NodeProcess(name, tmp_path, **kw)
        nodes.append(node)
        node.start()
        if wait:
            node.wait_ready()
        return node

    yield spawn
    for node in nodes:
        node.stop()
    if request.node.get_closest_marker("logs_errors") is None:
        broken = [n.name for n in nodes if "Traceback (most recent" in n.log(True)]
        if broken:
            pytest.fail(f"node(s) {broken} logged a traceback", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for node in item.stash.get(_NODES, []):
            report.sections.append((f"agenda node {node.name}", node.diagnostics()))
    return report


# -- errors nobody expected ---------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "logs_errors: the test provokes errors the node logs (a failed disk...)",
    )


@pytest.fixture(autouse=True)
def fail_on_logged_errors(request):
    """Fail a test whose code logged a traceback it did not ask for.

    A bug the node survives (an exception in a callback, an unhandled error
    in a Deferred) only shows as a logged failure; without this the test
    would pass anyway.
    """
    from twisted.logger import globalLogPublisher

    failures: list[dict] = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield
    globalLogPublisher.removeObserver(observe)
    import gc

    gc.collect()  # unhandled errors in Deferreds are logged when collected
    if failures and request.node.get_closest_marker("logs_errors") is None:
        from twisted.logger import formatEvent

        shown = "\n".join(
            f"{formatEvent(e)}\n{e['log_failure'].getTraceback()}" for e in failures
        )
        pytest.fail(f"errors were logged:\n{shown}", pytrace=False)
