"""Start and stop the benchmarked servers: agenda nodes, redis, etcd.

Every process is started by us with ``subprocess.Popen`` and stopped by its
own pid (SIGTERM, then SIGKILL after a timeout) -- never by name. Ports are
free loopback ports; data lives in a temporary folder per run.

Deliberately independent of tests/nodeproc.py (which other people edit):
the bench only needs start / wait-ready / stop and a STATUS reader.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where the agenda code the nodes run lives (run.py points it at an export
#: of the committed HEAD, so concurrent uncommitted edits do not leak in).
CODE_ROOT = Path(os.environ.get("BENCH_CODE_ROOT", REPO_ROOT))
HOST = "127.0.0.1"
TWISTD = "from twisted.scripts.twistd import run; run()"

_handed_out: set[int] = set()
_live: list[Server] = []


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.01, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(what or f"not true after {timeout}s")
        time.sleep(interval)


class Server:
    """One child process, started and stopped by pid."""

    name = "server"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> Server:
        assert not self.running, f"{self.name} already running"
        out = open(self.run_dir / f"{self.name}.out", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.run_dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        if self not in _live:
            _live.append(self)
        return self

    def ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 30.0) -> Server:
        def ok():
            if not self.running:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n"
                    + (self.run_dir / f"{self.name}.out").read_text(errors="replace")[
                        -3000:
                    ]
                )
            return self.ready()

        wait_for(ok, timeout, what=f"{self.name} not ready after {timeout}s")
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM our own pid, wait, SIGKILL if it lingers; the exit code."""
        if self.process is None:
            return None
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def _connects(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


class AgendaNode(Server):
    def __init__(
        self,
        run_dir: Path,
        name: str,
        peers: list[str] | None = None,
        extra: list[str] | None = None,
        prelude: str = "",
    ) -> None:
        super().__init__(run_dir)
        self.name = name
        self.port = free_port()
        self.sync_port = free_port()
        self.data_dir = self.run_dir / f"{name}-data"
        self.peers = peers or []
        self.extra = extra or []
        #: Python run before twistd (bench experiments, e.g. GC settings).
        self.prelude = prelude

    @property
    def sync_address(self) -> str:
        return f"{HOST}:{self.sync_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(CODE_ROOT), env.get("PYTHONPATH")) if p
        )
        return env

    def command(self) -> list[str]:
        pidfile = self.run_dir / f"{self.name}.pid"
        pidfile.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-c",
            self.prelude + TWISTD,
            "-n",
            "--pidfile",
            str(pidfile),
            "--logfile",
            str(self.run_dir / f"{self.name}.log"),
            "agenda",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--sync-port",
            str(self.sync_port),
            "--data-dir",
            str(self.data_dir),
            "--node-id",
            self.name,
        ]
        if self.peers:
            cmd += ["--peers", ",".join(self.peers)]
        return cmd + self.extra

    def ready(self) -> bool:
        try:
            with LineClient(HOST, self.port, timeout=2.0):
                return True
        except OSError:
            return False

    def client(self, timeout: float = 30.0) -> LineClient:
        return LineClient(HOST, self.port, timeout)

    def vv(self) -> dict[str, int]:
        with self.client() as c:
            return c.vv()


class Redis(Server):
    name = "redis"

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.port = free_port()
        self.data_dir = self.run_dir / "redis-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            "",
        ]

    def ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class Etcd(Server):
    name = "etcd"

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir)
        self.port = free_port()
        self.peer_port = free_port()
        self.data_dir = self.run_dir / "etcd-data"

    def command(self) -> list[str]:
        peer = f"http://{HOST}:{self.peer_port}"
        client = f"http://{HOST}:{self.port}"
        return [
            shutil.which("etcd") or "etcd",
            "--name",
            "bench",
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"bench={peer}",
            "--logger",
            "zap",
            "--log-level",
            "warn",
            "--quota-backend-bytes",
            str(4 * 1024**3),
        ]

    def ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as s:
                s.sendall(
                    f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                return b'"health":"true"' in data
        except OSError:
            return False


class LineClient:
    """A blocking agenda line-protocol client (replies read in order)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""
        self.greeting = self.read_line()
        if not self.greeting.startswith("OK agenda "):
            self.close()
            raise ConnectionError(f"not an agenda greeting: {self.greeting!r}")

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def read_line(self) -> str:
        while b"\r\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the node")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line.decode("utf-8")

    def request(self, line: str) -> list[str]:
        self.sock.sendall(line.encode() + b"\n")
        lines = []
        while True:
            lines.append(self.read_line())
            if lines[-1].startswith(("OK", "ERR")):
                return lines

    def status(self) -> dict[str, str]:
        out = {}
        for line in self.request("STATUS")[:-1]:
            if line.startswith("peer="):
                continue
            for word in line.split():
                k, _, v = word.partition("=")
                out.setdefault(k, v)
        return out

    def vv(self) -> dict[str, int]:
        raw = self.status().get("vv", "-")
        if raw in ("", "-"):
            return {}
        return {o: int(s) for o, _, s in (p.rpartition(":") for p in raw.split(","))}


@atexit.register
def _stop_leftovers() -> None:
    # A crashed bench must not leave servers running: stop ours, by pid.
    for server in _live:
        if server.running:
            server.stop(timeout=5)
