"""The agenda window: Tkinter on Twisted's reactor (``twisted.internet.tksupport``).

Tk callbacks only start network work and return; replies come back as
Deferred callbacks on the same thread, so the window never waits on a
socket. Dialogs are plain Toplevels with callbacks, not Tk's modal ones,
whose nested event loop would stop the reactor while they are open.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import ttk
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_agenda import __version__
from twisted_agenda.client import (
    DEFAULT_SERVERS,
    AgendaClient,
    AgendaError,
    ConnectionFailed,
    Event,
    Status,
    parse_servers,
)
from twisted_agenda.model import Contact, contact_key, matches
from twisted_agenda.phone import phone_matches

log = Logger()

TITLE = "Agenda"
COLUMNS = ("name", "phone", "email")
#: Seconds between attempts while no node at all can be reached.
RETRY_SECONDS = 5.0


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "twisted_agenda" / "tk.json"


def load_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_config(path: Path, config: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(config, indent=2), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as e:
        # Remembering is a convenience; failing to must not stop the window.
        log.warn("cannot save {path}: {error}", path=path, error=e)


def _message(failure: Failure) -> str:
    """A sentence for the window, never a traceback."""
    error = failure.value
    if isinstance(error, AgendaError):
        return error.message[:1].upper() + error.message[1:]
    log.failure("unexpected error in the agenda window", failure)
    return f"Unexpected error: {failure.getErrorMessage()}"


class ContactDialog:
    """Add or edit one contact; stays open showing the node's refusal if any."""

    def __init__(
        self,
        app: AgendaApp,
        contact: Contact | None = None,
    ) -> None:
        self.app = app
        self.original = contact
        self.window = tk.Toplevel(app.root)
        self.window.title("Edit contact" if contact else "Add contact")
        self.window.transient(app.root)
        frame = ttk.Frame(self.window, padding=12)
        frame.grid(sticky="nsew")
        self.window.columnconfigure(0, weight=1)
        frame.columnconfigure(1, weight=1)
        self.vars: dict[str, tk.StringVar] = {}
        self.entries: dict[str, ttk.Entry] = {}
        labels = (("name", "Name"), ("phone", "Phone"), ("email", "Email"))
        for row, (field, label) in enumerate((*labels, ("note", "Note"))):
            ttk.Label(frame, text=label + ":").grid(row=row, column=0, sticky="w")
            var = tk.StringVar(value=getattr(contact, field) if contact else "")
            entry = ttk.Entry(frame, textvariable=var, width=40)
            entry.grid(row=row, column=1, sticky="ew", pady=2)
            self.vars[field], self.entries[field] = var, entry
        if contact is not None:
            # The name is the contact's identity: it cannot be changed.
            self.entries["name"].state(["readonly"])
        self.error_var = tk.StringVar()
        self.error_label = ttk.Label(
            frame, textvariable=self.error_var, foreground="#b00020", wraplength=360
        )
        self.error_label.grid(row=4, column=0, columnspan=2, sticky="w", pady=(6, 0))
        buttons = ttk.Frame(frame)
        buttons.grid(row=5, column=0, columnspan=2, sticky="e", pady=(8, 0))
        self.save_button = ttk.Button(
            buttons, text="Save", command=self.save, default="active"
        )
        self.cancel_button = ttk.Button(buttons, text="Cancel", command=self.close)
        self.save_button.grid(row=0, column=0, padx=4)
        self.cancel_button.grid(row=0, column=1)
        self.window.bind("<Return>", lambda e: self.save())
        self.window.bind("<KP_Enter>", lambda e: self.save())
        self.window.bind("<Escape>", lambda e: self.close())
        self.window.protocol("WM_DELETE_WINDOW", self.close)
        focus = "phone" if contact else "name"
        self.entries[focus].focus_set()
        self.busy = False

    def value(self, field: str) -> str:
        return self.vars[field].get().strip()

    def save(self) -> None:
        if self.busy:
            return
        client = self.app.client
        if client is None:
            self.error_var.set("Not connected to any node.")
            return
        if self.original is None:
            d = client.add(
                self.value("name"),
                self.value("phone"),
                email=self.value("email") or None,
                note=self.value("note") or None,
            )
            done = "Added"
        else:
            changes = {
                f: self.value(f)
                for f in ("phone", "email", "note")
                if self.value(f) != getattr(self.original, f)
            }
            if not changes:
                self.close()
                return
            d = client.update(self.original.name, **changes)
            done = "Saved"
        self.busy = True
        self.save_button.state(["disabled"])
        self.error_var.set("Saving…")
        d.addCallbacks(self._saved, self._refused, callbackArgs=(done,))

    def _saved(self, name: str, done: str) -> None:
        self.app.say(f"{done} {name}.")
        self.close()

    def _refused(self, failure: Failure) -> None:
        self.busy = False
        if self.window.winfo_exists():
            self.save_button.state(["!disabled"])
            self.error_var.set(_message(failure))

    def close(self) -> None:
        if self.app.dialog is self:
            self.app.dialog = None
        self.window.destroy()


class ConfirmDialog:
    """ "Remove X?" with Remove / Cancel, without a nested event loop."""

    def __init__(self, app: AgendaApp, contact: Contact) -> None:
        self.app = app
        self.contact = contact
        self.window = tk.Toplevel(app.root)
        self.window.title("Remove contact")
        self.window.transient(app.root)
        frame = ttk.Frame(self.window, padding=12)
        frame.grid(sticky="nsew")
        text = f"Remove “{contact.name}” ({contact.phone})?\nEvery node will forget it."
        ttk.Label(frame, text=text, wraplength=360).grid(
            row=0, column=0, columnspan=2, sticky="w"
        )
        self.remove_button = ttk.Button(frame, text="Remove", command=self.confirm)
        self.cancel_button = ttk.Button(
            frame, text="Cancel", command=self.close, default="active"
        )
        self.remove_button.grid(row=1, column=0, sticky="e", padx=4, pady=(10, 0))
        self.cancel_button.grid(row=1, column=1, sticky="e", pady=(10, 0))
        self.window.bind("<Escape>", lambda e: self.close())
        self.window.protocol("WM_DELETE_WINDOW", self.close)
        # Safe default: Enter on the dialog cancels, the button must be chosen.
        self.cancel_button.focus_set()

    def confirm(self) -> None:
        self.close()
        self.app.remove_now(self.contact)

    def close(self) -> None:
        if self.app.dialog is self:
            self.app.dialog = None
        self.window.destroy()


class AgendaApp:
    """The main window. ``root`` must already be driven by the reactor."""

    def __init__(
        self,
        root: tk.Tk,
        reactor: Any,
        servers: str | None = None,
        config_file: Path | None = None,
        request_timeout: float = 15.0,
        on_close: Callable[[], Any] | None = None,
    ) -> None:
        self.root = root
        self.reactor = reactor
        self.config_file = config_file or config_path()
        self.config = load_config(self.config_file)
        self.request_timeout = request_timeout
        self.on_close = on_close
        self.client: AgendaClient | None = None
        self.contacts: dict[str, Contact] = {}
        self.dialog: ContactDialog | ConfirmDialog | None = None
        self._iids: dict[str, str] = {}  # contact key -> tree item
        self._keys: dict[str, str] = {}  # tree item -> contact key
        self._next_iid = 0
        self._render_call = None
        self._retry_call = None
        self._sort = ("name", False)
        self._loading = 0
        self._build(servers or self.config.get("servers") or _env_servers())
        root.report_callback_exception = self._callback_failed

    # -- layout --------------------------------------------------------------

    def _build(self, servers: str) -> None:
        root = self.root
        root.title(TITLE)
        style = ttk.Style(root)
        if "clam" in style.theme_names():
            style.theme_use("clam")
        root.minsize(560, 320)
        root.columnconfigure(0, weight=1)
        root.rowconfigure(2, weight=1)
        root.protocol("WM_DELETE_WINDOW", self.close)

        bar = ttk.Frame(root, padding=(8, 8, 8, 0))
        bar.grid(row=0, column=0, sticky="ew")
        bar.columnconfigure(1, weight=1)
        ttk.Label(bar, text="Servers:").grid(row=0, column=0, sticky="w")
        self.servers_var = tk.StringVar(value=servers)
        self.servers_entry = ttk.Entry(bar, textvariable=self.servers_var)
        self.servers_entry.grid(row=0, column=1, sticky="ew", padx=4)
        self.servers_entry.bind("<Return>", lambda e: self.connect())
        self.connect_button = ttk.Button(bar, text="Connect", command=self.connect)
        self.connect_button.grid(row=0, column=2)
        ttk.Label(
            bar,
            text="host:port, comma-separated: the next is used when one is down",
            foreground="#666666",
        ).grid(row=1, column=1, sticky="w", padx=4)

        search = ttk.Frame(root, padding=(8, 6, 8, 0))
        search.grid(row=1, column=0, sticky="ew")
        search.columnconfigure(1, weight=1)
        ttk.Label(search, text="Search:").grid(row=0, column=0, sticky="w")
        self.search_var = tk.StringVar()
        self.search_entry = ttk.Entry(search, textvariable=self.search_var)
        self.search_entry.grid(row=0, column=1, sticky="ew", padx=4)
        self.search_var.trace_add("write", lambda *_: self.render())
        self.search_entry.bind("<Down>", lambda e: self._focus_table())
        self.count_var = tk.StringVar()
        ttk.Label(search, textvariable=self.count_var).grid(row=0, column=2)

        table = ttk.Frame(root, padding=(8, 6, 8, 0))
        table.grid(row=2, column=0, sticky="nsew")
        table.columnconfigure(0, weight=1)
        table.rowconfigure(0, weight=1)
        self.tree = ttk.Treeview(
            table, columns=COLUMNS, show="headings", selectmode="browse", height=14
        )
        for column, width in zip(COLUMNS, (200, 170, 220), strict=True):
            self.tree.heading(
                column,
                text=column.capitalize(),
                command=lambda c=column: self.sort_by(c),
            )
            self.tree.column(column, width=width, minwidth=80, stretch=True)
        scroll = ttk.Scrollbar(table, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.grid(row=0, column=0, sticky="nsew")
        scroll.grid(row=0, column=1, sticky="ns")
        self.tree.bind("<Double-1>", lambda e: self.edit())
        self.tree.bind("<Return>", lambda e: self.edit())
        self.tree.bind("<Delete>", lambda e: self.remove())
        self.tree.bind("<BackSpace>", lambda e: self.remove())

        buttons = ttk.Frame(root, padding=8)
        buttons.grid(row=3, column=0, sticky="ew")
        buttons.columnconfigure(3, weight=1)
        self.add_button = ttk.Button(buttons, text="Add…", command=self.add)
        self.edit_button = ttk.Button(buttons, text="Edit…", command=self.edit)
        self.remove_button = ttk.Button(buttons, text="Remove", command=self.remove)
        self.add_button.grid(row=0, column=0, padx=(0, 4))
        self.edit_button.grid(row=0, column=1, padx=(0, 4))
        self.remove_button.grid(row=0, column=2)
        self.message_var = tk.StringVar()
        self.message_label = ttk.Label(
            buttons, textvariable=self.message_var, anchor="e", wraplength=420
        )
        self.message_label.grid(row=0, column=3, sticky="e")
        ttk.Label(
            buttons,
            text="Ctrl+N add · Enter edit · Delete remove · Ctrl+F search",
            foreground="#666666",
        ).grid(row=1, column=0, columnspan=4, sticky="w", pady=(4, 0))

        self.status_var = tk.StringVar(value="Not connected: choose servers, Connect.")
        self.status_label = ttk.Label(
            root, textvariable=self.status_var, relief="sunken", padding=(6, 2)
        )
        self.status_label.grid(row=4, column=0, sticky="ew")

        root.bind("<Control-n>", lambda e: self.add())
        root.bind("<Control-f>", lambda e: self._focus_search())
        root.bind("<Control-q>", lambda e: self.close())
        self.servers_entry.focus_set()

    def _focus_search(self) -> None:
        self.search_entry.focus_set()
        self.search_entry.select_range(0, "end")

    def _focus_table(self) -> None:
        self.tree.focus_set()
        children = self.tree.get_children()
        if children and not self.tree.selection():
            self.tree.selection_set(children[0])
            self.tree.focus(children[0])

    # -- messages ------------------------------------------------------------

    def say(self, text: str) -> None:
        self.message_label.configure(foreground="")
        self.message_var.set(text)

    def complain(self, text: str) -> None:
        self.message_label.configure(foreground="#b00020")
        self.message_var.set(text)

    def _callback_failed(self, kind, value, tb) -> None:
        # A bug in a Tk callback: log it, tell the user, keep the window.
        log.failure("error in a window callback", Failure(value, kind, tb))
        self.complain(f"Unexpected error: {value}")

    # -- connection ----------------------------------------------------------

    def connect(self) -> None:
        """(Re)connect to the servers typed in the bar, and watch them."""
        try:
            servers = parse_servers(self.servers_var.get())
        except ValueError as e:
            self.complain(f"Servers: {e}")
            return
        self._stop_client()
        self.config["servers"] = ", ".join(str(s) for s in servers)
        save_config(self.config_file, self.config)
        self.client = AgendaClient(
            servers,
            self.reactor,
            request_timeout=self.request_timeout,
            on_event=self._event,
            on_status=self._status,
        )
        self.say("")
        self._watch(self.client)

    def _watch(self, client: AgendaClient) -> None:
        self._retry_call = None
        if client is not self.client:
            return
        client.watch().addErrback(self._watch_failed, client)

    def _watch_failed(self, failure: Failure, client: AgendaClient) -> None:
        if client is not self.client:
            return
        if failure.check(ConnectionFailed):
            self.status_var.set(
                f"{_message(failure)}. Retrying in {RETRY_SECONDS:g} s…"
            )
        else:
            self.status_var.set(_message(failure))
        self._retry_call = self.reactor.callLater(RETRY_SECONDS, self._watch, client)

    def _status(self, status: Status) -> None:
        text = status.message[:1].upper() + status.message[1:]
        self.status_var.set(text)
        if status.state == "connected":
            self.root.title(f"{TITLE} — node {status.node_id}")
            # Anything may have changed while we were not watching.
            self.reload()
        elif status.state == "disconnected":
            self.root.title(f"{TITLE} — disconnected")

    def reload(self) -> defer.Deferred | None:
        client = self.client
        if client is None:
            return None
        self._loading += 1

        def loaded(contacts: list[Contact]) -> None:
            if client is self.client:
                self.contacts = {c.key: c for c in contacts}
                self.render()

        def done(result):
            self._loading -= 1
            return result

        d = client.list().addCallbacks(loaded, self._failed)
        return d.addBoth(done)

    def _event(self, event: Event) -> None:
        contact = event.contact
        if event.kind == "removed":
            self.contacts.pop(contact.key, None)
        else:
            self.contacts[contact.key] = contact
        # A burst of events (an import elsewhere) renders once.
        if self._render_call is None:
            self._render_call = self.reactor.callLater(0, self.render)

    def _failed(self, failure: Failure) -> None:
        self.complain(_message(failure))

    def _stop_client(self) -> defer.Deferred:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        client, self.client = self.client, None
        if client is None:
            return defer.succeed(None)
        return client.close()

    # -- the table -----------------------------------------------------------

    def visible(self) -> list[Contact]:
        """The contacts the search lets through, in table order."""
        query = self.search_var.get()
        shown = [
            c
            for c in self.contacts.values()
            if matches(c, query) or phone_matches(query, c.phone)
        ]
        column, reverse = self._sort
        if column == "name":
            key = lambda c: (c.key, c.name)  # noqa: E731
        else:
            key = lambda c: (getattr(c, column).casefold(), c.key)  # noqa: E731
        return sorted(shown, key=key, reverse=reverse)

    def sort_by(self, column: str) -> None:
        current, reverse = self._sort
        self._sort = (column, not reverse if current == column else False)
        self.render()

    def render(self) -> None:
        """Make the table show ``visible()``, keeping the selection."""
        if self._render_call is not None and self._render_call.active():
            self._render_call.cancel()
        self._render_call = None
        wanted = self.visible()
        wanted_keys = {c.key for c in wanted}
        for key in [k for k in self._iids if k not in wanted_keys]:
            iid = self._iids.pop(key)
            del self._keys[iid]
            self.tree.delete(iid)
        for index, contact in enumerate(wanted):
            values = tuple(getattr(contact, c) for c in COLUMNS)
            iid = self._iids.get(contact.key)
            if iid is None:
                # Our own item ids: a name may hold any character at all.
                self._next_iid += 1
                iid = f"c{self._next_iid}"
                self._iids[contact.key], self._keys[iid] = iid, contact.key
                self.tree.insert("", index, iid=iid, values=values)
            else:
                self.tree.item(iid, values=values)
                if self.tree.index(iid) != index:
                    self.tree.move(iid, "", index)
        total = len(self.contacts)
        shown = len(wanted)
        self.count_var.set(
            f"{total} contacts" if shown == total else f"{shown} of {total} contacts"
        )

    def rows(self) -> list[tuple[str, ...]]:
        """What the table shows, top to bottom, as text."""
        return [
            tuple(str(self.tree.set(iid, c)) for c in COLUMNS)
            for iid in self.tree.get_children()
        ]

    def selected(self) -> Contact | None:
        for iid in self.tree.selection():
            key = self._keys.get(iid)
            if key is not None:
                return self.contacts.get(key)
        return None

    def select(self, name: str) -> bool:
        iid = self._iids.get(contact_key(name))
        if iid is None:
            return False
        self.tree.selection_set(iid)
        self.tree.focus(iid)
        self.tree.see(iid)
        return True

    # -- actions -------------------------------------------------------------

    def _open(self, dialog_class, *args) -> None:
        if self.dialog is not None:
            self.dialog.close()
        self.dialog = dialog_class(self, *args)

    def add(self) -> None:
        self._open(ContactDialog)

    def edit(self) -> None:
        contact = self.selected()
        if contact is None:
            self.complain("Select a contact to edit.")
            return
        self._open(ContactDialog, contact)

    def remove(self) -> None:
        contact = self.selected()
        if contact is None:
            self.complain("Select a contact to remove.")
            return
        self._open(ConfirmDialog, contact)

    def remove_now(self, contact: Contact) -> None:
        if self.client is None:
            self.complain("Not connected to any node.")
            return
        d = self.client.remove(contact.name)
        d.addCallbacks(lambda name: self.say(f"Removed {name}."), self._failed)

    def close(self) -> defer.Deferred:
        """Close the window's connection; then ``on_close`` (stop the reactor)."""
        if self.dialog is not None:
            self.dialog.close()
        if self._render_call is not None and self._render_call.active():
            self._render_call.cancel()
        self._render_call = None
        d = self._stop_client()
        if self.on_close is not None:
            d.addBoth(lambda _: self.on_close())
        return d


def _env_servers() -> str:
    return os.environ.get("AGENDA_SERVER") or DEFAULT_SERVERS.replace(",", ", ")


def main(argv: list[str] | None = None) -> None:
    """``agenda-tk`` / ``python -m twisted_agenda.tk``."""
    parser = argparse.ArgumentParser(
        prog="agenda-tk", description="The agenda's window (Tkinter)."
    )
    parser.add_argument(
        "-s",
        "--server",
        metavar="HOST:PORT[,...]",
        help="connect to these nodes at once (default: ask, prefilled with "
        "the last ones used)",
    )
    parser.add_argument(
        "--config", type=Path, help=f"settings file (default {config_path()})"
    )
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    if args.server:
        try:
            parse_servers(args.server)
        except ValueError as e:
            parser.error(f"--server: {e}")

    from twisted.internet import reactor, tksupport

    try:
        root = tk.Tk(className="Agenda")
    except tk.TclError as e:
        print(f"agenda-tk: cannot open a window: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    tksupport.install(root)
    app = AgendaApp(root, reactor, servers=args.server, config_file=args.config)

    def stop() -> None:
        tksupport.uninstall()
        root.destroy()
        if reactor.running:
            reactor.stop()

    app.on_close = stop
    if args.server:
        app.connect()
    reactor.run()
