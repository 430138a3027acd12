"""``twistd agenda`` options and the service tree, without running a reactor."""

from __future__ import annotations

import os
import socket

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage

from twisted_agenda import tap
from twisted_agenda.crdt import Op
from twisted_agenda.datadir import DataDir
from twisted_agenda.lineproto import AgendaLineFactory
from twisted_agenda.listening import BoundPort
from twisted_agenda.peerproto import PeerServerFactory


def parse(*args: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def test_defaults():
    options = parse()
    assert options["port"] == 9010
    assert options["sync-port"] == 9005
    assert options["host"] == "127.0.0.1"
    assert options["data-dir"] == "agenda-data"
    assert options["node-id"] is None
    assert options["peers"] == []
    assert options["cluster"] == "agenda"
    assert options["idle-timeout"] == 300
    assert options["max-clock-offset"] == 60
    assert options["sync-interval"] == 5
    assert options["compact-min-ops"] == 10_000


def test_good_values():
    options = parse(
        "--port",
        "1",
        "--sync-port",
        "65535",
        "--host",
        "0.0.0.0",
        "--data-dir",
        "data/a1",
        "--node-id",
        "a1.east_2-b",
        "--cluster",
        "test",
        "--idle-timeout",
        "0.5",
        "--max-clock-offset",
        "10",
        "--sync-interval",
        "2.5",
        "--compact-min-ops",
        "100",
    )
    assert (options["port"], options["sync-port"]) == (1, 65535)
    assert options["host"] == "0.0.0.0"
    assert options["data-dir"] == "data/a1"
    assert options["node-id"] == "a1.east_2-b"
    assert options["cluster"] == "test"
    assert options["idle-timeout"] == 0.5
    assert options["max-clock-offset"] == 10.0
    assert options["sync-interval"] == 2.5
    assert options["compact-min-ops"] == 100


def test_short_options():
    options = parse("-p", "7010", "-s", "7005", "-d", "x")
    assert (options["port"], options["sync-port"], options["data-dir"]) == (
        7010,
        7005,
        "x",
    )


def test_peers_are_comma_separated_and_repeatable():
    options = parse(
        "--peers",
        "127.0.0.1:9006, 127.0.0.1:9007,",
        "--peers",
        "[::1]:9008",
        "--peers=node-d.example:9009",
    )
    assert options["peers"] == [
        ("127.0.0.1", 9006),
        ("127.0.0.1", 9007),
        ("::1", 9008),
        ("node-d.example", 9009),
    ]


def test_each_options_object_has_its_own_peers():
    assert parse("--peers", "a:1")["peers"] == [("a", 1)]
    assert parse()["peers"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "abc"], "--port must be a port number 1-65535, not 'abc'"),
        (["--port", "70000"], "--port must be a port number 1-65535, not '70000'"),
        (["--port", "0"], "--port must be a port number"),
        (["--port", "-1"], "--port must be a port number"),
        (["--sync-port", "x"], "--sync-port must be a port number"),
        (["--peers", "nonsense"], "--peers: 'nonsense' is not host:port"),
        (["--peers", "a:1,b"], "--peers: 'b' is not host:port"),
        (["--peers", "host:"], "--peers: 'host:' is not host:port"),
        (["--peers", ":9005"], "--peers: ':9005' is not host:port"),
        (["--peers", "host:70000"], "--peers: 'host:70000' is not host:port"),
        (["--peers", "host:http"], "--peers: 'host:http' is not host:port"),
        (["--node-id", "bad id"], "--node-id: 1-64 letters, digits"),
        (["--node-id", "-a"], "--node-id: 1-64 letters, digits"),
        (["--node-id", "a" * 65], "--node-id: 1-64 letters, digits"),
        (["--node-id", ""], "--node-id: 1-64 letters, digits"),
        (["--port", "9005"], "--port and --sync-port must differ"),
        (["--port", "7000", "--sync-port", "7000"], "--port and --sync-port"),
        (["--idle-timeout", "-1"], "--idle-timeout must be a positive number"),
        (["--idle-timeout", "0"], "--idle-timeout must be a positive number"),
        (["--idle-timeout", "nan"], "--idle-timeout must be a positive number"),
        (["--idle-timeout", "soon"], "--idle-timeout must be a positive number"),
        (["--max-clock-offset", "-5"], "--max-clock-offset must be a positive"),
        (["--sync-interval", "0"], "--sync-interval must be a positive number"),
        (["--sync-interval", "1e-9"], "--sync-interval must be a positive number"),
        (["--idle-timeout", "inf"], "--idle-timeout must be a positive number"),
        (["--host", ""], "--host must name an interface"),
        (["--host", "999.1.1.1"], "--host: '999.1.1.1' is not an interface"),
        (["--peers", "host with space:9000"], "--peers: 'host with space:9000' is"),
        (["--compact-min-ops", "0"], "--compact-min-ops must be a positive whole"),
        (["--compact-min-ops", "1.5"], "--compact-min-ops must be a positive"),
        (["--compact-min-ops", "-3"], "--compact-min-ops must be a positive"),
        (["--data-dir", " "], "--data-dir must not be empty"),
        pytest.param(
            ["--compact-min-ops", "\u00b2"],
            "--compact-min-ops must be a positive whole number",
        ),
    ],
)
def test_bad_values_name_the_option(args, message):
    with pytest.raises(usage.UsageError) as caught:
        parse(*args)
    assert message in str(caught.value)


def test_the_plugin_is_found():
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    agenda = makers["agenda"]
    assert agenda.options is tap.Options
    assert "contact book" in agenda.description


# -- makeService --------------------------------------------------------------


def free_ports(n: int = 2) -> list[str]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [str(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def ports() -> list[str]:
    """``--port`` and ``--sync-port`` options on free ports (makeService binds)."""
    port, sync_port = free_ports()
    return ["--port", port, "--sync-port", sync_port]


def test_make_service_wires_both_ports(tmp_path):
    port, sync_port = free_ports()
    options = parse(
        "--port",
        port,
        "--sync-port",
        sync_port,
        "--host",
        "127.0.0.1",
        "--data-dir",
        str(tmp_path / "data"),
        "--node-id",
        "a1",
        "--idle-timeout",
        "42",
    )
    top = tap.makeService(options)
    try:
        bound = [s for s in top if isinstance(s, BoundPort)]
        servers = {str(s.socket.getsockname()[1]): s.factory for s in bound}
        assert set(servers) == {port, sync_port}
        assert {s.socket.getsockname()[0] for s in bound} == {"127.0.0.1"}
        assert isinstance(servers[sync_port], PeerServerFactory)
        clients = servers[port]
        assert isinstance(clients, AgendaLineFactory)
        assert clients.idle_timeout == 42
        assert top.node.node_id == "a1"
    finally:
        for s in bound:
            s.socket.close()
        top.node.close()
        top._datadir.close()
    assert DataDir(str(tmp_path / "data")).node_id() == "a1"


def test_make_service_refuses_a_folder_in_use(tmp_path):
    holder = DataDir(str(tmp_path / "data"))
    holder.open()
    try:
        with pytest.raises(SystemExit) as caught:
            tap.makeService(parse(*ports(), "--data-dir", str(tmp_path / "data")))
        assert str(caught.value) == (
            f"twistd agenda: data folder {holder.path} is in use by another "
            f"agenda node (pid {os.getpid()})"
        )
    finally:
        holder.close()


def test_make_service_refuses_another_nodes_folder(tmp_path):
    folder = DataDir(str(tmp_path / "data"))
    folder.open()
    folder.node_id("a1")
    folder.close()
    with pytest.raises(SystemExit, match="belongs to node 'a1', not 'b2'"):
        tap.makeService(parse(*ports(), "--data-dir", folder.path, "--node-id", "b2"))
    # The lock was let go: the folder is usable again.
    folder.open()
    folder.close()


def test_make_service_refuses_a_corrupt_journal(tmp_path):
    folder = DataDir(str(tmp_path / "data"))
    os.makedirs(folder.path)
    good = Op.make("a1", 1, 1, "x", "put", {"name": "x", "phone": "123"}).line
    with open(folder.journal, "wb") as f:
        f.write(good + b"\n{oops\n" + good + b"\n")
    with pytest.raises(SystemExit) as caught:
        tap.makeService(parse(*ports(), "--data-dir", folder.path))
    assert str(caught.value).startswith(
        f"twistd agenda: {folder.journal} line 2: not an op"
    )
    folder.open()
    folder.close()


def test_make_service_refuses_a_port_in_use_before_touching_the_folder(tmp_path):
    port, sync_port = free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(port)))
        taken.listen()
        with pytest.raises(SystemExit) as caught:
            tap.makeService(
                parse(
                    "--port",
                    port,
                    "--sync-port",
                    sync_port,
                    "--data-dir",
                    str(tmp_path / "data"),
                )
            )
    assert str(caught.value) == (
        f"twistd agenda: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "data").exists()
    # The sync port it had bound already was let go.
    with socket.socket() as again:
        again.bind(("127.0.0.1", int(sync_port)))
