"""Real ``twistd agenda`` processes on loopback: crashes, restarts, refusals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from nodeproc import (
    HOST,
    REPO_ROOT,
    TWISTD,
    LineClient,
    NodeExited,
    free_port,
    wait_for,
)

from twisted_agenda.model import Contact

MARIA = Contact("Maria da Silva", "+55 11 91234-5678", "maria@example.com")


def test_an_acknowledged_add_survives_sigkill(spawn_node):
    node = spawn_node("a")
    with node.client() as client:
        node_id = client.node_id
        assert client.request(
            'ADD "Maria da Silva" "+55 11 91234-5678" email=maria@example.com'
        ) == ['OK added "Maria da Silva"']
        node.crash()  # right after the OK: nothing had time to happen since
    assert node.returncode == -9

    node.start().wait_ready()
    with node.client() as client:
        assert client.node_id == node_id
        assert client.contacts() == [MARIA]


def test_every_acknowledged_add_survives_sigkill_under_load(spawn_node):
    node = spawn_node("a")
    per_client, clients = 400, 4
    sent = [[f"c{k}-{i:03d}" for i in range(per_client)] for k in range(clients)]
    acked: list[list[str]] = [[] for _ in range(clients)]

    def writer(k: int) -> None:
        try:
            with node.client() as client:
                client.send(
                    *(f"ADD {name} {k}{i:03d}" for i, name in enumerate(sent[k]))
                )
                for name in sent[k]:
                    if client.read_reply() == [f"OK added {name}"]:
                        acked[k].append(name)
        except OSError:
            pass  # the node was killed mid-stream (or before we connected)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    wait_for(lambda: sum(map(len, acked)) >= per_client, timeout=30)
    node.crash()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()

    node.start().wait_ready()
    with node.client() as client:
        stored = {c.name for c in client.contacts()}
    all_acked = {name for names in acked for name in names}
    assert len(all_acked) >= per_client
    assert all_acked <= stored
    assert stored <= {name for names in sent for name in names}


def test_a_torn_journal_tail_is_dropped_on_restart(spawn_node):
    node = spawn_node("a")
    with node.client() as client:
        client.ok("ADD Ana 111")
        client.ok("ADD Bia 222")
    node.stop()
    journal = node.data_dir / "journal.jsonl"
    good = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b'{"o":"torn","s":1,"h":')
    node.start().wait_ready()
    with node.client() as client:
        assert [c.name for c in client.contacts()] == ["Ana", "Bia"]
        client.ok("ADD Carla 333")
    assert "dropping a torn last line" in node.log()
    assert journal.read_bytes().startswith(good)
    node.restart()
    with node.client() as client:
        assert [c.name for c in client.contacts()] == ["Ana", "Bia", "Carla"]


def test_a_corrupt_journal_stops_the_node_naming_file_and_line(spawn_node):
    node = spawn_node("a")
    with node.client() as client:
        for name in ("Ana", "Bia", "Carla"):
            client.ok(f"ADD {name} 123")
    assert node.stop() == -signal.SIGTERM
    journal = node.data_dir / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")
    lines[1] = lines[1][:20] + b"#" + lines[1][21:]
    journal.write_bytes(b"\n".join(lines))

    node.start()
    assert node.wait_exit() != 0
    output = node.output()
    assert f"twistd agenda: {journal} line 2: not an op" in output
    assert "Traceback" not in output


def test_a_second_node_on_the_same_folder_is_refused(spawn_node):
    first = spawn_node("a")
    second = spawn_node("b", data_dir=first.data_dir, wait=False)
    assert second.wait_exit() != 0
    output = second.output()
    assert (
        f"twistd agenda: data folder {first.data_dir} is in use by another "
        f"agenda node (pid {first.pid})"
    ) in output
    assert "Traceback" not in output
    with first.client() as client:
        assert client.request("LIST") == ["OK 0"]


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen()
    return sock


def test_a_client_port_in_use_stops_the_node_with_one_line(spawn_node):
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        node = spawn_node("a", port=port, wait=False)
        assert node.wait_exit() != 0
    output = node.output()
    message = f"twistd agenda: cannot listen on {HOST}:{port}: Address already in use"
    assert [line for line in output.splitlines() if "cannot listen" in line] == [
        line for line in output.splitlines() if message in line
    ]
    assert message in output
    assert "Traceback" not in output


def test_a_port_in_use_stops_a_daemonized_node_in_the_foreground(tmp_path):
    """Without -n (as tap-configs/cluster.sh runs it): a message, never a hang."""
    pidfile = tmp_path / "a.pid"
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        command = [
            sys.executable, "-c", TWISTD, "--pidfile", str(pidfile),
            "--logfile", str(tmp_path / "a.log"), "agenda", "--host", HOST,
            "--port", str(port), "--sync-port", str(free_port()),
            "--data-dir", str(tmp_path / "data"),
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )  # fmt: skip
        finally:
            if pidfile.exists():  # a daemon that did start: stop it
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert done.returncode != 0
    message = f"twistd agenda: cannot listen on {HOST}:{port}: Address already in use"
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not pidfile.exists()
    assert not (tmp_path / "data").exists()


def test_wait_ready_reports_a_node_that_exits(spawn_node):
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(NodeExited, match=f"cannot listen on {HOST}:{port}"):
            spawn_node("a", port=port)


def test_a_sync_port_in_use_stops_the_node_with_one_line(spawn_node):
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        node = spawn_node("a", sync_port=port, wait=False)
        assert node.wait_exit() != 0
    output = node.output()
    assert f"cannot listen on {HOST}:{port}: Address already in use" in output
    assert "Traceback" not in output


def test_sigterm_stops_cleanly_and_frees_the_folder(spawn_node):
    node = spawn_node("a")
    with node.client() as client:
        client.ok("ADD Ana 111")
    # twistd shuts down, then ends by the signal it got: -SIGTERM, not 0.
    assert node.stop() == -signal.SIGTERM
    log = node.log()
    assert "Received SIGTERM, shutting down." in log
    assert "Server Shut Down." in log
    assert "Traceback" not in log
    again = spawn_node("b", data_dir=node.data_dir)
    with again.client() as client:
        assert [c.name for c in client.contacts()] == ["Ana"]


def test_a_client_that_half_closes_gets_every_reply(spawn_node):
    # What ``printf 'ADD ..\nLIST\n' | nc -N 127.0.0.1 PORT`` does.
    node = spawn_node("a")
    with socket.create_connection((HOST, node.port), timeout=10) as sock:
        sock.sendall(b"ADD Ana 111\nLIST\n")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.decode().split("\r\n")[1:] == [
        "OK added Ana",
        "CONTACT Ana 111",
        "OK 1",
        "",
    ]


def test_watch_over_a_real_socket(spawn_node):
    node = spawn_node("a")
    with node.client() as watcher, node.client() as writer:
        assert watcher.request("WATCH") == ["OK watching"]
        writer.ok("ADD Ana 111")
        assert watcher.next_event() == "EVENT added Ana 111"
        writer.ok("REMOVE Ana")
        assert watcher.next_event() == "EVENT removed Ana 111"
        assert watcher.request("STATUS")[-1] == "OK status"


def test_idle_clients_are_closed_but_watchers_stay(spawn_node):
    node = spawn_node("a", extra_args=["--idle-timeout", "1"])
    with node.client() as watcher:
        watcher.request("WATCH")
        with node.client() as idle:
            assert idle.read_line() == "ERR timeout idle for too long; closing"
            assert idle.sock.recv(1) == b""
        # The watcher has been quiet longer than the timeout by now.
        with LineClient(HOST, node.port) as writer:
            writer.ok("ADD Ana 111")
        assert watcher.next_event() == "EVENT added Ana 111"
