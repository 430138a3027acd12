"""Real ``twistd agenda`` processes for end-to-end tests, and a blocking client.

``NodeProcess`` runs this checkout's code (``PYTHONPATH`` is the repository
root, so ``twisted/plugins/agenda_plugin.py`` is found without installing
anything) on loopback ports nobody else holds. ``LineClient`` speaks the line
protocol over a plain socket. Nothing here sleeps hoping something happened:
``wait_for`` polls a condition until a deadline.

Typical use, through the ``spawn_node`` fixture of ``conftest.py``::

    a = spawn_node("a")                      # started and greeting
    b = spawn_node("b", peers=[a.sync_address])
    with a.client() as c:
        c.ok('ADD "Maria da Silva" "+55 11 91234-5678"')
    wait_for(lambda: b.client().contacts(), timeout=10)
"""

from __future__ import annotations

import atexit
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from attrs import define, field, frozen

from twisted_agenda import quoting
from twisted_agenda.model import Contact

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TWISTD = "from twisted.scripts.twistd import run; run()"

T = TypeVar("T")

_handed_out: set[int] = set()
_live: weakref.WeakSet[NodeProcess] = weakref.WeakSet()


def _ephemeral_ports() -> range:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


#: Where the kernel picks the local ports of outgoing connections. A node is
#: restarted on its old ports, so they must come from outside this range: a
#: peer connection could otherwise hold one of them meanwhile.
_EPHEMERAL = _ephemeral_ports()


def free_port() -> int:
    """A loopback port nothing listens on now, never the same twice per run,
    and outside the kernel's range for outgoing connections (if it leaves
    any room)."""
    rng = random.Random()
    roomy = len(_EPHEMERAL) < 40_000
    while True:
        port = rng.randrange(10_000, 65_536) if roomy else 0
        if port in _EPHEMERAL or port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, message: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises ``TimeoutError`` (with ``message``) if ``timeout`` seconds pass
    first. The poll interval starts tiny and grows, so fast conditions cost
    nothing and slow ones do not spin.
    """
    deadline = time.monotonic() + timeout
    interval = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(message or f"not true after {timeout}s: {predicate!r}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 2, 0.1)


async def until(
    predicate: Callable[[], T], timeout: float = 20.0, message: str = ""
) -> T:
    """``wait_for`` for tests that run on the reactor: polls without blocking
    it, so the code under test (a client, a Tk window) keeps running."""
    from twisted.internet import reactor, task

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"not true after {timeout}s: {predicate!r}")
        await task.deferLater(reactor, 0.02, lambda: None)


class NodeExited(RuntimeError):
    """The node process ended while we waited for it to serve."""


class RequestFailed(AssertionError):
    """``LineClient.ok`` got an ``ERR`` reply."""


@frozen
class Status:
    """A STATUS reply: the node's ``key=value`` lines and one dict per peer."""

    fields: dict[str, str]
    peers: list[dict[str, str]]


def _key_values(line: str) -> dict[str, str]:
    out = {}
    for word in quoting.split(line):
        key, _, value = word.partition("=")
        out[key] = value
    return out


class LineClient:
    """A blocking line-protocol client: one socket, replies read in order.

    ``EVENT`` lines (after ``WATCH``) can arrive between replies; they are
    kept in ``events`` and never returned as part of a reply.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""
        self.events: list[str] = []
        self.greeting = self.read_line()
        if not self.greeting.startswith("OK agenda "):
            self.close()
            raise ConnectionError(f"not an agenda greeting: {self.greeting!r}")

    @property
    def node_id(self) -> str:
        return _key_values(self.greeting)["node"]

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, *lines: str) -> None:
        """Send requests without reading replies (pipelining)."""
        self.sock.sendall("".join(line + "\n" for line in lines).encode("utf-8"))

    def read_line(self) -> str:
        """The next line without its ``\\r\\n``; ConnectionError at EOF."""
        while b"\r\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the node")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line.decode("utf-8")

    def read_reply(self) -> list[str]:
        """Lines up to and including the next one starting with OK or ERR."""
        lines = []
        while True:
            line = self.read_line()
            if line.startswith("EVENT "):
                self.events.append(line)
                continue
            lines.append(line)
            if line.startswith(("OK", "ERR")):
                return lines

    def request(self, line: str) -> list[str]:
        """Send one request; its reply lines, the final OK/ERR line included."""
        self.send(line)
        return self.read_reply()

    def ok(self, line: str) -> list[str]:
        """Like ``request``, but raise RequestFailed on an ERR reply."""
        reply = self.request(line)
        if not reply[-1].startswith("OK"):
            raise RequestFailed(f"{line!r} -> {reply[-1]!r}")
        return reply

    def next_event(self) -> str:
        """The next EVENT line (blocks up to the socket timeout)."""
        while not self.events:
            line = self.read_line()
            if not line.startswith("EVENT "):
                raise AssertionError(f"expected an EVENT line, got {line!r}")
            self.events.append(line)
        return self.events.pop(0)

    def contacts(self, request: str = "LIST") -> list[Contact]:
        """The contacts of a LIST (or FIND/GET) reply, parsed with quoting.split."""
        reply = self.ok(request)
        return [parse_contact(line) for line in reply[:-1]]

    def status(self) -> Status:
        fields: dict[str, str] = {}
        peers = []
        for line in self.ok("STATUS")[:-1]:
            if line.startswith("peer="):
                peers.append(_key_values(line))
            else:
                fields.update(_key_values(line))
        return Status(fields, peers)


def parse_contact(line: str) -> Contact:
    """``CONTACT <name> <phone> [email=..] [note=..]`` -> Contact."""
    words = quoting.split(line)
    if words[0] == "EVENT":
        words = words[2:]
    elif words[0] != "CONTACT":
        raise ValueError(f"not a contact line: {line!r}")
    _, name, phone, *rest = words
    optional = {}
    for word in rest:
        key, eq, value = word.partition("=")
        if not eq:
            raise ValueError(f"unexpected word {word!r} in {line!r}")
        optional[key] = value
    return Contact(name, phone, **optional)


@define(eq=False)
class NodeProcess:
    """One ``twistd -n agenda`` process; may be started again after it ends.

    Each start gets its own pid file, log file (``<name>.log``, appended to
    across restarts) and stdout/stderr file (``<name>.out``, one per start),
    all in ``run_dir``.
    """

    name: str
    run_dir: Path = field(converter=Path)
    data_dir: Path | None = None
    port: int = field(factory=free_port)
    sync_port: int = field(factory=free_port)
    node_id: str | None = None
    peers: list[str] = field(factory=list)
    extra_args: list[str] = field(factory=list)
    host: str = HOST
    process: subprocess.Popen | None = field(default=None, init=False)
    _log_start: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if self.data_dir is None:
            self.data_dir = self.run_dir / f"{self.name}-data"
        self.data_dir = Path(self.data_dir)

    # -- files ---------------------------------------------------------------

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def outfile(self) -> Path:
        return self.run_dir / f"{self.name}.out"

    @property
    def sync_address(self) -> str:
        """``host:port`` of the peer port, as ``--peers`` wants it."""
        return f"{self.host}:{self.sync_port}"

    def command(self) -> list[str]:
        args = [
            sys.executable,
            "-c",
            TWISTD,
            "-n",
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.logfile),
            "agenda",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--sync-port",
            str(self.sync_port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.node_id is not None:
            args += ["--node-id", self.node_id]
        if self.peers:
            args += ["--peers", ",".join(self.peers)]
        return args + list(self.extra_args)

    # -- life cycle ----------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def start(self) -> NodeProcess:
        if self.running:
            raise RuntimeError(f"node {self.name} is already running")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Ours is dead: a pid file left by a SIGKILL must not make twistd
        # think a recycled pid is "another twistd server".
        self.pidfile.unlink(missing_ok=True)
        self._log_start = self.logfile.stat().st_size if self.logfile.exists() else 0
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
        )
        with open(self.outfile, "wb") as out:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.run_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _live.add(self)
        return self

    def wait_ready(self, timeout: float = 20.0) -> NodeProcess:
        """Poll until the client port greets; NodeExited if the process ends."""

        def greets() -> bool:
            if not self.running:
                raise NodeExited(
                    f"node {self.name} exited with {self.returncode} before "
                    f"serving\n{self.output()}"
                )
            try:
                with LineClient(self.host, self.port, timeout=2.0):
                    return True
            except OSError:
                return False

        try:
            wait_for(greets, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"node {self.name} did not greet on port {self.port} within "
                f"{timeout}s\n{self.output()}"
            ) from None
        return self

    def wait_exit(self, timeout: float = 20.0) -> int:
        """Wait for the process to end by itself; its exit code."""
        assert self.process is not None, "never started"
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"node {self.name} still running after {timeout}s\n{self.output()}"
            ) from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to this node's own process (never by name)."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)

    def crash(self) -> None:
        """SIGKILL and reap: the process is gone when this returns."""
        self.kill(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code.

        After a clean shutdown twistd ends itself with the signal it got, so
        a graceful stop returns ``-SIGTERM``, not 0.
        """
        if self.process is None:
            return None
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def restart(self, timeout: float = 20.0) -> NodeProcess:
        """Stop gracefully, start again on the same ports and data folder."""
        self.stop()
        return self.start().wait_ready(timeout)

    # -- talking and diagnostics ---------------------------------------------

    def client(self, timeout: float = 10.0) -> LineClient:
        return LineClient(self.host, self.port, timeout=timeout)

    def log(self, all_runs: bool = False) -> str:
        """The twistd log of the latest start (or of every start)."""
        if not self.logfile.exists():
            return ""
        with open(self.logfile, "rb") as f:
            f.seek(0 if all_runs else self._log_start)
            return f.read().decode("utf-8", "replace")

    def output(self) -> str:
        """What the latest start wrote to stdout/stderr and to its log."""
        return (
            f"--- {self.name} stdout/stderr ({self.outfile}):\n"
            f"{_read(self.outfile)}"
            f"--- {self.name} log ({self.logfile}):\n{self.log()}"
        )

    def diagnostics(self) -> str:
        state = "running" if self.running else f"exited with {self.returncode}"
        return (
            f"node {self.name} pid={self.pid} {state} port={self.port} "
            f"sync-port={self.sync_port} data={self.data_dir}\n"
            f"command: {shlex.join(self.command())}\n"
            f"--- log of every start ({self.logfile}):\n{self.log(all_runs=True)}"
            f"--- stdout/stderr of the latest start ({self.outfile}):\n"
            f"{_read(self.outfile)}"
        )


@contextmanager
def running_node(name: str, run_dir: Path, **kw) -> Iterator[NodeProcess]:
    """A started, ready node, stopped on the way out (module-wide fixtures)."""
    node = NodeProcess(name, run_dir, **kw)
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace") if path.exists() else ""


@atexit.register
def _kill_leftovers() -> None:
    # A test that forgot to stop its node must not leave it running.
    for node in list(_live):
        node.kill(signal.SIGKILL)
