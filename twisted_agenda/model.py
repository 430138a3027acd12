"""Contacts: field names, validation and normalisation of user input.

Limits (also in docs/protocol.md):

- name: 1-200 characters, no control characters; compared after Unicode NFC
  and case folding, displayed as typed.
- phone: required, at most 64 characters of digits, spaces and ``+ - ( ) .``,
  with at least 3 digits, optionally followed by an extension ("ext. 12");
  shown in international format when phone.py can place the number.
- email: optional, at most 254 characters, ``local@domain.tld`` shaped.
- note: optional, at most 2000 characters, one line.
"""

from __future__ import annotations

import re
import unicodedata

from attrs import frozen

NAME_MAX = 200
PHONE_MAX = 64
EMAIL_MAX = 254
NOTE_MAX = 2000

#: Every field a contact has, in display order.
FIELDS = ("name", "phone", "email", "note")
#: Fields that may be empty (an empty value clears them).
OPTIONAL_FIELDS = ("email", "note")

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


class InvalidField(ValueError):
    """User input that breaks a documented limit; the message says which."""


@frozen
class Contact:
    """One entry of the book, as a user sees it."""

    name: str
    phone: str = ""
    email: str = ""
    note: str = ""

    @property
    def key(self) -> str:
        return contact_key(self.name)

    def fields(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in FIELDS}


def contact_key(name: str) -> str:
    """The identity of a name: "JOÃO", "João" and "joão" are one contact."""
    return unicodedata.normalize("NFC", name.strip()).casefold()


def fold(text: str) -> str:
    """Text for searching: case and accents ignored ("joao" finds "João")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_NON_DIGITS = re.compile(r"[^0-9]+")


def digits(text: str) -> str:
    return _NON_DIGITS.sub("", text)


def _has_control(text: str) -> bool:
    if text.isprintable():  # the common case, in C
        return False
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def clean_name(value: str) -> str:
    value = unicodedata.normalize("NFC", value.strip())
    if not value:
        raise InvalidField("name must not be empty")
    if len(value) > NAME_MAX:
        raise InvalidField(f"name is longer than {NAME_MAX} characters")
    if _has_control(value):
        raise InvalidField("name must not contain control characters")
    return value


def clean_phone(value: str) -> str:
    """A phone as typed (spaces tidied); InvalidField if it is no number.

    The rules live in phone.py, with the formatting.
    """
    return phone_rules.check_phone(value)


def clean_email(value: str) -> str:
    value = value.strip()
    if not value:
        return ""
    if len(value) > EMAIL_MAX:
        raise InvalidField(f"email is longer than {EMAIL_MAX} characters")
    if not _EMAIL.fullmatch(value) or _has_control(value):
        raise InvalidField(f"email {value!r} does not look like name@example.com")
    return value


def clean_note(value: str) -> str:
    value = value.strip()
    if len(value) > NOTE_MAX:
        raise InvalidField(f"note is longer than {NOTE_MAX} characters")
    if _has_control(value):
        raise InvalidField("note must be one line without control characters")
    return value


CLEANERS = {
    "name": clean_name,
    "phone": clean_phone,
    "email": clean_email,
    "note": clean_note,
}


def clean_fields(fields: dict[str, str]) -> dict[str, str]:
    """Validate and normalise user-given fields; raise InvalidField."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise InvalidField(
            f"unknown field {sorted(unknown)[0]!r} (fields: {', '.join(FIELDS)})"
        )
    return {name: CLEANERS[name](value) for name, value in fields.items()}


def matches(contact: Contact, query: str, region: str | None = None) -> bool:
    """FIND: name, phone or email contains the text, ignoring case and accents.

    A query that is a phone number matches by digits however either was
    typed, so "11 91234-5678" finds "+55 11 91234-5678".
    """
    needle = fold(query.strip())
    if not needle:
        return True
    haystack = (fold(contact.name), fold(contact.phone), fold(contact.email))
    if any(needle in h for h in haystack):
        return True
    return bool(contact.phone) and phone_rules.phone_matches(
        query, contact.phone, region
    )


# phone.py builds on the limits above, so it comes last (a module reference:
# it works whichever of the two modules is imported first).
import twisted_agenda.phone as phone_rules  # noqa: E402
