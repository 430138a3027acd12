"""``twistd agenda``: command-line options and the node's service tree."""

from __future__ import annotations

import gc
import math
import os

from twisted.application import service
from twisted.python import usage

from twisted_agenda.cluster import DEFAULT_CLUSTER, Cluster
from twisted_agenda.datadir import NODE_ID, DataDir, DataDirError
from twisted_agenda.journal import JournalCorrupt, thread_runner
from twisted_agenda.lineproto import (
    DEFAULT_IDLE_TIMEOUT,
    AgendaLineFactory,
    basic_status,
)
from twisted_agenda.listening import BoundPort, CannotBind, bind, resolve_interface
from twisted_agenda.node import Node
from twisted_agenda.peerproto import PeerServerFactory
from twisted_agenda.phone import check_region


def _port(option: str):
    def coerce(value: str) -> int:
        try:
            port = int(value)
        except ValueError:
            port = -1
        if not 1 <= port <= 65535:
            raise ValueError(f"--{option} must be a port number 1-65535, not {value!r}")
        return port

    return coerce


def _seconds(option: str, minimum: float = 0.001):
    def coerce(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        # (not math.isfinite: nan and inf are refused too)
        if not minimum <= seconds < math.inf:
            raise ValueError(
                f"--{option} must be a positive number of seconds"
                f" (at least {minimum:g}, finite)"
            )
        return seconds

    return coerce


def _count(option: str):
    def coerce(value: str) -> int:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"--{option} must be a positive whole number")
        return count

    return coerce


def _region(value: str) -> str | None:
    try:
        return check_region(value)
    except ValueError as e:
        raise ValueError(f"--default-region: {e}") from None


def parse_peer(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port); ValueError if not."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    bad_host = not host or any(c.isspace() for c in host)
    if not sep or bad_host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--peers: {text.strip()!r} is not host:port")
    return host, int(port)


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run one node of the replicated contact book. Clients talk a text line "
        "protocol on --port; nodes replicate over AMP on --sync-port."
    )
    optParameters = [
        ["port", "p", 9010, "Client line-protocol port.", _port("port")],
        ["sync-port", "s", 9005, "Peer (AMP) port.", _port("sync-port")],
        ["host", None, "127.0.0.1", "Interface to bind both ports to."],
        ["data-dir", "d", "agenda-data", "Folder for the journal and snapshot."],
        ["node-id", None, None, "This node's id (default: made once, kept in data)."],
        [
            "cluster",
            None,
            DEFAULT_CLUSTER,
            "Cluster name; peers with another are refused.",
        ],
        [
            "idle-timeout",
            None,
            DEFAULT_IDLE_TIMEOUT,
            "Seconds before an idle client connection is closed.",
            _seconds("idle-timeout"),
        ],
        [
            "max-clock-offset",
            None,
            60.0,
            "Refuse peer stamps this many seconds ahead of our clock.",
            _seconds("max-clock-offset"),
        ],
        [
            "sync-interval",
            None,
            5.0,
            "Seconds between anti-entropy rounds with each peer.",
            _seconds("sync-interval", minimum=0.1),
        ],
        [
            "default-region",
            None,
            None,
            "Country of phone numbers typed without +code, e.g. BR.",
            _region,
        ],
        [
            "compact-min-ops",
            None,
            10_000,
            "Journal ops before compaction is considered.",
            _count("compact-min-ops"),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["peers"] = []

    def opt_peers(self, value: str) -> None:
        """Comma-separated host:port sync addresses of other nodes (repeatable)."""
        for item in value.split(","):
            if item.strip():
                try:
                    self["peers"].append(parse_peer(item))
                except ValueError as e:
                    raise usage.UsageError(str(e)) from None

    def postOptions(self) -> None:
        if self["port"] == self["sync-port"]:
            raise usage.UsageError("--port and --sync-port must differ")
        node_id = self["node-id"]
        if node_id is not None and not NODE_ID.fullmatch(node_id):
            raise usage.UsageError(
                "--node-id: 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        if not self["data-dir"].strip():
            raise usage.UsageError("--data-dir must not be empty")
        if not self["host"].strip():
            raise usage.UsageError("--host must name an interface (0.0.0.0: all)")
        try:
            resolve_interface(self["host"])
        except ValueError as e:
            raise usage.UsageError(f"--host: {e}") from None


class AgendaService(service.MultiService):
    """The node's services, plus the journal's thread and the data lock."""

    def __init__(self, node: Node, datadir: DataDir, pool) -> None:
        super().__init__()
        self.node = node
        self._datadir = datadir
        self._pool = pool

    def startService(self) -> None:
        self._datadir.write_pid(os.getpid())
        if not self._pool.started:
            self._pool.start()
        super().startService()

    def stopService(self):
        d = super().stopService()
        d.addBoth(lambda _: self.node.close())
        d.addBoth(lambda _: self._pool.stop())
        d.addBoth(lambda _: self._datadir.close())
        return d


def makeService(config: Options) -> AgendaService:
    from twisted.internet import reactor

    # Ports first: a taken one stops the start here, in the foreground, with
    # one clear line and nothing left on disk (listening.py says why).
    sockets = []
    try:
        for option in ("sync-port", "port"):
            sockets.append(bind(config["host"], config[option]))
    except CannotBind as e:
        for sock in sockets:
            sock.close()
        raise SystemExit(f"twistd agenda: {e}") from None
    sync_socket, client_socket = sockets

    datadir = DataDir(config["data-dir"])
    try:
        datadir.open()
        node_id = datadir.node_id(config["node-id"])
        run_blocking, pool = thread_runner(reactor)
        node = Node(
            node_id,
            datadir,
            reactor,
            run_blocking,
            compact_min_ops=config["compact-min-ops"],
            default_region=config["default-region"],
        )
    except (DataDirError, JournalCorrupt) as e:
        datadir.close()
        for sock in sockets:
            sock.close()
        raise SystemExit(f"twistd agenda: {e}") from None
    node.clock.max_offset = config["max-clock-offset"]
    # The book lives as long as the process: keep the collector from
    # rescanning it (a full collection walks every object) all the time.
    # (A policy that froze every survivor was measured and was no better:
    # bench/RESULTS.md, "GC policy".)
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)

    top = AgendaService(node, datadir, pool)
    cluster = Cluster(
        node,
        config["peers"],
        cluster=config["cluster"],
        sync_interval=config["sync-interval"],
        reactor=reactor,
    )
    BoundPort(sync_socket, PeerServerFactory(cluster), reactor).setServiceParent(top)
    cluster.setServiceParent(top)
    clients = AgendaLineFactory(
        node,
        idle_timeout=config["idle-timeout"],
        status=lambda: basic_status(node) + cluster.status_lines(),
    )
    BoundPort(client_socket, clients, reactor).setServiceParent(top)
    return top
