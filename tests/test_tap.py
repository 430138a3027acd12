"""``twistd agenda`` options and the service tree, without running a reactor."""

from __future__ import annotations

import os

import pytest
from twisted.application import internet
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage

from twisted_agenda import tap
from twisted_agenda.crdt import Op
from twisted_agenda.datadir import DataDir
from twisted_agenda.lineproto import AgendaLineFactory


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


def test_make_service_wires_both_ports(tmp_path):
    options = parse(
        "--port",
        "7010",
        "--sync-port",
        "7005",
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
        servers = {s.args[0]: s for s in top if isinstance(s, internet.TCPServer)}
        assert set(servers) == {7010, 7005}
        assert all(s.kwargs["interface"] == "127.0.0.1" for s in servers.values())
        clients = servers[7010].args[1]
        assert isinstance(clients, AgendaLineFactory)
        assert clients.idle_timeout == 42
        assert top.node.node_id == "a1"
    finally:
        top.node.close()
        top._datadir.close()
    assert DataDir(str(tmp_path / "data")).node_id() == "a1"


def test_make_service_refuses_a_folder_in_use(tmp_path):
    holder = DataDir(str(tmp_path / "data"))
    holder.open()
    try:
        with pytest.raises(SystemExit) as caught:
            tap.makeService(parse("--data-dir", str(tmp_path / "data")))
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
        tap.makeService(parse("--data-dir", folder.path, "--node-id", "b2"))
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
        tap.makeService(parse("--data-dir", folder.path))
    assert str(caught.value).startswith(
        f"twistd agenda: {folder.journal} line 2: not an op"
    )
    folder.open()
    folder.close()
