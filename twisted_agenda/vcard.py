"""vCard and CSV in and out, and the plan for importing them into a book.

Reading never stops at a bad record: each card (or CSV row) becomes a
``Card`` holding either a ``Contact`` or the reason it cannot be one, with
the line it starts on, so an import can report every problem at once.

vCard 2.1, 3.0 and 4.0 are read; 4.0 is written by default (3.0 on
request) with FN, N, TEL (with its type), EMAIL, NOTE, a UID that stays the
same for a contact across exports, and REV. CSV has a header row with the
columns ``name,phone,email,note`` (common other spellings are understood).
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import attrs
import phonenumbers
import vobject
from attrs import frozen

from twisted_agenda.model import (
    FIELDS,
    Contact,
    InvalidField,
    clean_fields,
    contact_key,
)
from twisted_agenda.phone import same_number

VCARD = "vcard"
CSV = "csv"
FORMATS = (VCARD, CSV)
VCARD_VERSIONS = ("4.0", "3.0")

#: UIDs are derived from the contact's key, so re-exports keep them.
_UID_NAMESPACE = uuid.UUID("5b0f7c4e-8d8e-4c36-9f7e-3f4b2a6c1d20")

# TEL types, best first, when a card has several numbers and none is "pref".
_TEL_RANK = ("cell", "mobile", "voice", "", "home", "work", "iphone", "main")


@frozen
class Card:
    """One record read from a file: a contact, or why there is none."""

    line: int
    contact: Contact | None = None
    problem: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        name = self.contact.name if self.contact else ""
        return f"line {self.line}" + (f" ({name})" if name else "")


# -- reading vCards ------------------------------------------------------------


def _params(line) -> set[str]:
    """TYPE values of a vCard line, lower-case, commas split (3.0 and 4.0)."""
    types = set()
    for value in line.params.get("TYPE", []):
        types.update(t.strip().strip('"').lower() for t in value.split(","))
    types.update(p.lower() for p in line.singletonparams)  # vCard 2.1
    if line.params.get("PREF"):
        types.add("pref")
    return types


def _tel_text(value: str) -> str:
    """A TEL value as a person would type it (``tel:`` URIs unpacked).

    Spaces are tidied as the node tidies them (``phone.check_phone``).
    """
    value = " ".join(value.split())
    if not value.lower().startswith("tel:"):
        return value
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return value[4:].split(";", 1)[0]
    return phonenumbers.format_number(
        number, phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )


def _pick(lines: list, rank: tuple[str, ...] = ()) -> tuple[object | None, int]:
    """The preferred line among several (PREF, then by type rank, then first)."""
    if not lines:
        return None, 0

    def score(item):
        index, line = item
        types = _params(line)
        ranks = [rank.index(t) for t in types if t in rank]
        if ranks:
            best = min(ranks)
        elif types - {"pref", "internet"}:
            best = len(rank)  # only unranked types, such as fax or pager
        else:
            best = rank.index("") if "" in rank else 0
        return ("pref" not in types, best, index)

    return min(enumerate(lines), key=score)[1], len(lines)


def one_line(text: str) -> str:
    """A value as the node keeps it: one line, outer spaces trimmed.

    Line breaks (and tabs), which the node refuses, become one space each
    run; everything else, spaces inside included, is kept as it is.
    """
    text = text.replace("\t", " ")
    parts = text.splitlines()
    if len(parts) <= 1:
        return text.strip()
    return " ".join(part.strip() for part in parts if part.strip())


def clean_name_text(text: str) -> str:
    """A name as the node stores it (clean_name: trimmed, NFC), on one line."""
    return unicodedata.normalize("NFC", one_line(text))


# vCard text escapes, as vobject reads them: \n, \N, \\, \; \, \"
_ESCAPE = re.compile(r"\\([\\;,Nn\"])")


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m[1] in "nN" else m[1], value)


def _raw_texts(text: str) -> dict[str, list[str | None]]:
    """The card's own FN and NOTE values, whole.

    vobject splits these at unescaped commas and keeps only the first piece
    ("FN:Silva, Maria" gives "Silva"), but commas are legal there in vCard
    2.1 and some 3.0/4.0 writers do not escape them. None stands for a
    value to take from vobject instead (base64).
    """
    found: dict[str, list[str | None]] = {"FN": [], "NOTE": []}
    depth = 0
    stream = io.StringIO(text)
    for logical, number in vobject.base.getLogicalLines(stream, allowQP=False):
        try:
            line = vobject.base.textLineToContentLine(logical, number)
        except Exception:
            continue  # vobject reports it, with its line
        value = line.value if isinstance(line.value, str) else ""
        if line.name == "BEGIN":
            depth += 1
        elif line.name == "END":
            depth -= 1
        elif depth == 1 and line.name in found:
            encoded = "ENCODING" in line.params or "BASE64" in line.singletonparams
            found[line.name].append(None if encoded else _unescape(value))
    return found


def _whole(lines: list, raw: list[str | None]) -> list[str]:
    """Each vobject line's value, taken whole from ``raw`` when they line up."""
    if len(raw) != len(lines):
        raw = [None] * len(lines)
    return [
        str(line.value) if text is None else text
        for line, text in zip(lines, raw, strict=True)
    ]


def _name(card, raw: dict[str, list[str | None]]) -> str:
    for fn in _whole(card.contents.get("fn", [])[:1], raw["FN"][:1]):
        if clean_name_text(fn):
            return clean_name_text(fn)
    n = card.contents.get("n")
    if n:
        value = n[0].value
        if isinstance(value, vobject.vcard.Name):
            parts = [value.prefix, value.given, value.additional, value.family]
            parts.append(value.suffix)
            words = []
            for part in parts:
                words += part if isinstance(part, list) else [part]
            return clean_name_text(" ".join(w.strip() for w in words if w.strip()))
        return clean_name_text(" ".join(str(value).replace(";", " ").split()))
    return ""


def _card_contact(
    card, raw: dict[str, list[str | None]]
) -> tuple[Contact | None, str, tuple[str, ...]]:
    name = _name(card, raw)
    if not name:
        return None, "no name (the card has neither FN nor N)", ()
    warnings = []
    tel, count = _pick(card.contents.get("tel", []), _TEL_RANK)
    if tel is None or not str(tel.value).strip():
        return None, f"{name!r} has no phone number (TEL)", ()
    if count > 1:
        warnings.append(f"kept the preferred of {count} phone numbers")
    email, count = _pick(card.contents.get("email", []))
    if count > 1:
        warnings.append(f"kept the preferred of {count} email addresses")
    notes = _whole(card.contents.get("note", []), raw["NOTE"])
    # Our notes are one line: the card's lines (and its NOTEs) become one.
    note = " ".join(filter(None, (one_line(n) for n in notes)))
    contact = Contact(
        name=name,
        phone=_tel_text(str(tel.value)),
        email=str(email.value).strip() if email is not None else "",
        note=note,
    )
    return contact, "", tuple(warnings)


_AGENT = re.compile(r"(?:[\w-]+\.)?AGENT[;:]", re.I)


def _chunks(text: str) -> Iterable[tuple[int, list[str] | None, str]]:
    """(first line number, card lines or None, problem) for each card.

    A BEGIN:VCARD inside a card that never ended starts a new card (the
    one before is reported), except right after an AGENT line, where
    vCard 2.1 nests the agent's own card.
    """
    start = 0
    lines: list[str] = []
    stray = 0
    depth = 0
    for number, raw in enumerate(text.splitlines(), 1):
        word = raw.strip().upper()
        if not start:
            if word == "BEGIN:VCARD":
                start, lines, depth = number, [raw], 1
            elif word and not stray:
                # Report the start of each run of text between cards, once.
                stray = number
                yield number, None, "text outside BEGIN:VCARD ... END:VCARD"
            continue
        if word == "BEGIN:VCARD":
            if _AGENT.match(lines[-1].lstrip()):
                depth += 1
            else:
                yield (
                    start,
                    None,
                    "the card starting here has no END:VCARD (a new card "
                    f"begins on line {number})",
                )
                start, lines, depth = number, [raw], 1
                continue
        lines.append(raw)
        if word == "END:VCARD":
            depth -= 1
            if not depth:
                yield start, lines, ""
                start, stray = 0, 0
    if start:
        yield start, None, "the card starting here has no END:VCARD"


def _bad_line(message: str, lines: list[str], start: int) -> int:
    """Which line vobject choked on (its own numbers are off), else the start."""
    _, sep, text = message.partition("Failed to parse line: ")
    if sep:
        for offset, line in enumerate(lines):
            if line.strip() == text.strip():
                return start + offset
    return start


def read_vcards(text: str) -> list[Card]:
    """Every card in a vCard file, in order; bad ones carry their problem."""
    cards = []
    for start, lines, problem in _chunks(text):
        if lines is None:
            cards.append(Card(start, problem=problem))
            continue
        card_text = "\n".join(lines) + "\n"
        try:
            card = vobject.readOne(card_text)
        except Exception as e:
            # vobject raises more than ParseError on bad input.
            message = str(e).strip() or type(e).__name__
            line = _bad_line(message, lines, start)
            message = message.removeprefix(f"At line {getattr(e, 'lineNumber', '')}: ")
            cards.append(Card(line, problem=f"cannot read the card: {message}"))
            continue
        contact, problem, warnings = _card_contact(card, _raw_texts(card_text))
        cards.append(Card(start, contact, problem, warnings))
    return cards


# -- reading CSV ---------------------------------------------------------------

_COLUMNS = {
    "name": ("name", "full name", "fn", "display name", "contact", "nome"),
    "phone": (
        "phone",
        "tel",
        "telephone",
        "phone number",
        "mobile",
        "mobile phone",
        "cell",
        "telefone",
        "phone 1 - value",
    ),
    "email": (
        "email",
        "e-mail",
        "mail",
        "email address",
        "e-mail address",
        "e-mail 1 - value",
    ),
    "note": ("note", "notes", "comment", "comments", "nota", "notas", "observações"),
    "given": ("given name", "first name", "given"),
    "family": ("family name", "last name", "surname", "family"),
}


def _delimiter(text: str) -> str:
    """``,``, ``;`` (Excel where the decimal mark is a comma) or a tab.

    Guessed from the header row only: its titles hold no separators, while
    data cells (notes) may hold any.
    """
    header = text[:4096].splitlines()[0] if text.strip() else ""
    try:
        return csv.Sniffer().sniff(header, delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def read_csv(text: str) -> list[Card]:
    """Every row of a CSV file with a header row; bad rows carry a problem."""
    text = text.removeprefix("\ufeff")  # Excel's UTF-8 byte-order mark
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as e:
        return [Card(1, problem=f"cannot read the header row: {e}")]
    columns: dict[str, int] = {}
    for index, title in enumerate(header):
        title = title.strip().lower()
        for field, names in _COLUMNS.items():
            if title in names and field not in columns:
                columns[field] = index
    has_name = "name" in columns or {"given", "family"} & set(columns)
    if not has_name or "phone" not in columns:
        found = ", ".join(h.strip() for h in header) or "none"
        return [
            Card(
                1,
                problem="the header row needs a name and a phone column "
                f"(name,phone,email,note); found: {found}",
            )
        ]
    cards = []
    line = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            cards.append(Card(line, problem=f"cannot read the row: {e}"))
            line = reader.line_num + 1
            continue
        if any(cell.strip() for cell in row):
            cards.append(_row_card(line, row, columns))
        line = reader.line_num + 1
    return cards


def _row_card(line: int, row: list[str], columns: dict[str, int]) -> Card:
    def cell(field: str) -> str:
        index = columns.get(field)
        return row[index] if index is not None and index < len(row) else ""

    name = clean_name_text(cell("name")) or clean_name_text(
        " ".join(filter(None, (one_line(cell("given")), one_line(cell("family")))))
    )
    if not name:
        return Card(line, problem="the row has no name")
    phone = " ".join(cell("phone").split())
    if not phone:
        return Card(line, problem=f"{name!r} has no phone number")
    contact = Contact(
        name=name,
        phone=phone,
        email=cell("email").strip(),
        note=one_line(cell("note")),
    )
    return Card(line, contact)


def detect_format(filename: str | None, text: str) -> str:
    """vcard or csv, from the file name, else from the first line."""
    suffix = (filename or "").lower().rpartition(".")[2]
    if suffix in ("vcf", "vcard"):
        return VCARD
    if suffix == "csv":
        return CSV
    for line in text.splitlines():
        if line.strip():
            return VCARD if line.strip().upper() == "BEGIN:VCARD" else CSV
    return VCARD


def read_contacts(text: str, format: str | None = None, filename: str | None = None):
    """Cards from vCard or CSV text (``format`` None: detect it)."""
    format = format or detect_format(filename, text)
    return read_vcards(text) if format == VCARD else read_csv(text)


# -- writing -------------------------------------------------------------------


def contact_uid(contact: Contact) -> str:
    return f"urn:uuid:{uuid.uuid5(_UID_NAMESPACE, contact.key)}"


def _split_name(name: str) -> vobject.vcard.Name:
    # N is a guess (the book keeps one display name); importers read FN first.
    given, _, family = name.rpartition(" ")
    return (
        vobject.vcard.Name(family=family, given=given)
        if given
        else (vobject.vcard.Name(given=family))
    )


def _tel_uri(phone: str) -> str | None:
    """``tel:+55-11-91234-5678`` when the number is placed for sure."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number) or number.extension:
        return None
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    # Only when the text is that number and nothing more.
    if "".join(c for c in phone if c.isdigit()) != formatted[1:]:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.RFC3966)


def to_vcard(contact: Contact, version: str = "4.0", rev: str = "") -> str:
    if version not in VCARD_VERSIONS:
        raise ValueError(f"vCard version must be one of {', '.join(VCARD_VERSIONS)}")
    card = vobject.vCard()
    card.add("version").value = version
    card.add("uid").value = contact_uid(contact)
    card.add("fn").value = contact.name
    card.add("n").value = _split_name(contact.name)
    tel = card.add("tel")
    uri = _tel_uri(contact.phone) if version == "4.0" else None
    if uri:
        tel.value, tel.value_param = uri, "uri"
    else:
        tel.value = contact.phone
        if version == "4.0":
            tel.value_param = "text"  # 4.0's default TEL value is a URI
    tel.type_param = "voice"
    if contact.email:
        card.add("email").value = contact.email
    if contact.note:
        card.add("note").value = contact.note
    if rev:
        card.add("rev").value = rev
    return card.serialize()


def write_vcards(
    contacts: Iterable[Contact], version: str = "4.0", now: datetime | None = None
) -> str:
    rev = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return "".join(to_vcard(c, version, rev) for c in contacts)


def write_csv(contacts: Iterable[Contact]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    for contact in contacts:
        writer.writerow([getattr(contact, f) for f in FIELDS])
    return out.getvalue()


def write_contacts(contacts: Iterable[Contact], format: str, version: str = "4.0"):
    if format == CSV:
        return write_csv(contacts)
    return write_vcards(contacts, version)


# -- planning an import --------------------------------------------------------

ADD = "add"
UPDATE = "update"
UNCHANGED = "unchanged"
SKIP = "skip"


@frozen
class Action:
    """What importing one card does: add, update (``changes``), or not."""

    card: Card
    kind: str
    changes: dict[str, str] = attrs.field(factory=dict)
    reason: str = ""


def _refusal(contact: Contact) -> str:
    """Why the node would refuse this contact (its own words), or ""."""
    fields = {"name": contact.name, "phone": contact.phone}
    # As the client sends them: empty optional fields are left out.
    fields.update(
        {f: getattr(contact, f) for f in ("email", "note") if getattr(contact, f)}
    )
    try:
        clean_fields(fields)
    except InvalidField as e:
        return str(e)
    return ""


def changes_for(
    contact: Contact, current: Contact, region: str | None = None
) -> dict[str, str]:
    """The fields to send so that ``current`` holds what ``contact`` says.

    Fields the card leaves out (empty) are kept; phones compare as numbers.
    """
    changes = {}
    if not same_number(contact.phone, current.phone, region):
        changes["phone"] = contact.phone
    for field in ("email", "note"):
        value = getattr(contact, field)
        if value and value != getattr(current, field):
            changes[field] = value
    return changes


def plan_import(
    cards: Iterable[Card], book: Iterable[Contact], region: str | None = None
) -> list[Action]:
    """Compare cards with the book: new names are added, known ones updated.

    Fields a card leaves out are kept as they are in the book (an import
    adds knowledge, it does not erase it). Phones compare as numbers, so
    "+55 (11) 91234-5678" equals a stored "+55 11 91234-5678". A card the
    node would refuse (a phone that is no number, a bad email...) is
    skipped here, in the node's words, so a dry run says what the import
    will do; it does not take its name from a later card of the same name.
    """
    known = {c.key: c for c in book}
    seen: dict[str, int] = {}
    actions = []
    for card in cards:
        contact = card.contact
        if contact is None:
            actions.append(Action(card, SKIP, reason=card.problem))
            continue
        refusal = _refusal(contact)
        if refusal:
            actions.append(Action(card, SKIP, reason=refusal))
            continue
        key = contact_key(contact.name)
        if key in seen:
            reason = f"the same name as the card on line {seen[key]}"
            actions.append(Action(card, SKIP, reason=reason))
            continue
        seen[key] = card.line
        current = known.get(key)
        if current is None:
            actions.append(Action(card, ADD))
            continue
        changes = changes_for(contact, current, region)
        kind = UPDATE if changes else UNCHANGED
        actions.append(Action(card, kind, changes))
    return actions
