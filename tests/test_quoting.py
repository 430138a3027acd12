"""Reply values are quoted so that a POSIX-shell split gives them back exactly."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from twisted_agenda import quoting
from twisted_agenda.lineproto import contact_line, parse_fields
from twisted_agenda.model import Contact

# Anything a line can carry: no control characters (a newline ends the line)
# and no lone surrogates (not encodable as UTF-8).
line_text = st.text(st.characters(exclude_categories=("Cc", "Cs")))
some_line_text = line_text.filter(bool)

AWKWARD = [
    "Maria da Silva",
    'Ana "Nina" Souza',
    "João d'Ávila",
    "back\\slash",
    "trailing\\",
    '\\"',
    "a = b",
    "x=y",
    "=",
    "  two  spaces  ",
    "tab\there",
    "#not a comment",
    "'",
    '"',
    "",
    "nbsp\u00a0inside",
    "emoji 👩\u200d💻",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_quote_round_trips_awkward_values(value):
    assert quoting.split(quoting.quote(value)) == [value]


def test_plain_values_stay_bare():
    assert quoting.quote("Maria") == "Maria"
    assert quoting.quote("+5511912345678") == "+5511912345678"
    assert quoting.quote("maria@example.com") == "maria@example.com"
    assert quoting.quote("João") == "João"


def test_values_with_spaces_or_quotes_are_double_quoted():
    assert quoting.quote("Maria da Silva") == '"Maria da Silva"'
    assert quoting.quote("João d'Ávila") == '"João d\'Ávila"'
    assert quoting.quote('say "hi"') == '"say \\"hi\\""'
    assert quoting.quote("a\\b") == '"a\\\\b"'
    assert quoting.quote("") == '""'


def test_split_refuses_unbalanced_quotes():
    with pytest.raises(ValueError):
        quoting.split('ADD "Maria')


def test_split_reads_single_quotes_and_escapes_like_a_shell():
    assert quoting.split("ADD 'Maria da Silva' 123") == ["ADD", "Maria da Silva", "123"]
    assert quoting.split("ADD Maria\\ da\\ Silva 123") == [
        "ADD",
        "Maria da Silva",
        "123",
    ]
    assert quoting.split("a  b\tc") == ["a", "b", "c"]
    assert quoting.split("note=#1") == ["note=#1"]


@settings(derandomize=True)
@given(st.lists(line_text))
@example(AWKWARD)
def test_join_then_split_gives_the_values_back(values):
    assert quoting.split(quoting.join(values)) == values


@settings(derandomize=True)
@given(
    name=some_line_text,
    phone=some_line_text,
    email=line_text,
    note=line_text,
)
@example(name="João d'Ávila", phone="+55 (11) 9", email="a=b@c.d", note='x "y" \\ z')
@example(name="email=not-a-field", phone="1 2 3", email="", note="a=b")
def test_contact_line_splits_back_into_exactly_its_fields(name, phone, email, note):
    line = contact_line(Contact(name, phone, email, note))
    expected = ["CONTACT", name, phone]
    if email:
        expected.append(f"email={email}")
    if note:
        expected.append(f"note={note}")
    assert quoting.split(line) == expected


def _looks_like_a_field(value: str) -> bool:
    key, eq, _ = value.partition("=")
    return bool(eq) and key.isalpha() and key.isascii()


@settings(derandomize=True)
@given(
    name=some_line_text.filter(lambda v: not _looks_like_a_field(v)),
    phone=some_line_text.filter(lambda v: not _looks_like_a_field(v)),
    email=line_text,
    note=line_text,
)
def test_a_contact_line_parses_back_as_request_arguments(name, phone, email, note):
    # A client may echo a CONTACT line's words back in an ADD request.
    words = quoting.split(contact_line(Contact(name, phone, email, note)))[1:]
    fields = parse_fields(words, ("name", "phone"))
    expected = {"name": name, "phone": phone}
    if email:
        expected["email"] = email
    if note:
        expected["note"] = note
    assert fields == expected


def test_a_name_shaped_like_a_field_is_given_as_name_equals():
    # "email=x" as a bare word is the email field; name= says it is the name.
    assert parse_fields(["email=x", "123"], ("name", "phone")) == {
        "email": "x",
        "name": "123",
    }
    assert parse_fields(["name=email=x", "123"], ("name", "phone")) == {
        "name": "email=x",
        "phone": "123",
    }
