"""``agenda``, the command-line client, against real nodes.

Most tests run the command line in this process (``cli.run`` on the test's
reactor) for speed; a few run the real console entry point in a child
process for what only a process shows: exit status, Ctrl-C, streams.
"""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import pytest_twisted
from nodeproc import REPO_ROOT, NodeProcess, free_port, running_node
from twisted.internet import defer, protocol, reactor

from twisted_agenda.client import cli
from twisted_agenda.client.cli import table
from twisted_agenda.model import Contact


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node("cli", tmp_path_factory.mktemp("cli-node")) as node:
        yield node


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"<exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}>"


async def agenda(*argv: str, server=None, environ=None, stdin: str = "") -> Result:
    """Run the command line in-process; ``server`` is a node or a string."""
    out, err = io.StringIO(), io.StringIO()
    if isinstance(server, NodeProcess):
        server = f"127.0.0.1:{server.port}"
    args = (["--server", server] if server else []) + list(argv)
    code = await cli.run(
        args,
        reactor,
        stdout=out,
        stderr=err,
        environ=environ or {},
        stdin=io.StringIO(stdin),
    )
    return Result(code, out.getvalue(), err.getvalue())


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


# -- output formats ----------------------------------------------------------------


def test_table_aligns_columns_even_with_wide_characters():
    text = table(
        [
            Contact("Maria da Silva", "+55 11 91234-5678", "m@example.com"),
            Contact("木村 拓哉", "+81 3-1234-5678"),
        ]
    )
    assert text == (
        "NAME            PHONE              EMAIL\n"
        "Maria da Silva  +55 11 91234-5678  m@example.com\n"
        "木村 拓哉       +81 3-1234-5678\n"
    )


def test_table_shows_notes_only_when_there_are_some():
    text = table([Contact("A", "123", note="x" * 100)])
    assert text.splitlines()[0].split() == ["NAME", "PHONE", "EMAIL", "NOTE"]
    assert text.splitlines()[1].endswith("x" * 59 + "…")


# -- commands ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_get_update_remove(node):
    name = unique("Maria da Silva")
    r = await agenda(
        "add", name, "+55 11 91234-5678", "-e", "m@example.com", server=node
    )
    assert (r.code, r.out, r.err) == (0, "", f"added {name}\n")

    r = await agenda("get", name.upper(), server=node)
    assert r.code == 0
    assert r.out == f"name:  {name}\nphone: +55 11 91234-5678\nemail: m@example.com\n"

    r = await agenda("update", name, "--email", "", "--note", "likes tea", server=node)
    assert (r.code, r.err) == (0, f"updated {name}\n")
    r = await agenda("update", name, "11 3333-4444", server=node)
    assert r.code == 0
    r = await agenda("--json", "get", name, server=node)
    assert json.loads(r.out) == {
        "name": name,
        "phone": "11 3333-4444",
        "email": "",
        "note": "likes tea",
    }

    r = await agenda("remove", name, server=node)
    assert (r.code, r.err) == (0, f"removed {name}\n")
    r = await agenda("get", name, server=node)
    assert (r.code, r.out) == (1, "")
    assert r.err == f"agenda: not found: no contact named {json.dumps(name)}\n"


@pytest_twisted.ensureDeferred
async def test_list_and_find_print_tables_or_json(node):
    tag = uuid.uuid4().hex[:6]
    names = [f"Ana {tag}", f"Zé {tag}", f"Ana=Bia: {tag}"]
    for i, name in enumerate(names):
        assert (
            await agenda("add", name, f"+55 11 91234-000{i}", server=node)
        ).code == 0

    r = await agenda("find", tag, server=node)
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAME", "PHONE", "EMAIL"]
    assert [line.split("  ")[0] for line in lines[1:]] == sorted(
        names, key=str.casefold
    )

    r = await agenda("find", tag, "--json", server=node)  # --json after the command
    assert {c["name"] for c in json.loads(r.out)} == set(names)

    r = await agenda("--json", "list", server=node)
    assert set(names) <= {c["name"] for c in json.loads(r.out)}

    # Digits however typed.
    r = await agenda("find", "(11) 91234 0001", server=node)
    assert f"Zé {tag}" in r.out

    # Like grep: nothing found is exit 1, and said on stderr.
    r = await agenda("find", f"nobody {tag}", server=node)
    assert (r.code, r.out) == (1, "")
    assert r.err == f"no contact matches 'nobody {tag}'\n"


@pytest_twisted.ensureDeferred
async def test_refusals_exit_1_with_the_nodes_reason(node):
    name = unique("Taken")
    await agenda("add", name, "123 456", server=node)
    r = await agenda("add", name.lower(), "999", server=node)
    assert r.code == 1
    assert r.err.startswith("agenda: exists: a contact named")
    r = await agenda("add", unique("Bad"), "call me", server=node)
    assert r.code == 1
    assert r.err.startswith("agenda: bad-request: phone")
    r = await agenda("remove", unique("Nobody"), server=node)
    assert r.code == 1
    assert r.err.startswith("agenda: not found: no contact named")


@pytest_twisted.ensureDeferred
async def test_usage_errors_exit_2(node):
    r = await agenda("update", "x", server=node)
    assert (r.code, r.err) == (
        2,
        "agenda update: nothing to change: give a phone, --email or --note\n",
    )
    r = await agenda("update", "x", "123", "--phone", "456", server=node)
    assert r.code == 2
    r = await agenda("frobnicate", server=node)
    assert r.code == 2
    assert "invalid choice: 'frobnicate'" in r.err
    assert r.err.startswith("usage: agenda")
    r = await agenda("add", "only-a-name", server=node)
    assert r.code == 2
    assert "required: phone" in r.err
    r = await agenda("list", server="host:notaport")
    assert (r.code, r.err) == (
        2,
        "agenda: --server: 'host:notaport': the port must be a number 1-65535\n",
    )
    r = await agenda("import", "/nonexistent/book.vcf", server=node)
    assert r.code == 2
    assert "cannot read /nonexistent/book.vcf" in r.err


@pytest_twisted.ensureDeferred
async def test_help_goes_to_stdout_and_exits_0():
    r = await agenda("--help")
    assert r.code == 0
    assert "AGENDA_SERVER" in r.out
    assert "exit status: 0 ok (watch: stopped with Ctrl-C), 1 not found" in r.out


@pytest_twisted.ensureDeferred
async def test_no_node_reachable_exits_2_naming_them(node):
    dead = free_port()
    r = await agenda("list", server=f"127.0.0.1:{dead}")
    assert (r.code, r.out) == (2, "")
    assert (
        r.err == f"agenda: no node reachable (127.0.0.1:{dead}: connection refused)\n"
    )
    # With a live node later in the list, it just works.
    r = await agenda("status", server=f"127.0.0.1:{dead},127.0.0.1:{node.port}")
    assert r.code == 0


@pytest_twisted.ensureDeferred
async def test_agenda_server_is_the_default_and_server_overrides_it(node):
    env = {"AGENDA_SERVER": f"127.0.0.1:{node.port}"}
    r = await agenda("status", environ=env)
    assert r.code == 0
    assert r.out.startswith("node: ")
    r = await agenda("status", server=f"127.0.0.1:{free_port()}", environ=env)
    assert r.code == 2


@pytest_twisted.ensureDeferred
async def test_status_shows_node_fields_and_json(node):
    r = await agenda("status", server=node)
    fields = dict(line.split(": ", 1) for line in r.out.splitlines())
    assert {"node", "version", "contacts"} <= set(fields)
    r = await agenda("status", "--json", server=node)
    data = json.loads(r.out)
    assert data["node"] == fields["node"]
    assert data["peers"] == []


# -- import and export ---------------------------------------------------------------


def _vcards(count: int) -> str:
    cards = []
    for i in range(count):
        if i % 2:
            cards.append(
                f"BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Person {i:03d}\r\n"
                f"TEL;VALUE=uri;TYPE=cell:tel:+55-11-9{i:04d}-{i:04d}\r\n"
                f"EMAIL:p{i}@example.com\r\nEND:VCARD\r\n"
            )
        else:
            cards.append(
                f"BEGIN:VCARD\nVERSION:3.0\nFN:Person {i:03d}\nN:{i:03d};Person;;;\n"
                f"TEL;TYPE=HOME:(11) 3{i:03d}-{i:04d}\nNOTE:card {i}\nEND:VCARD\n"
            )
    return "".join(cards)


@pytest_twisted.ensureDeferred
async def test_import_hundreds_of_cards_then_round_trip(spawn_node, tmp_path):
    node = spawn_node("import")
    book = tmp_path / "book.vcf"
    bad = (
        "BEGIN:VCARD\nVERSION:3.0\nFN:No Phone\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nFN:Bad Phone\nTEL:call me maybe\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nFN:Broken\nnot a vcard line\nEND:VCARD\n"
    )
    text = _vcards(150) + bad + _vcards(150).replace("Person", "Other")
    book.write_text(text, encoding="utf-8")
    lines_before_bad = len(_vcards(150).splitlines())

    r = await agenda("import", str(book), server=node)
    assert r.code == 1, r  # some cards were skipped
    err = r.err.splitlines()
    # Progress as it goes (stderr is not a terminal here: a line per 10%).
    progress = [line for line in err if line.startswith("importing ")]
    assert progress[-1] == "importing 303/303"
    assert len(progress) >= 5
    skipped = [line for line in err if ": skipped: " in line]
    first = lines_before_bad + 1
    assert len(skipped) == 3
    assert skipped[0] == (
        f"{book}: line {first}: skipped: 'No Phone' has no phone number (TEL)"
    )
    # The node's own words for a bad phone.
    assert skipped[1].startswith(f"{book}: line {first + 4} (Bad Phone): skipped: ")
    assert "phone" in skipped[1]
    assert skipped[2] == (
        f"{book}: line {first + 12}: skipped: cannot read the card: Failed to "
        "parse line: not a vcard line"
    )
    assert err[-1] == (
        f"{book}: 303 cards: 300 added, 0 updated, 0 unchanged, 3 skipped"
    )
    with node.client() as c:
        listed = c.contacts()
    assert len(listed) == 300
    assert Contact("Person 001", "+55 11 90001-0001", "p1@example.com") in listed
    assert Contact("Other 002", "(11) 3002-0002", note="card 2") in listed

    # Export, import again: nothing changes.
    for fmt, name in (("vcard", "out.vcf"), ("csv", "out.csv")):
        exported = tmp_path / name
        r = await agenda("export", str(exported), server=node)
        assert (r.code, r.err) == (0, f"exported 300 contacts to {exported}\n")
        r = await agenda("import", str(exported), "--json", server=node)
        assert r.code == 0, r
        assert r.err.splitlines()[-1] == (
            f"{exported}: 300 cards: 0 added, 0 updated, 300 unchanged, 0 skipped"
        )
        report = json.loads(r.out)
        assert len(report["unchanged"]) == 300, fmt
        with node.client() as c:
            assert c.contacts() == listed


@pytest_twisted.ensureDeferred
async def test_export_then_import_keeps_spaces_and_commas(spawn_node, tmp_path):
    # Readers used to collapse spaces inside names and notes ("spaced   name"
    # came back as a new contact "spaced name") and to cut at commas.
    node = spawn_node("spaces")
    book = [
        Contact("spaced   name", "123 456", note="two  spaces,  and a comma"),
        Contact("Silva, Maria", "+55 11 91234-5678", "m@example.com", "a, b; c"),
    ]
    for c in book:
        r = await agenda(
            "add", c.name, c.phone, "-e", c.email, "-n", c.note, server=node
        )
        assert r.code == 0, r
    for name in ("book.vcf", "book.csv"):
        exported = tmp_path / name
        assert (await agenda("export", str(exported), server=node)).code == 0
        r = await agenda("import", str(exported), server=node)
        assert (r.code, r.err.splitlines()[-1]) == (
            0,
            f"{exported}: 2 cards: 0 added, 0 updated, 2 unchanged, 0 skipped",
        ), r
    with node.client() as c:
        assert sorted(c.contacts(), key=lambda c: c.name) == sorted(
            book, key=lambda c: c.name
        )


class _DyingNode(protocol.Protocol):
    """Answers like a node, then closes the connection at the N+1th ADD."""

    def connectionMade(self):
        self.transport.write(b"OK agenda 0.1.0 node=dying\r\n")
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        factory = self.factory
        for line in lines:
            verb = line.split(b" ", 1)[0]
            if verb == b"STATUS":
                self.transport.write(b"node=dying\r\ndefault_region=BR\r\nOK\r\n")
            elif verb == b"LIST":
                self.transport.write(b"OK 0\r\n")
            elif verb == b"ADD":
                factory.adds += 1
                if factory.adds > factory.limit:
                    self.transport.loseConnection()
                    return
                self.transport.write(b'OK added "x"\r\n')


@pytest.fixture
def dying_node():
    ports = []

    def listen(limit: int) -> str:
        factory = protocol.Factory.forProtocol(_DyingNode)
        factory.limit, factory.adds = limit, 0
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return f"127.0.0.1:{port.getHost().port}"

    yield listen
    for port in ports:
        port.stopListening()


def _small_cards(count: int) -> str:
    return "".join(
        f"BEGIN:VCARD\nVERSION:3.0\nFN:Small {i:05d}\nTEL:+55 11 9{i:04d}-0000\n"
        "END:VCARD\n"
        for i in range(count)
    )


@pytest_twisted.ensureDeferred
async def test_an_import_whose_only_node_dies_ends_with_a_report(dying_node):
    # It used to hang: the cards left were skipped one inside the other's
    # callback until Python's recursion limit broke the chain.
    server = dying_node(50)
    run = defer.ensureDeferred(
        agenda("import", "-", server=server, stdin=_small_cards(200))
    )
    r = await run.addTimeout(60, reactor)
    assert r.code == 1, r
    err = r.err.splitlines()
    assert err[-1] == "stdin: 200 cards: 50 added, 0 updated, 0 unchanged, 150 skipped"
    assert (
        err[-2] == f"stdin: import stopped: no node left (lost node dying at {server})"
    )
    skipped = [line for line in err if ": skipped: " in line]
    assert len(skipped) == 150
    # The writes in flight may have been made; the rest were never sent.
    assert skipped[0] == (
        "stdin: line 251 (Small 00050): skipped: lost node dying before it "
        "answered (the connection closed); the change may or may not have been made"
    )
    assert skipped[-1] == (
        "stdin: line 996 (Small 00199): skipped: not sent: no node left "
        f"(lost node dying at {server})"
    )
    assert "Traceback" not in r.err


@pytest_twisted.ensureDeferred
async def test_an_import_carries_on_with_the_next_node(dying_node, spawn_node):
    node = spawn_node("next")
    server = f"{dying_node(50)},127.0.0.1:{node.port}"
    run = defer.ensureDeferred(
        agenda("import", "-", "--json", server=server, stdin=_small_cards(200))
    )
    r = await run.addTimeout(60, reactor)
    assert r.code == 0, r
    assert r.err.splitlines()[-1] == (
        "stdin: 200 cards: 200 added, 0 updated, 0 unchanged, 0 skipped"
    )
    assert json.loads(r.out)["stopped"] is None
    # The first 50 went to the node that died; every later one, including
    # those in flight when it died, is on the next node, once.
    with node.client() as c:
        names = [contact.name for contact in c.contacts()]
    assert names == [f"Small {i:05d}" for i in range(50, 200)]


@pytest_twisted.ensureDeferred
async def test_a_dry_run_predicts_what_the_node_refuses(node):
    tag = uuid.uuid4().hex[:6]
    csv_text = (
        "name,phone,email\n"
        f"Text Phone {tag},call me maybe,\n"  # 2
        f"Bad Email {tag},123 456,not-an-email\n"  # 3
        f"bad email {tag},123 457,ok@example.com\n"  # 4: the name is still free
        f"Fine {tag},(11) 91234-5678,\n"  # 5
    )
    dry = await agenda("import", "-", "--dry-run", server=node, stdin=csv_text)
    real = await agenda("import", "-", server=node, stdin=csv_text)
    assert dry.err.splitlines()[-1] == (
        "stdin: 4 cards: would be 2 added, 0 updated, 0 unchanged, 2 skipped"
    )
    assert real.err.splitlines()[-1] == (
        "stdin: 4 cards: 2 added, 0 updated, 0 unchanged, 2 skipped"
    )
    assert (dry.code, real.code) == (1, 1)
    # The same reasons, in the node's words, either way.
    assert dry.err.splitlines()[:-1] == real.err.splitlines()[:-1]
    assert f"line 3 (Bad Email {tag}): skipped: email 'not-an-email' does not" in (
        real.err
    )


@pytest_twisted.ensureDeferred
async def test_import_updates_known_names_and_can_dry_run(node):
    name = unique("Known")
    await agenda("add", name, "123 456", server=node)
    csv_text = (
        f"name,phone,email\n{name},123 456,new@example.com\n{unique('New')},789\n"
    )
    r = await agenda("import", "-", "--dry-run", server=node, stdin=csv_text)
    assert r.code == 0
    assert r.err.splitlines()[-1] == (
        "stdin: 2 cards: would be 1 added, 1 updated, 0 unchanged, 0 skipped"
    )
    r = await agenda("get", name, "--json", server=node)
    assert json.loads(r.out)["email"] == ""  # dry run changed nothing

    r = await agenda(
        "import", "-", "--format", "csv", "-v", server=node, stdin=csv_text
    )
    assert r.code == 0
    assert f"stdin: line 2 ({name}): updated" in r.err
    r = await agenda("get", name, "--json", server=node)
    assert json.loads(r.out)["email"] == "new@example.com"


@pytest_twisted.ensureDeferred
async def test_export_to_stdout_as_vcard_3_or_csv(node):
    name = unique("Exported")
    await agenda("add", name, "+55 11 91234-5678", server=node)
    r = await agenda("export", "--vcard-version", "3.0", server=node)
    assert r.code == 0
    assert "VERSION:3.0\r\n" in r.out
    assert f"FN:{name}\r\n" in r.out
    r = await agenda("export", "--format", "csv", server=node)
    assert r.out.startswith("name,phone,email,note\r\n")
    assert f"{name},+55 11 91234-5678,," in r.out


# -- the real console entry point ---------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
    )
    env.pop("AGENDA_SERVER", None)
    env.update(extra)
    return env


COMMAND = [sys.executable, "-c", "from twisted_agenda.client.cli import main; main()"]


def test_console_entry_point_exit_codes(node):
    env = _env(AGENDA_SERVER=f"127.0.0.1:{node.port}")
    name = unique("Proc")

    def run(*args):
        return subprocess.run(
            [*COMMAND, *args], env=env, capture_output=True, text=True, timeout=60
        )

    r = run("add", name, "123 456")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", f"added {name}\n")
    r = run("get", unique("Nobody"))
    assert r.returncode == 1
    r = run("--server", f"127.0.0.1:{free_port()}", "list")
    assert r.returncode == 2
    assert "no node reachable" in r.stderr
    assert "Traceback" not in r.stderr
    r = run()
    assert r.returncode == 2
    assert "the following arguments are required: COMMAND" in r.stderr


def test_watch_prints_changes_until_ctrl_c(node):
    proc = subprocess.Popen(
        [*COMMAND, "--server", f"127.0.0.1:{node.port}", "watch", "--json"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[tuple[str, str]] = queue.Queue()

    def pump(stream, label):
        for line in stream:
            lines.put((label, line.rstrip("\n")))

    pumps = [
        threading.Thread(target=pump, args=(stream, label), daemon=True)
        for stream, label in ((proc.stdout, "out"), (proc.stderr, "err"))
    ]
    for thread in pumps:
        thread.start()

    def expect(label: str, predicate, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                item = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(item)
            if item[0] == label and predicate(item[1]):
                return item[1]
        raise AssertionError(f"no matching {label} line; saw {seen}")

    try:
        expect("err", lambda line: line == "watching for changes; Ctrl-C stops")
        name = unique("Watched")
        with node.client() as c:
            c.ok(f'ADD "{name}" "123 456" email=w@example.com')
        line = expect("out", lambda line: name in line)
        assert json.loads(line) == {
            "event": "added",
            "name": name,
            "phone": "123 456",
            "email": "w@example.com",
            "note": "",
        }
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        # Quietly: the connection it closes itself is no "lost node".
        for thread in pumps:
            thread.join(timeout=15)
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        assert rest == [], "nothing is printed after Ctrl-C"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
