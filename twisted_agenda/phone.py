"""Phone numbers: one international format when we can place them.

``normalize_phone`` turns "(11) 91234-5678" typed in Brazil into
"+55 11 91234-5678". A number that ``phonenumbers`` cannot place for sure
(an extension, a short internal number, a local number without its area
code) is kept exactly as typed: refusing it would lose a number that works
for the person who typed it. Only text that is not a phone number at all is
refused, with ``InvalidField`` saying why.

``phone_matches`` is the search side: "11 91234-5678", "011 91234 5678" and
"+55 11 91234-5678" all find the same contact.
"""

from __future__ import annotations

import functools
import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat

from twisted_agenda.model import PHONE_MAX, InvalidField, digits

#: Fewest digits in anything we call a phone number (as model.clean_phone).
MIN_DIGITS = 3

# The number itself: digits and the usual visual separators, "+" only first.
_NUMBER = re.compile(r"\+?[0-9()\-. ]+")
# An extension after the number: "ext. 12", "x12", "ramal 12", "#12", ",12".
_EXTENSION = re.compile(
    r"(?:\s*(?:ext\.?|extension|x|ramal|r\.?)\s*|\s*[#,;]\s*)[0-9]+\s*\Z", re.I
)


# Only digits and separators: no room for an extension marker.
_PLAIN_NUMBER = re.compile(r"[0-9+()\-. ]*")


def check_region(region: str | None) -> str | None:
    """A two-letter region ("BR"), upper-cased; None or "" means no default.

    ValueError for a code ``phonenumbers`` does not know, so that a server
    option or a client flag can say so at startup.
    """
    if not region:
        return None
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"unknown region {region!r}: use a two-letter country code such as BR"
        )
    return code


def _split_extension(text: str) -> tuple[str, str]:
    if _PLAIN_NUMBER.fullmatch(text):
        return text, ""  # the common case, without the costly search
    match = _EXTENSION.search(text)
    if match is None or match.start() == 0:
        return text, ""
    return text[: match.start()], text[match.start() :]


def check_phone(text: str) -> str:
    """The text with its spaces tidied, or InvalidField if it is no number."""
    value = " ".join(text.split())
    if not value:
        raise InvalidField("phone must not be empty")
    if len(value) > PHONE_MAX:
        raise InvalidField(f"phone is longer than {PHONE_MAX} characters")
    number, _ = _split_extension(value)
    if not _NUMBER.fullmatch(number):
        if "+" in number[1:]:
            raise InvalidField(f"phone {value!r}: '+' may only start the number")
        raise InvalidField(
            f"phone {value!r} is not a phone number: use digits, spaces and "
            "+ - ( ) . (an extension may follow, as in 'ext. 12')"
        )
    if len(digits(number)) < MIN_DIGITS:
        raise InvalidField(f"phone {value!r} needs at least {MIN_DIGITS} digits")
    return value


def _parse(text: str, region: str | None) -> PhoneNumber | None:
    """The number if ``phonenumbers`` places it for sure, else None."""
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def normalize_phone(text: str, region: str | None = None) -> str:
    """One consistent international format, or the number as typed.

    ``region`` is where numbers typed without "+country" are assumed to be
    (e.g. "BR"); with None such numbers are kept as typed. Raises
    InvalidField when the text is not a phone number at all.
    """
    return format_phone(check_phone(text), check_region(region))


@functools.lru_cache(maxsize=65_536)
def format_phone(value: str, region: str | None) -> str:
    """``normalize_phone`` for text ``check_phone`` already accepted.

    Cached: parsing is the costliest step of a write, and the same numbers
    come back (updates, re-imports, an office's switchboard).
    """
    number, extension = _split_extension(value)
    if extension:
        # Extension syntax varies by office and country; keep the person's.
        return value
    if region is None and not number.startswith("+"):
        return value  # no country to place it in: nothing to parse
    parsed = _parse(number, region)
    if parsed is None:
        return value
    return phonenumbers.format_number(parsed, PhoneNumberFormat.INTERNATIONAL)


@functools.lru_cache(maxsize=65_536)
def _national_digits(text: str, region: str | None) -> str:
    """The national significant number when the text can be read as one."""
    try:
        parsed = phonenumbers.parse(text, region)
    except NumberParseException:
        return ""
    return phonenumbers.national_significant_number(parsed)


def phone_needles(query: str, region: str | None = None) -> tuple[str, ...]:
    """The digit strings a search text looks for in phones; () if none.

    ``phone_matches`` is ``phone_needles`` against ``phone_haystacks``; a
    window searching a whole book works the query out once, this way.
    """
    try:
        check_phone(query)
    except InvalidField:
        return ()
    region = check_region(region)
    query_number, _ = _split_extension(" ".join(query.split()))
    needles = {digits(query_number), _national_digits(query_number, region)}
    return tuple(n for n in needles if len(n) >= MIN_DIGITS)


def phone_haystacks(phone: str, region: str | None = None) -> tuple[str, ...]:
    """The digit strings of ``phone`` that ``phone_needles`` are looked for in."""
    haystacks = {digits(phone), _national_digits(phone, check_region(region))}
    return tuple(h for h in haystacks if h)


def phone_matches(query: str, phone: str, region: str | None = None) -> bool:
    """Whether a search text that is a phone number finds ``phone``.

    Compares digits however they were typed: "11 91234-5678" finds
    "+55 11 91234-5678"; "+55 11 91234 5678" finds "(11) 91234-5678";
    "011 91234-5678" (trunk prefix) finds both. A query that is not shaped
    like a phone number never matches here.
    """
    needles = phone_needles(query, region)
    if not needles:
        return False
    haystacks = phone_haystacks(phone, region)
    return any(needle in haystack for needle in needles for haystack in haystacks)


def same_number(a: str, b: str, region: str | None = None) -> bool:
    """Whether two phone texts are one number ("+55 (11) ..." = "+55 11 ...")."""
    if " ".join(a.split()) == " ".join(b.split()):
        return True
    region = check_region(region)
    first, second = _parse(a, region), _parse(b, region)
    if first is None or second is None:
        return False
    return phonenumbers.format_number(
        first, PhoneNumberFormat.E164
    ) == phonenumbers.format_number(second, PhoneNumberFormat.E164) and (
        first.extension or ""
    ) == (second.extension or "")
