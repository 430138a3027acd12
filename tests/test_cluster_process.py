"""Three (and four) real ``twistd agenda`` processes replicating on loopback."""

from __future__ import annotations

import shutil

import pytest
from nodeproc import free_port, wait_for

from twisted_agenda.model import Contact

SYNC = ["--sync-interval", "0.5"]


@pytest.fixture
def cluster(spawn_node):
    """Three nodes, each with --peers naming the other two."""
    sync_ports = {name: free_port() for name in ("n1", "n2", "n3")}
    nodes = {}
    for name, sync_port in sync_ports.items():
        peers = [f"127.0.0.1:{p}" for other, p in sync_ports.items() if other != name]
        nodes[name] = spawn_node(
            name, node_id=name, sync_port=sync_port, peers=peers, extra_args=SYNC
        )
    return nodes


def book(node) -> list[Contact]:
    with node.client() as c:
        return c.contacts()


def converged(nodes, expected=None):
    books = [book(n) for n in nodes]
    same = all(b == books[0] for b in books)
    return same and (expected is None or books[0] == expected)


def test_add_on_one_node_is_seen_on_all(cluster):
    with cluster["n1"].client() as c:
        c.ok('ADD "Maria da Silva" "+55 11 91234-5678" email=maria@example.com')
    expected = [Contact("Maria da Silva", "+55 11 91234-5678", "maria@example.com")]
    wait_for(lambda: converged(cluster.values(), expected), timeout=10)
    with cluster["n3"].client() as c:
        peers = c.status().peers
    assert {p["node"] for p in peers} == {"n1", "n2"}
    assert all(p["state"] == "connected" for p in peers)


def test_killed_node_catches_up_by_itself(cluster):
    n1, n2, n3 = cluster["n1"], cluster["n2"], cluster["n3"]
    with n1.client() as c:
        c.ok("ADD Ana 111-1111")
        c.ok("ADD Bia 222-2222")
    wait_for(lambda: len(book(n2)) == 2, timeout=10)
    n2.crash()
    with n1.client() as c1, n3.client() as c3:
        c1.ok("ADD Caio 333-3333")
        c3.ok("UPDATE Ana email=ana@example.com")
        c3.ok("REMOVE Bia")
        for i in range(200):
            c1.send(f"ADD 'Person {i}' 555-{i:04d}")
        for _ in range(200):
            assert c1.read_reply()[-1].startswith("OK added")
    wait_for(lambda: converged([n1, n3]), timeout=10)
    n2.start().wait_ready()
    # Nobody talks to n2: it must pull what it missed on its own.
    wait_for(lambda: converged(cluster.values()), timeout=15)
    names = {c.name for c in book(n2)}
    assert {"Ana", "Caio", "Person 199"} <= names and "Bia" not in names
    assert Contact("Ana", "111-1111", "ana@example.com") in book(n2)


def test_new_node_with_empty_folder_receives_the_whole_book(cluster, spawn_node):
    with cluster["n1"].client() as c:
        for i in range(300):
            c.send(f"ADD 'Contact {i:03d}' 555-{i:04d} note='from n1'")
        for _ in range(300):
            assert c.read_reply()[-1].startswith("OK")
    with cluster["n2"].client() as c:
        c.ok("REMOVE 'Contact 007'")
    wait_for(lambda: converged(cluster.values()), timeout=10)
    peers = [n.sync_address for n in cluster.values()]
    n4 = spawn_node("n4", node_id="n4", peers=peers, extra_args=SYNC)
    wait_for(lambda: converged([*cluster.values(), n4]), timeout=15)
    assert len(book(n4)) == 299


def test_concurrent_edits_of_different_fields_both_survive(cluster):
    n1, n2 = cluster["n1"], cluster["n2"]
    with n1.client() as c:
        c.ok("ADD Maria 111-1111")
    wait_for(lambda: book(n2), timeout=10)
    with n1.client() as c1, n2.client() as c2:
        # Both sent before either reply is read: the edits race.
        c1.send("UPDATE Maria 999-9999")
        c2.send("UPDATE Maria email=maria@example.com")
        assert c1.read_reply() == ["OK updated Maria"]
        assert c2.read_reply() == ["OK updated Maria"]
    expected = [Contact("Maria", "999-9999", "maria@example.com")]
    wait_for(lambda: converged(cluster.values(), expected), timeout=10)


def test_watch_sees_changes_made_on_another_node(cluster):
    with cluster["n3"].client() as watcher, cluster["n1"].client() as writer:
        assert watcher.request("WATCH") == ["OK watching"]
        writer.ok("ADD Zeca 444-4444")
        assert watcher.next_event() == "EVENT added Zeca 444-4444"
        writer.ok("UPDATE Zeca note='call back'")
        assert watcher.next_event() == 'EVENT updated Zeca 444-4444 note="call back"'
        writer.ok("REMOVE Zeca")
        assert watcher.next_event().startswith("EVENT removed Zeca")


def test_a_wiped_node_with_its_old_id_gets_its_own_changes_back(cluster):
    n2 = cluster["n2"]
    with n2.client() as c:
        c.ok("ADD Ana 111-1111")
        c.ok("ADD Bia 222-2222")
    wait_for(lambda: converged(cluster.values()), timeout=10)
    n2.crash()
    shutil.rmtree(n2.data_dir)
    n2.start().wait_ready()  # same --node-id n2, empty folder
    wait_for(lambda: converged(cluster.values()), timeout=10)
    assert "holds changes of ours up to n2:2" in n2.log()
    with n2.client() as c:
        c.ok("UPDATE Ana email=ana@example.com")  # numbered n2:3, not n2:1 again
    expected = [
        Contact("Ana", "111-1111", "ana@example.com"),
        Contact("Bia", "222-2222"),
    ]
    wait_for(lambda: converged(cluster.values(), expected), timeout=10)


def test_the_node_that_lost_the_tie_redials_when_the_winner_dies(spawn_node):
    """Real connectors: the dialer whose first attempt succeeded (so Twisted
    never handed its factory the connector) must still redial."""
    n1_sync, n2_sync = free_port(), free_port()
    n1 = spawn_node(
        "n1", node_id="n1", sync_port=n1_sync, peers=[f"127.0.0.1:{n2_sync}"]
    )
    n2 = spawn_node(
        "n2", node_id="n2", sync_port=n2_sync, peers=[f"127.0.0.1:{n1_sync}"]
    )

    def peers(node):
        with node.client() as c:
            return [(p["node"], p["state"]) for p in c.status().peers]

    wait_for(lambda: peers(n2) == [("n1", "connected")], timeout=10)
    wait_for(lambda: peers(n1) == [("n2", "connected")], timeout=10)
    n1.crash()
    wait_for(lambda: peers(n2) == [("n1", "retrying")], timeout=10)
    n1.peers = []  # back without --peers: only n2 can dial
    n1.start().wait_ready()
    with n1.client() as c:
        c.ok("ADD Zed 123456")
    wait_for(lambda: [x.name for x in book(n2)] == ["Zed"], timeout=45)
    assert peers(n2) == [("n1", "connected")]
