"""The Tk window, for real: Xvfb, a Tk root on the test's reactor, real nodes.

The window runs in this process (``tksupport`` drives Tk from the reactor
that pytest-twisted runs), so tests type into its entries, invoke its
buttons and read its table while it talks to real ``twistd`` nodes. One
test runs ``python -m twisted_agenda.tk`` as a program and types into it
with xdotool. Set AGENDA_SCREENSHOT=docs/screenshot.png to save the
window's picture there.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import tkinter as tk
import zlib
from pathlib import Path

import pytest
import pytest_twisted
from nodeproc import REPO_ROOT, NodeProcess, wait_for
from nodeproc import until as poll
from twisted.internet import reactor, tksupport

from twisted_agenda.client import Event, request_line
from twisted_agenda.client.tk import AgendaApp, ConfirmDialog, ContactDialog
from twisted_agenda.model import Contact

XVFB = shutil.which("Xvfb")
XVFB_OPTIONS = ["-nolisten", "tcp", "-screen", "0", "1024x768x24"]
pytestmark = pytest.mark.skipif(
    XVFB is None, reason="Xvfb is not installed (apt-get install xvfb)"
)

BOOK = [
    Contact("Maria da Silva", "+55 11 91234-5678", "maria@example.com"),
    Contact("João d'Ávila", "+351 21 123 4567", "joao@example.pt", "Lisbon office"),
    Contact('Ana: "the {boss}" \\ [x] $y', "+1 201-555-0123", "ana@example.com"),
    Contact("Zoë Brandt", "+49 30 1234567", "zoe@example.de"),
]


# -- fixtures ------------------------------------------------------------------


@contextlib.contextmanager
def xvfb():
    """A private X server; Xvfb picks a free display number itself."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [XVFB, "-displayfd", str(write_end), *XVFB_OPTIONS],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    try:
        number = b""
        deadline = time.monotonic() + 20
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                raise RuntimeError("Xvfb did not report its display in 20 s")
            chunk = os.read(read_end, 16)
            if not chunk:
                raise RuntimeError(f"Xvfb exited: {proc.stderr.read().decode()}")
            number += chunk
        yield f":{number.decode().strip()}"
    finally:
        os.close(read_end)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def display():
    with xvfb() as display:
        yield display


@pytest_twisted.async_yield_fixture()
async def window(display, tmp_path):
    root = tk.Tk(screenName=display, className="Agenda")
    tksupport.install(root)
    app = AgendaApp(
        root, reactor, servers="", config_file=tmp_path / "tk.json", request_timeout=3
    )
    _ui.app = app
    failures = []
    app._callback_failed = lambda *exc: failures.append(exc)
    root.report_callback_exception = app._callback_failed
    yield app
    await app.close()
    tksupport.uninstall()
    root.destroy()
    assert failures == [], "a window callback raised"


class _UI:
    """What the window said last, for a timeout's message."""

    app: AgendaApp | None = None

    def __str__(self) -> str:
        app = self.app
        if app is None:
            return "no window"
        dialog = getattr(app.dialog, "error_var", None)
        return (
            f"status={app.status_var.get()!r} message={app.message_var.get()!r} "
            f"dialog={dialog.get() if dialog else None!r} rows={app.rows()!r}"
        )


_ui = _UI()


def add_contacts(node: NodeProcess, contacts) -> None:
    with node.client() as c:
        for contact in contacts:
            c.ok(
                request_line(
                    "ADD",
                    name=contact.name,
                    phone=contact.phone,
                    email=contact.email or None,
                    note=contact.note or None,
                )
            )


def book_of(node: NodeProcess) -> list[Contact]:
    with node.client() as c:
        return c.contacts()


async def until(predicate, timeout: float = 20.0, message: str = ""):
    """``nodeproc.until``, saying what the window showed if it times out."""
    try:
        return await poll(predicate, timeout, message)
    except AssertionError as e:
        raise AssertionError(f"{e}: {_ui}") from None


def rows_of(contacts) -> list[tuple[str, str, str]]:
    ordered = sorted(contacts, key=lambda c: c.key)
    return [(c.name, c.phone, c.email) for c in ordered]


async def connect(app: AgendaApp, *nodes: NodeProcess) -> None:
    app.servers_var.set(", ".join(f"127.0.0.1:{n.port}" for n in nodes))
    app.connect_button.invoke()
    await until(
        lambda: app.status_var.get().startswith("Connected to node"), timeout=30
    )


async def press(widget, key: str) -> None:
    """A key press as Tk delivers it: to the widget with the keyboard focus."""
    await until(widget.winfo_viewable)
    widget.focus_force()
    widget.event_generate(key)


def type_into(entry, text: str) -> None:
    entry.delete(0, "end")
    for char in text:
        entry.insert("end", char)


async def search(app: AgendaApp, text: str) -> list[tuple[str, ...]]:
    """Type into the search box; the rows once the window has filtered."""
    type_into(app.search_entry, text)
    await until(lambda: not app.searching, timeout=5)
    return app.rows()


# -- the window ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_window_shows_the_book_and_which_node_it_uses(window, spawn_node):
    node = spawn_node("a", node_id="lisboa")
    add_contacts(node, BOOK)
    await connect(window, node)
    await until(lambda: window.rows() == rows_of(BOOK))
    assert (
        window.status_var.get() == f"Connected to node lisboa at 127.0.0.1:{node.port}"
    )
    assert window.root.title() == "Agenda — node lisboa"
    assert window.count_var.get() == "4 contacts"


@pytest_twisted.ensureDeferred
async def test_the_search_box_filters_as_you_type(window, spawn_node):
    node = spawn_node("a")
    add_contacts(node, BOOK)
    await connect(window, node)
    await until(lambda: len(window.rows()) == 4)
    shown = []
    for prefix in ("a", "an", "ana"):
        shown.append([row[0] for row in await search(window, prefix)])
    assert shown == [
        [c.name for c in sorted(BOOK, key=lambda c: c.key)],
        [BOOK[2].name, "Zoë Brandt"],
        [BOOK[2].name],
    ]
    # Accents and case do not matter; digits match however typed.
    assert [r[0] for r in await search(window, "ZOE")] == ["Zoë Brandt"]
    assert [r[0] for r in await search(window, "(11) 91234 5678")] == ["Maria da Silva"]
    assert window.count_var.get() == "1 of 4 contacts"
    assert [r[0] for r in await search(window, "{boss}")] == [BOOK[2].name]
    assert len(await search(window, "")) == 4
    # A click on a heading sorts by that column; a second one reverses.
    click_phone_heading = window.tree.heading("phone", "command")
    window.tree.tk.call(click_phone_heading)
    phones = [row[1] for row in window.rows()]
    assert phones == sorted(phones)
    window.tree.tk.call(click_phone_heading)
    assert [row[1] for row in window.rows()] == sorted(phones, reverse=True)


@pytest_twisted.ensureDeferred
async def test_add_edit_and_remove_with_buttons_and_keys(window, spawn_node):
    node = spawn_node("a")
    await connect(window, node)
    name = 'x:y "quoted" {brace} Ana=Bia'

    # Add, with the button.
    window.add_button.invoke()
    dialog = window.dialog
    assert isinstance(dialog, ContactDialog)
    dialog.vars["name"].set(name)
    dialog.vars["phone"].set("+55 11 91234-5678")
    dialog.vars["email"].set("x@example.com")
    dialog.save_button.invoke()
    await until(lambda: window.dialog is None)
    assert book_of(node) == [Contact(name, "+55 11 91234-5678", "x@example.com")]
    await until(lambda: window.rows() == [(name, "+55 11 91234-5678", "x@example.com")])
    assert window.message_var.get() == f"Added {name}."

    # Edit, with Enter on the selected row.
    assert window.select(name)
    await press(window.tree, "<Return>")
    dialog = window.dialog
    assert isinstance(dialog, ContactDialog)
    assert dialog.vars["name"].get() == name
    assert "readonly" in dialog.entries["name"].state()
    dialog.vars["email"].set("")
    dialog.vars["note"].set("met at the conference")
    await press(dialog.entries["note"], "<Return>")
    await until(lambda: window.dialog is None)
    assert book_of(node) == [
        Contact(name, "+55 11 91234-5678", "", "met at the conference")
    ]
    await until(lambda: window.rows() == [(name, "+55 11 91234-5678", "")])

    # Remove, with the Delete key: it asks first; Cancel keeps the contact.
    await press(window.tree, "<Delete>")
    assert isinstance(window.dialog, ConfirmDialog)
    window.dialog.cancel_button.invoke()
    assert window.dialog is None
    assert len(book_of(node)) == 1
    window.remove_button.invoke()
    window.dialog.remove_button.invoke()
    await until(lambda: window.rows() == [])
    assert book_of(node) == []
    await until(lambda: window.message_var.get() == f"Removed {name}.")


@pytest_twisted.ensureDeferred
async def test_errors_are_shown_in_the_window(window, spawn_node, capfd):
    node = spawn_node("a")
    add_contacts(node, BOOK[:1])

    window.servers_var.set("127.0.0.1:notaport")
    window.connect_button.invoke()
    assert window.message_var.get() == (
        "Servers: '127.0.0.1:notaport': the port must be a number 1-65535"
    )
    await connect(window, node)
    await until(lambda: len(window.rows()) == 1)

    window.edit_button.invoke()
    assert window.message_var.get() == "Select a contact to edit."
    window.remove_button.invoke()
    assert window.message_var.get() == "Select a contact to remove."

    window.add_button.invoke()
    dialog = window.dialog
    dialog.vars["name"].set("MARIA DA SILVA")
    dialog.vars["phone"].set("123 456")
    dialog.save_button.invoke()
    await until(lambda: "exists" in dialog.error_var.get())
    assert dialog.error_var.get() == 'A contact named "MARIA DA SILVA" exists'
    assert window.dialog is dialog  # still open, to fix and retry
    dialog.vars["name"].set("Someone Else")
    dialog.vars["phone"].set("call me")
    dialog.save_button.invoke()
    await until(lambda: dialog.error_var.get().startswith("Phone"))
    assert "call me" in dialog.error_var.get() or "digits" in dialog.error_var.get()
    dialog.vars["phone"].set("123 456")
    dialog.save_button.invoke()
    await until(lambda: window.dialog is None)

    # Removed meanwhile by someone else: not found, said in the window.
    window.select("Someone Else")
    window.remove_button.invoke()
    with node.client() as c:
        c.ok('REMOVE "Someone Else"')
    window.dialog.remove_button.invoke()
    await until(lambda: window.message_var.get() == 'No contact named "Someone Else"')
    assert "Traceback" not in "".join(capfd.readouterr())


@pytest_twisted.ensureDeferred
async def test_changes_by_others_on_any_node_appear_live(window, spawn_node):
    b = spawn_node("b", node_id="b")
    a = spawn_node("a", node_id="a", peers=[b.sync_address])
    await connect(window, a)
    # Someone else on the same node.
    add_contacts(a, BOOK[:1])
    await until(lambda: window.rows() == rows_of(BOOK[:1]))
    # Someone else on another node: it arrives by replication, then WATCH.
    add_contacts(b, BOOK[1:2])
    await until(lambda: window.rows() == rows_of(BOOK[:2]), timeout=20)
    with b.client() as c:
        c.ok(request_line("UPDATE", name=BOOK[0].name, email="new@example.com"))
        c.ok(request_line("REMOVE", BOOK[1].name))
    expected = [(BOOK[0].name, BOOK[0].phone, "new@example.com")]
    await until(lambda: window.rows() == expected, timeout=20)


@pytest_twisted.ensureDeferred
async def test_when_its_node_dies_the_window_moves_to_the_next(window, spawn_node):
    b = spawn_node("b", node_id="b")
    a = spawn_node("a", node_id="a", peers=[b.sync_address])
    add_contacts(a, BOOK)
    await until(lambda: len(book_of(b)) == 4, timeout=20)
    await connect(window, a, b)
    await until(lambda: len(window.rows()) == 4)
    a.crash()
    await until(lambda: "node b" in window.status_var.get())
    assert window.status_var.get() == (
        f"Reconnected (moved from 127.0.0.1:{a.port}): node b at 127.0.0.1:{b.port}"
    )
    assert window.root.title() == "Agenda — node b"
    assert window.rows() == rows_of(BOOK)
    add_contacts(b, [Contact("After Failover", "123 456")])
    await until(lambda: ("After Failover", "123 456", "") in window.rows())


@pytest_twisted.ensureDeferred
async def test_the_window_keeps_working_while_a_node_hangs(window, spawn_node):
    node = spawn_node("a")
    add_contacts(node, BOOK)
    await connect(window, node)
    await until(lambda: len(window.rows()) == 4)
    node.kill(signal.SIGSTOP)
    try:
        window.add_button.invoke()
        dialog = window.dialog
        dialog.vars["name"].set("Waiting")
        dialog.vars["phone"].set("123 456")
        dialog.save_button.invoke()
        assert dialog.error_var.get() == "Saving…"
        # The request is stuck, the window is not.
        assert [r[0] for r in await search(window, "zoe")] == ["Zoë Brandt"]
        await until(lambda: "no reply" in dialog.error_var.get(), timeout=10)
        error = dialog.error_var.get()
        assert error.startswith("Lost node ")
        assert "no reply within 3 s" in error
        assert "the change may or may not have been made" in error
        # The dialog stays, ready to try again.
        assert window.dialog is dialog
        assert "disabled" not in dialog.save_button.state()
    finally:
        node.kill(signal.SIGCONT)
    # The node is back: the window reconnects by itself.
    await until(lambda: window.status_var.get().startswith("Reconnected"), 15)


@pytest_twisted.ensureDeferred
async def test_a_node_that_hangs_while_watched_is_left_for_the_next(window, spawn_node):
    # Nothing is asked of a node while the window only watches: without a
    # heartbeat a stopped node went unnoticed, "connected" for ever.
    b = spawn_node("b", node_id="b")
    a = spawn_node("a", node_id="a", peers=[b.sync_address])
    add_contacts(a, BOOK[:1])
    await until(lambda: len(book_of(b)) == 1, timeout=20)
    window.heartbeat = 0.5
    await connect(window, a, b)
    await until(lambda: len(window.rows()) == 1)
    statuses = []
    window.status_var.trace_add(
        "write", lambda *_: statuses.append(window.status_var.get())
    )
    a.kill(signal.SIGSTOP)
    try:
        await until(lambda: "node b" in window.status_var.get(), timeout=20)
        assert window.status_var.get() == (
            f"Reconnected (moved from 127.0.0.1:{a.port}): node b at 127.0.0.1:{b.port}"
        )
        assert f"Lost node a at 127.0.0.1:{a.port} (no reply within 3 s)" in statuses
        # Changes made elsewhere show again.
        add_contacts(b, BOOK[1:2])
        await until(lambda: window.rows() == rows_of(BOOK[:2]))
    finally:
        a.kill(signal.SIGCONT)


@pytest_twisted.ensureDeferred
async def test_the_search_reads_local_numbers_in_the_nodes_region(window, spawn_node):
    node = spawn_node("a", extra_args=["--default-region", "BR"])
    add_contacts(node, [Contact("Maria da Silva", "(11) 91234-5678")])
    assert book_of(node)[0].phone == "+55 11 91234-5678"
    await connect(window, node)
    await until(lambda: len(window.rows()) == 1)
    # As FIND on the node: "011" is Brazil's trunk prefix before the area code.
    with node.client() as c:
        assert len(c.contacts('FIND "011 91234-5678"')) == 1
    await until(lambda: window.region == "BR")
    assert [r[0] for r in await search(window, "011 91234-5678")] == ["Maria da Silva"]


@pytest_twisted.ensureDeferred
async def test_typing_filters_once_the_typing_pauses(window):
    window.contacts = {c.key: c for c in BOOK}
    window.render()
    renders = []
    render = window.render
    window.render = lambda: (renders.append(window.search_var.get()), render())
    type_into(window.search_entry, "zoe")
    # Three keys, no filtering yet: each key waits for the next.
    assert len(window.rows()) == 4 and renders == []
    await until(lambda: window.rows() == rows_of(BOOK[3:]), timeout=5)
    assert renders == ["zoe"]
    # Enter (or Down, to the table) filters at once.
    type_into(window.search_entry, "maria")
    await press(window.search_entry, "<Return>")
    assert [r[0] for r in window.rows()] == ["Maria da Silva"]


@pytest_twisted.ensureDeferred
async def test_a_big_book_renders_and_filters_quickly(window):
    # It used to be quadratic (one tree.index() per row) and redrew every
    # row on every key: 20,000 contacts took 2.3 s to show, 2.6 s per key.
    count = 30_000
    window.contacts = {
        c.key: c
        for c in (
            Contact(f"Person {i:06d}", f"+55 31 9{i % 9 + 1}{i % 1000:03d}-{i:04d}")
            for i in range(count)
        )
    }
    timings = {}
    for query in ("", "P", "Pe", "Person 0001", "", "zzz", ""):
        window.search_var.set(query)
        started = time.perf_counter()
        window.render()
        timings[query or "(all)"] = time.perf_counter() - started
        expected = 100 if query == "Person 0001" else 0 if query == "zzz" else count
        assert len(window.tree.get_children()) == expected, query
    assert max(timings.values()) < 2.5, timings
    # Rows follow changes to the book.
    window._event(Event("removed", window.contacts["person 000000"]))
    window._event(Event("added", Contact("ZZ New", "123")))
    window.render()
    children = window.tree.get_children()
    assert len(children) == count
    assert window.tree.set(children[-1], "name") == "ZZ New"
    assert window.tree.set(children[0], "name") == "Person 000001"


@pytest_twisted.ensureDeferred
async def test_the_window_finds_what_the_node_finds(window):
    # visible() is the node's FIND (model.matches), worked out faster.
    from twisted_agenda.model import matches

    book = [*BOOK, Contact("Local", "(11) 3333-4444"), Contact("Ext", "1234 ext. 5")]
    queries = ["a", "ZOE", "11 91234", "011 3333-4444", "3333", "ext", "+55", " ", "5"]
    window.contacts = {c.key: c for c in book}
    for region in (None, "BR"):
        window.region = region
        window._haystacks.clear()
        for query in queries:
            window.search_var.set(query)
            found = {c.name for c in window.visible()}
            assert found == {c.name for c in book if matches(c, query, region)}, (
                query,
                region,
            )


@pytest_twisted.ensureDeferred
async def test_long_messages_do_not_widen_the_window(window):
    # Xvfb has no window manager: nothing stops a window growing to fit.
    window.root.update_idletasks()
    width = window.root.winfo_reqwidth()
    window.status_var.set("Lost node a1 at 127.0.0.1:9010 (no reply within 15 s). " * 5)
    window.complain("No contact named " + "x" * 300)
    window.root.update_idletasks()
    assert window.root.winfo_reqwidth() == width


@pytest_twisted.ensureDeferred
async def test_the_servers_are_remembered(window, spawn_node, display, tmp_path):
    node = spawn_node("a")
    b = f"127.0.0.1:{node.port + 1 if node.port < 65535 else 1}"
    window.servers_var.set(f"127.0.0.1:{node.port},{b}")
    window.connect_button.invoke()
    await until(lambda: window.status_var.get().startswith("Connected to node"))
    root = tk.Tk(screenName=display, className="Agenda")
    try:
        again = AgendaApp(root, reactor, config_file=tmp_path / "tk.json")
        assert again.servers_var.get() == f"127.0.0.1:{node.port}, {b}"
    finally:
        root.destroy()


# -- as a program, and its picture ---------------------------------------------


def _xdotool(display: str, *args: str) -> str:
    result = subprocess.run(
        ["xdotool", *args],
        env={**os.environ, "DISPLAY": display},
        capture_output=True,
        text=True,
        timeout=20,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def test_runs_as_a_program_driven_by_the_keyboard(spawn_node, tmp_path):
    node = spawn_node("a", node_id="prog")
    # Its own X server: keys typed here must never reach the other windows.
    with xvfb() as display:
        _run_program(display, node, tmp_path)


def _run_program(display: str, node: NodeProcess, tmp_path: Path) -> None:
    add_contacts(node, BOOK)
    env = dict(os.environ)
    env.update(
        DISPLAY=display,
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        AGENDA_SERVER=f"127.0.0.1:{node.port}",
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])
        ),
    )
    errors = tmp_path / "tk.err"
    with open(errors, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "twisted_agenda.tk"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )
    try:
        window = wait_for(lambda: _xdotool(display, "search", "--name", "^Agenda$"))
        # It asks first, prefilled from AGENDA_SERVER: Enter connects.
        _xdotool(display, "windowfocus", "--sync", window)
        _xdotool(display, "key", "--window", window, "Return")
        wait_for(lambda: _xdotool(display, "search", "--name", "node prog$"))
        config = tmp_path / "config" / "twisted_agenda" / "tk.json"
        assert json.loads(config.read_text())["servers"] == f"127.0.0.1:{node.port}"
        # Ctrl+Q closes the window and ends the program cleanly.
        _xdotool(display, "key", "--window", window, "ctrl+q")
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in errors.read_text()


def test_without_a_display_it_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "twisted_agenda.tk", "--server", "127.0.0.1:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("agenda-tk: cannot open a window: ")
    assert "Traceback" not in result.stderr


def xwd_to_png(data: bytes) -> tuple[bytes, int, int, int]:
    """An ``xwd`` dump of a 24-bit TrueColor screen as PNG.

    Returns the PNG, its width and height, and how many colours it has.
    """
    fields = struct.unpack(">25I", data[:100])
    header_size, version, pixmap_format = fields[0], fields[1], fields[2]
    width, height, byte_order = fields[4], fields[5], fields[7]
    bits_per_pixel, bytes_per_line, masks = fields[11], fields[12], fields[14:17]
    assert (version, pixmap_format, bits_per_pixel) == (7, 2, 32), fields
    assert masks == (0xFF0000, 0xFF00, 0xFF), masks
    # Each pixel is B G R x in memory when LSB first, x R G B otherwise.
    red, green, blue = (2, 1, 0) if byte_order == 0 else (1, 2, 3)
    offset = header_size + fields[19] * 12
    raw = bytearray()
    colours = set()
    for y in range(height):
        line = data[offset + y * bytes_per_line :][: width * 4]
        rgb = bytearray(width * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = line[red::4], line[green::4], line[blue::4]
        raw += b"\0" + rgb  # PNG filter type 0 (none) for each row
        colours.update(struct.unpack(f"{width}I", line))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    png += chunk(b"IEND", b"")
    return png, width, height, len(colours)


@pytest_twisted.ensureDeferred
async def test_a_screenshot_of_the_window(window, spawn_node, display, tmp_path):
    node = spawn_node("a", node_id="a1")
    add_contacts(node, BOOK)
    window.root.geometry("760x470")
    await connect(window, node)
    await until(lambda: len(window.rows()) == len(BOOK))
    window.select(BOOK[0].name)
    await until(lambda: window.root.winfo_width() == 760)
    await until(window.root.winfo_viewable)
    window.root.update_idletasks()  # Tk paints in idle callbacks: run them now
    frame = window.root.wm_frame()
    dump = subprocess.run(
        ["xwd", "-silent", "-display", display, "-id", frame],
        capture_output=True,
        check=True,
        timeout=20,
    ).stdout
    png, width, height, colours = xwd_to_png(dump)
    assert (width, height) == (760, 470)
    assert colours > 20, "the window looks blank"
    (tmp_path / "window.png").write_bytes(png)
    target = os.environ.get("AGENDA_SCREENSHOT")
    if target:
        Path(target).write_bytes(png)
