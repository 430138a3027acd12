"""``agenda``: the command-line client.

Data goes to stdout (a table, or JSON with ``--json``); messages go to
stderr. Exit status: 0 ok (``watch`` stopped with Ctrl-C too), 1 not found
or refused by the node, 2 usage error or no node reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from collections.abc import Sequence
from typing import IO, Any

from twisted.internet import defer, task

from twisted_agenda import __version__, vcard
from twisted_agenda.client import (
    DEFAULT_SERVERS,
    AgendaClient,
    AgendaError,
    ConnectionFailed,
    ConnectionLost,
    Event,
    NotFound,
    Status,
    parse_servers,
)
from twisted_agenda.client.transfer import ImportReport, import_actions
from twisted_agenda.model import Contact
from twisted_agenda.phone import check_region

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

PROG = "agenda"

EPILOG = f"""\
servers: --server takes host:port, comma-separated; the next one is tried
when a node is down. Default: $AGENDA_SERVER, else {DEFAULT_SERVERS}.

exit status: 0 ok (watch: stopped with Ctrl-C), 1 not found or refused by
the node (find: no match; import: some cards skipped), 2 usage error or no
node reachable.

examples:
  agenda add "Maria da Silva" "+55 11 91234-5678" --email maria@example.com
  agenda find 91234
  agenda --server 127.0.0.1:9010,127.0.0.1:9011 watch
  agenda export contacts.vcf && agenda import contacts.vcf
"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that writes to our streams and raises instead of exiting."""

    def __init__(self, *args: Any, streams: tuple[IO, IO], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.streams = streams

    def _print_message(self, message: str, file: IO | None = None) -> None:
        if message:
            out, err = self.streams
            (out if file is sys.stdout else err).write(message)

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            self.streams[1].write(message)
        raise SystemExit(status)

    def error(self, message: str):
        self.print_usage(self.streams[1])
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(stdout: IO, stderr: IO) -> _Parser:
    streams = (stdout, stderr)
    # The same options work before or after the command.
    common = _Parser(add_help=False, streams=streams)
    common.add_argument(
        "-s",
        "--server",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT[,...]",
        help="nodes to use, in order of preference",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON instead of a table",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="give up on an unresponsive node after this long (default 10)",
    )
    parser = _Parser(
        prog=PROG,
        description="Talk to the replicated agenda from the shell.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
        streams=streams,
    )
    parser.add_argument("--version", action="version", version=f"agenda {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(name: str, help: str) -> _Parser:
        return commands.add_parser(
            name, help=help, description=help, parents=[common], streams=streams
        )

    command("list", "show every contact")
    p = command("get", "show one contact")
    p.add_argument("name")
    p = command("find", "contacts whose name, phone or email contain TEXT")
    p.add_argument("text", nargs="+")
    p = command("add", "add a contact")
    p.add_argument("name")
    p.add_argument("phone")
    p.add_argument("--email", "-e")
    p.add_argument("--note", "-n")
    p = command("update", 'change a contact\'s fields ("" clears email or note)')
    p.add_argument("name")
    p.add_argument("phone", nargs="?")
    p.add_argument("--phone", "-p", dest="phone_option", metavar="PHONE")
    p.add_argument("--email", "-e")
    p.add_argument("--note", "-n")
    p = command("remove", "remove a contact")
    p.add_argument("name")
    command("watch", "print every change, on any node, as it happens (Ctrl-C stops)")
    command("status", "the node's state and its peers")
    p = command("import", "add or update contacts from a vCard or CSV file")
    p.add_argument("file", help="a .vcf or .csv file, or - for stdin")
    p.add_argument("--format", "-f", choices=vcard.FORMATS)
    p.add_argument(
        "--region",
        metavar="CC",
        help="country of numbers without +code, to compare phones (e.g. BR; "
        "default: the node's --default-region when its STATUS shows it)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="report what would change; change nothing",
    )
    p.add_argument(
        "--verbose", "-v", action="store_true", help="list every card's outcome"
    )
    p = command("export", "write every contact as vCard or CSV")
    p.add_argument("file", nargs="?", default="-", help="output file (default stdout)")
    p.add_argument("--format", "-f", choices=vcard.FORMATS)
    p.add_argument("--vcard-version", choices=vcard.VCARD_VERSIONS, default="4.0")
    return parser


# -- output --------------------------------------------------------------------


def _width(text: str) -> int:
    """Columns a string takes in a terminal (wide East Asian characters: 2)."""
    return sum(
        0
        if unicodedata.combining(c)
        else 2
        if unicodedata.east_asian_width(c) in "WF"
        else 1
        for c in text
    )


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table(contacts: Sequence[Contact]) -> str:
    """Contacts as aligned columns; NOTE only when some contact has one."""
    columns = ["name", "phone", "email"]
    if any(c.note for c in contacts):
        columns.append("note")
    rows = [[c.upper() for c in columns]]
    rows += [[_clip(getattr(c, f), 60) for f in columns] for c in contacts]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for row in rows:
        cells = [_pad(cell, widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def contact_json(contact: Contact) -> dict[str, str]:
    return contact.fields()


def event_text(event: Event) -> str:
    c = event.contact
    parts = [f"{event.kind:<8}", c.name, c.phone]
    parts += [f"{f}={getattr(c, f)}" for f in ("email", "note") if getattr(c, f)]
    return "  ".join(parts)


class Output:
    def __init__(self, stdout: IO, stderr: IO, as_json: bool) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.json = as_json

    def data(self, value: Any) -> None:
        json.dump(value, self.stdout, ensure_ascii=False, indent=2)
        self.stdout.write("\n")

    def line(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def say(self, text: str) -> None:
        self.stderr.write(f"{text}\n")
        self.stderr.flush()

    def contacts(self, contacts: Sequence[Contact], empty: str) -> None:
        if self.json:
            self.data([contact_json(c) for c in contacts])
        elif contacts:
            self.stdout.write(table(contacts))
        else:
            self.say(empty)

    def done(self, verb: str, name: str) -> None:
        if self.json:
            self.data({"result": verb, "name": name})
        else:
            self.say(f"{verb} {name}")


# -- commands ------------------------------------------------------------------


async def cmd_list(client: AgendaClient, args, out: Output) -> int:
    out.contacts(await client.list(), "no contacts yet")
    return EXIT_OK


async def cmd_get(client: AgendaClient, args, out: Output) -> int:
    contact = await client.get(args.name)
    if out.json:
        out.data(contact_json(contact))
    else:
        for f, value in contact.fields().items():
            if value:
                out.line(f"{f + ':':<7}{value}")
    return EXIT_OK


async def cmd_find(client: AgendaClient, args, out: Output) -> int:
    text = " ".join(args.text)
    found = await client.find(text)
    out.contacts(found, f"no contact matches {text!r}")
    # Like grep: no match is a "not found" for scripts.
    return EXIT_OK if found else EXIT_REFUSED


async def cmd_add(client: AgendaClient, args, out: Output) -> int:
    name = await client.add(args.name, args.phone, email=args.email, note=args.note)
    out.done("added", name)
    return EXIT_OK


async def cmd_update(client: AgendaClient, args, out: Output) -> int:
    if args.phone is not None and args.phone_option is not None:
        raise UsageError("give the phone once (as PHONE or --phone)")
    phone = args.phone if args.phone is not None else args.phone_option
    if phone is None and args.email is None and args.note is None:
        raise UsageError("nothing to change: give a phone, --email or --note")
    name = await client.update(args.name, phone=phone, email=args.email, note=args.note)
    out.done("updated", name)
    return EXIT_OK


async def cmd_remove(client: AgendaClient, args, out: Output) -> int:
    name = await client.remove(args.name)
    out.done("removed", name)
    return EXIT_OK


async def cmd_status(client: AgendaClient, args, out: Output) -> int:
    status = await client.status()
    if out.json:
        out.data({**status.fields, "peers": status.peers})
        return EXIT_OK
    for key, value in status.fields.items():
        out.line(f"{key}: {value}")
    if status.peers:
        out.line("peers:")
        for peer in status.peers:
            rest = " ".join(f"{k}={v}" for k, v in peer.items() if k != "peer")
            out.line(f"  {peer.get('peer', '?')}  {rest}")
    return EXIT_OK


async def cmd_watch(client: AgendaClient, args, out: Output) -> int:
    def on_event(event: Event) -> None:
        if out.json:
            out.line(json.dumps({"event": event.kind, **contact_json(event.contact)}))
        else:
            out.line(event_text(event))

    def on_status(status: Status) -> None:
        if status.state != "connecting":
            out.say(status.message)

    client.on_event = on_event
    client.on_status = on_status
    # Ctrl-C stops the reactor: close the connection first, so that its end
    # is not reported as a lost node. The exit status is then 0.
    trigger = client.reactor.addSystemEventTrigger("before", "shutdown", client.close)
    try:
        await client.watch()
    except Exception:
        client.reactor.removeSystemEventTrigger(trigger)
        raise
    out.say("watching for changes; Ctrl-C stops")
    # Runs until interrupted; the client reconnects by itself meanwhile.
    await defer.Deferred()
    return EXIT_OK


def _read_input(path: str, stdin: IO | None) -> str:
    if path == "-":
        return (stdin or sys.stdin).read()
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {path}: it is not UTF-8 text") from None


class _Progress:
    """``importing 120/500`` on a terminal; a line per 10% otherwise."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.tty = out.stderr.isatty()
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            end = "\n" if done == total else ""
            self.out.stderr.write(f"\rimporting {done}/{total}{end}")
            self.out.stderr.flush()
        elif done == total or done - self.shown >= max(50, total // 10):
            self.shown = done
            self.out.say(f"importing {done}/{total}")


async def cmd_import(client: AgendaClient, args, out: Output, stdin=None) -> int:
    try:
        region = check_region(args.region)
    except ValueError as e:
        raise UsageError(str(e)) from None
    text = _read_input(args.file, stdin)
    if region is None:
        # Compare local numbers as the node reads them, if it says how.
        status = await client.status()
        try:
            region = check_region(status.fields.get("default_region"))
        except ValueError:
            region = None
    name = "stdin" if args.file == "-" else args.file
    cards = vcard.read_contacts(text, args.format, None if name == "stdin" else name)
    if not cards:
        out.say(f"{name}: no contacts found")
        return EXIT_REFUSED
    actions = vcard.plan_import(cards, await client.list(), region)
    report = await import_actions(client, actions, _Progress(out), args.dry_run, region)
    _report(report, name, args, out)
    return EXIT_REFUSED if report.skipped else EXIT_OK


def _report(report: ImportReport, name: str, args, out: Output) -> None:
    if args.verbose:
        for kind, cards in (
            ("added", report.added),
            ("updated", report.updated),
            ("unchanged", report.unchanged),
        ):
            for card in cards:
                out.say(f"{name}: {card.label}: {kind}")
    for card, reason in report.skipped:
        out.say(f"{name}: {card.label}: skipped: {reason}")
    if args.verbose:
        for card in report.added + report.updated + report.unchanged:
            for warning in card.warnings:
                out.say(f"{name}: {card.label}: note: {warning}")
    if report.stopped is not None:
        out.say(f"{name}: import stopped: {report.stopped}")
    would = "would be " if args.dry_run else ""
    out.say(f"{name}: {report.total} cards: {would}{report.summary()}")
    if out.json:
        out.data(report.as_json())


async def cmd_export(client: AgendaClient, args, out: Output) -> int:
    format = args.format
    if format is None:
        format = vcard.detect_format(args.file, "") if args.file != "-" else vcard.VCARD
    contacts = await client.list()
    text = vcard.write_contacts(contacts, format, args.vcard_version)
    if args.file == "-":
        out.stdout.write(text)
        out.stdout.flush()
    else:
        # Write next to the target, then rename: no half-written file.
        temporary = f"{args.file}.part"
        try:
            with open(temporary, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            os.replace(temporary, args.file)
        except OSError as e:
            raise UsageError(f"cannot write {args.file}: {e.strerror}") from None
        out.say(f"exported {len(contacts)} contacts to {args.file}")
    return EXIT_OK


COMMANDS = {
    "list": cmd_list,
    "get": cmd_get,
    "find": cmd_find,
    "add": cmd_add,
    "update": cmd_update,
    "remove": cmd_remove,
    "status": cmd_status,
    "watch": cmd_watch,
    "import": cmd_import,
    "export": cmd_export,
}


async def run(
    argv: Sequence[str],
    reactor: Any = None,
    stdout: IO | None = None,
    stderr: IO | None = None,
    environ: dict[str, str] | None = None,
    stdin: IO | None = None,
) -> int:
    """The whole command line; returns the exit status (never raises)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    environ = os.environ if environ is None else environ
    parser = build_parser(stdout, stderr)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    out = Output(stdout, stderr, getattr(args, "json", False))
    servers_text = getattr(args, "server", None) or environ.get(
        "AGENDA_SERVER", DEFAULT_SERVERS
    )
    try:
        servers = parse_servers(servers_text)
    except ValueError as e:
        out.say(f"{PROG}: --server: {e}")
        return EXIT_USAGE
    timeout = getattr(args, "timeout", 10.0)
    client = AgendaClient(
        servers, reactor, connect_timeout=min(timeout, 5.0), request_timeout=timeout
    )
    handler = COMMANDS[args.command]
    try:
        if args.command == "import":
            return await cmd_import(client, args, out, stdin)
        return await handler(client, args, out)
    except UsageError as e:
        out.say(f"{PROG} {args.command}: {e}")
        return EXIT_USAGE
    except (ConnectionFailed, ConnectionLost) as e:
        out.say(f"{PROG}: {e.message}")
        return EXIT_USAGE
    except NotFound as e:
        out.say(f"{PROG}: not found: {e.message}")
        return EXIT_REFUSED
    except AgendaError as e:
        out.say(f"{PROG}: {e.code}: {e.message}")
        return EXIT_REFUSED
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Console script entry point."""
    argv = sys.argv[1:] if argv is None else argv

    async def react_main(reactor) -> None:
        raise SystemExit(await run(argv, reactor))

    task.react(react_main)


if __name__ == "__main__":
    main()
