"""The agenda window: Tkinter on Twisted's reactor (``twisted.internet.tksupport``).

Tk callbacks only start network work and return; replies come back as
Deferred callbacks on the same thread, so the window never waits on a
socket. Dialogs are plain Toplevels with callbacks, not Tk's modal ones,
whose nested event loop would stop the reactor while they are open.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path
from tkinter import ttk
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_agenda import __version__
from twisted_agenda.client import (
    DEFAULT_SERVERS,
    HEARTBEAT_INTERVAL,
    AgendaClient,
    AgendaError,
    ConnectionFailed,
    Event,
    Status,
    parse_servers,
)
from twisted_agenda.model import Contact, contact_key, fold
from twisted_agenda.phone import check_region, phone_haystacks, phone_needles

log = Logger()

TITLE = "Agenda"
COLUMNS = ("name", "phone", "email")
#: Seconds between attempts while no node at all can be reached.
RETRY_SECONDS = 5.0
#: Milliseconds the search box waits for the next key before filtering, so
#: typing a word into a big book filters once, not once per letter.
SEARCH_DELAY_MS = 150
#: Contacts whose search data is worked out per reactor turn, in the
#: background, so that the first search in a big book is as quick as the rest.
WARM_CHUNK = 500


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
        heartbeat: float | None = HEARTBEAT_INTERVAL,
    ) -> None:
        self.root = root
        self.reactor = reactor
        self.config_file = config_file or config_path()
        self.config = load_config(self.config_file)
        self.request_timeout = request_timeout
        #: Seconds between checks that the watched node still answers.
        self.heartbeat = heartbeat
        self.on_close = on_close
        self.client: AgendaClient | None = None
        #: The node's --default-region (from its STATUS), for phone searches.
        self.region: str | None = None
        self._contacts: dict[str, Contact] = {}
        self._book_version = 0  # bumped whenever the book changes
        self.dialog: ContactDialog | ConfirmDialog | None = None
        self._iids: dict[str, str] = {}  # contact key -> tree item
        self._keys: dict[str, str] = {}  # tree item -> contact key
        self._values: dict[str, tuple[str, ...]] = {}  # tree item -> its values
        self._children: list[str] = []  # the items the table shows, in order
        self._next_iid = 0
        # Search data per contact key: (contact, folded name/phone/email).
        self._folded: dict[str, tuple[Contact, tuple[str, str, str]]] = {}
        self._haystacks: dict[str, tuple[Contact, tuple[str, ...]]] = {}
        self._ordered: list[Contact] | None = None  # the book in table order
        self._ordered_for: tuple | None = None
        self._render_call = None
        self._search_call: str | None = None
        self._warm_call = None
        self._warm_queue: Iterator[Contact] = iter(())
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
        self.search_var.trace_add("write", lambda *_: self._search_changed())
        self.search_entry.bind("<Down>", lambda e: self._focus_table())
        self.search_entry.bind("<Return>", lambda e: self._search_now())
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
        # Like the status bar, a long message must not widen the window: it
        # takes the room there is (width=1) and wraps to fit in it.
        self.message_label = ttk.Label(
            buttons,
            textvariable=self.message_var,
            anchor="e",
            justify="right",
            width=1,
            wraplength=420,
        )
        self.message_label.grid(row=0, column=3, sticky="ew", padx=(8, 0))
        self.message_label.bind(
            "<Configure>",
            lambda e: self.message_label.configure(wraplength=max(e.width, 40)),
        )
        ttk.Label(
            buttons,
            text="Ctrl+N add · Enter edit · Delete remove · Ctrl+F search",
            foreground="#666666",
        ).grid(row=1, column=0, columnspan=4, sticky="w", pady=(4, 0))

        self.status_var = tk.StringVar(value="Not connected: choose servers, Connect.")
        # width=1: a long message is cut at the window's edge instead of
        # asking for a wider window (which, with no window manager to say
        # no, the window would become).
        self.status_label = ttk.Label(
            root, textvariable=self.status_var, relief="sunken", padding=(6, 2), width=1
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
        self._search_now()
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
            heartbeat=self.heartbeat,
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
            self._load_region()
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

    def _load_region(self) -> None:
        """Search phones as the node does: local numbers in its region."""
        client = self.client
        if client is None:
            return

        def loaded(status) -> None:
            if client is not self.client:
                return
            try:
                region = check_region(status.fields.get("default_region"))
            except ValueError:
                region = None
            if region != self.region:
                self.region = region
                self._haystacks.clear()
                self.render()

        def not_told(failure: Failure) -> None:
            # The node went meanwhile: the next connection asks again.
            failure.trap(AgendaError)

        client.status().addCallbacks(loaded, not_told)

    @property
    def contacts(self) -> dict[str, Contact]:
        """The whole book, by contact key (assign a new dict to replace it)."""
        return self._contacts

    @contacts.setter
    def contacts(self, contacts: dict[str, Contact]) -> None:
        self._contacts = contacts
        self._book_version += 1

    def _event(self, event: Event) -> None:
        contact = event.contact
        if event.kind == "removed":
            self._contacts.pop(contact.key, None)
        else:
            self._contacts[contact.key] = contact
        self._book_version += 1
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

    def _in_order(self) -> list[Contact]:
        """The whole book sorted as the table shows it (kept until it changes)."""
        column, reverse = self._sort
        wanted = (self._book_version, id(self._contacts), column, reverse)
        if self._ordered is None or self._ordered_for != wanted:
            if column == "name":
                key = lambda c: (c.key, c.name)  # noqa: E731
            else:
                key = lambda c: (getattr(c, column).casefold(), c.key)  # noqa: E731
            self._ordered = sorted(self._contacts.values(), key=key, reverse=reverse)
            self._ordered_for = wanted
        return self._ordered

    def _folds(self, contact: Contact) -> tuple[str, str, str]:
        entry = self._folded.get(contact.key)
        if entry is None or entry[0] is not contact:
            entry = (
                contact,
                (fold(contact.name), fold(contact.phone), fold(contact.email)),
            )
            self._folded[contact.key] = entry
        return entry[1]

    def _phone_digits(self, contact: Contact) -> tuple[str, ...]:
        entry = self._haystacks.get(contact.key)
        if entry is None or entry[0] is not contact:
            entry = (contact, phone_haystacks(contact.phone, self.region))
            self._haystacks[contact.key] = entry
        return entry[1]

    def visible(self) -> list[Contact]:
        """The contacts the search lets through, in table order.

        The node's FIND rules (``model.matches``, in the node's region), with
        each contact's folded text and phone digits worked out once.
        """
        ordered = self._in_order()
        query = self.search_var.get()
        needle = fold(query.strip())
        if not needle:
            return list(ordered)
        needles = phone_needles(query, self.region)
        shown = []
        for contact in ordered:
            name, phone, email = self._folds(contact)
            if needle in name or needle in phone or needle in email:
                shown.append(contact)
            elif needles and contact.phone:
                haystacks = self._phone_digits(contact)
                if any(n in h for n in needles for h in haystacks):
                    shown.append(contact)
        return shown

    def sort_by(self, column: str) -> None:
        current, reverse = self._sort
        self._sort = (column, not reverse if current == column else False)
        self.render()

    @property
    def searching(self) -> bool:
        """Whether typed search text waits to be applied (SEARCH_DELAY_MS)."""
        return self._search_call is not None

    def _search_changed(self) -> None:
        # Filter once the typing pauses, not on every key.
        if self._search_call is not None:
            self.root.after_cancel(self._search_call)
        self._search_call = self.root.after(SEARCH_DELAY_MS, self._search_now)

    def _search_now(self) -> None:
        """Filter now if a search is waiting (Enter, Down, the delay)."""
        if self._search_call is not None:
            self.render()

    def render(self) -> None:
        """Make the table show ``visible()``, keeping the selection.

        Linear in the size of the book: items are made once per contact and
        then only detached and re-attached in order (one ``children`` call),
        and a row is rewritten only when its contact changed.
        """
        if self._render_call is not None and self._render_call.active():
            self._render_call.cancel()
        self._render_call = None
        if self._search_call is not None:
            self.root.after_cancel(self._search_call)
            self._search_call = None
        wanted = self.visible()
        tree = self.tree
        gone = [k for k in self._iids if k not in self._contacts]
        if gone:
            items = [self._iids.pop(key) for key in gone]
            for key, iid in zip(gone, items, strict=True):
                del self._keys[iid], self._values[iid]
                self._folded.pop(key, None)
                self._haystacks.pop(key, None)
            tree.delete(*items)
            self._children = [iid for iid in self._children if iid in self._keys]
        children = []
        call, path = tree.tk.call, str(tree)
        for contact in wanted:
            values = (contact.name, contact.phone, contact.email)
            iid = self._iids.get(contact.key)
            if iid is None:
                # Our own item ids: a name may hold any character at all.
                self._next_iid += 1
                iid = f"c{self._next_iid}"
                self._iids[contact.key], self._keys[iid] = iid, contact.key
                call(path, "insert", "", "end", "-id", iid, "-values", values)
                self._values[iid] = values
            elif self._values[iid] != values:
                tree.item(iid, values=values)
                self._values[iid] = values
            children.append(iid)
        if children != self._children:
            selected = tree.selection()
            tree.set_children("", *children)
            self._children = children
            shown = set(children)
            hidden = [iid for iid in selected if iid not in shown]
            if hidden:
                tree.selection_remove(*hidden)
        total = len(self._contacts)
        count = len(wanted)
        self.count_var.set(
            f"{total} contacts" if count == total else f"{count} of {total} contacts"
        )
        self._warm_soon()

    def _warm_soon(self) -> None:
        """Work out search data for the whole book, a chunk per reactor turn."""
        if self._warm_call is not None:
            return
        total = len(self._contacts)
        if len(self._folded) >= total and len(self._haystacks) >= total:
            return
        self._warm_queue = iter(list(self._contacts.values()))
        self._warm_call = self.reactor.callLater(0, self._warm)

    def _warm(self) -> None:
        self._warm_call = None
        chunk = list(itertools.islice(self._warm_queue, WARM_CHUNK))
        for contact in chunk:
            if self._contacts.get(contact.key) is contact:
                self._folds(contact)
                self._phone_digits(contact)
        if len(chunk) == WARM_CHUNK:
            self._warm_call = self.reactor.callLater(0, self._warm)

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
        if self._search_call is not None:
            self.root.after_cancel(self._search_call)
            self._search_call = None
        if self._warm_call is not None and self._warm_call.active():
            self._warm_call.cancel()
        self._warm_call = None
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
