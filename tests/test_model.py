"""Validation, normalisation, identity and search of contacts."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_agenda.model import (
    EMAIL_MAX,
    NAME_MAX,
    NOTE_MAX,
    PHONE_MAX,
    Contact,
    InvalidField,
    clean_email,
    clean_fields,
    clean_name,
    clean_note,
    clean_phone,
    contact_key,
    fold,
    matches,
)

MARIA = Contact("Maria da Silva", "+55 11 91234-5678", "maria@example.com")
JOAO = Contact("João d'Ávila", "(21) 3333-4444", "", "vizinho")


# -- name ---------------------------------------------------------------------


def test_name_is_stripped_and_nfc_normalised():
    decomposed = unicodedata.normalize("NFD", "João")
    assert len(decomposed) == 5
    assert clean_name(f"  {decomposed} ") == "João"


def test_name_keeps_its_spelling():
    assert clean_name("mARIA da silva") == "mARIA da silva"


@pytest.mark.parametrize("value", ["", "   "])
def test_name_must_not_be_empty(value):
    with pytest.raises(InvalidField, match="name must not be empty"):
        clean_name(value)


def test_name_length_limit_is_200_characters():
    assert clean_name("x" * NAME_MAX) == "x" * NAME_MAX
    # Counted in characters, not bytes.
    assert clean_name("ã" * NAME_MAX) == "ã" * NAME_MAX
    with pytest.raises(InvalidField, match="longer than 200"):
        clean_name("x" * (NAME_MAX + 1))


@pytest.mark.parametrize("value", ["a\tb", "a\x00b", "a\x1bb", "a\u2028b", "a\u200eb"])
def test_name_refuses_control_characters(value):
    with pytest.raises(InvalidField, match="control characters"):
        clean_name(value)


# -- phone --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "clean"),
    [
        ("+55 11 91234-5678", "+55 11 91234-5678"),
        ("(21)   3333.4444", "(21) 3333.4444"),
        (" 123 ", "123"),
        ("123 ext 4", "123 ext 4"),  # extensions are kept as typed
    ],
)
def test_phone_accepts_digits_spaces_and_punctuation(value, clean):
    assert clean_phone(value) == clean


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must not be empty"),
        ("12", "at least 3 digits"),
        ("+1-2", "at least 3 digits"),
        ("123/456", "not a phone number"),
        ("call me", "not a phone number"),
        ("\uff11\uff12\uff13", "not a phone number"),  # fullwidth digits
        ("1" * (PHONE_MAX + 1), "longer than 64"),
    ],
)
def test_phone_refuses_bad_values(value, message):
    with pytest.raises(InvalidField, match=message):
        clean_phone(value)


def test_phone_length_limit_is_64_characters():
    assert clean_phone("1" * PHONE_MAX) == "1" * PHONE_MAX


# -- email and note -----------------------------------------------------------


def test_email_is_optional_and_shaped_like_an_address():
    assert clean_email("") == ""
    assert clean_email(" maria@example.com ") == "maria@example.com"
    assert clean_email("a.b+c@mail.example.co.uk") == "a.b+c@mail.example.co.uk"
    for bad in [
        "maria",
        "maria@",
        "@example.com",
        "maria@example",
        "a@b@c.d",
        "a b@c.d",
    ]:
        with pytest.raises(InvalidField, match="does not look like"):
            clean_email(bad)


def test_email_length_limit_is_254_characters():
    local = "x" * (EMAIL_MAX - len("@example.com"))
    assert clean_email(f"{local}@example.com") == f"{local}@example.com"
    with pytest.raises(InvalidField, match="longer than 254"):
        clean_email(f"x{local}@example.com")


def test_note_is_optional_one_line_up_to_2000_characters():
    assert clean_note("") == ""
    assert clean_note(" vizinho ") == "vizinho"
    assert clean_note("n" * NOTE_MAX) == "n" * NOTE_MAX
    with pytest.raises(InvalidField, match="longer than 2000"):
        clean_note("n" * (NOTE_MAX + 1))
    with pytest.raises(InvalidField, match="one line"):
        clean_note("first\nsecond")


def test_clean_fields_names_an_unknown_field():
    with pytest.raises(InvalidField, match="unknown field 'birthday'"):
        clean_fields({"name": "Maria", "birthday": "1990"})


def test_clean_fields_cleans_each_given_field_only():
    assert clean_fields({"name": " Maria ", "email": ""}) == {
        "name": "Maria",
        "email": "",
    }


# -- identity -----------------------------------------------------------------


def test_names_are_one_contact_after_nfc_and_casefold():
    composed = "João"
    decomposed = unicodedata.normalize("NFD", composed)
    assert contact_key(composed) == contact_key(decomposed) == contact_key("JOÃO")
    assert contact_key("Straße") == contact_key("STRASSE")
    assert contact_key("João") != contact_key("Joao")


def test_contact_key_and_fields():
    assert MARIA.key == "maria da silva"
    assert MARIA.fields() == {
        "name": "Maria da Silva",
        "phone": "+55 11 91234-5678",
        "email": "maria@example.com",
        "note": "",
    }


@settings(derandomize=True)
@given(st.text())
def test_key_is_idempotent(name):
    assert contact_key(contact_key(name)) == contact_key(name)


# -- search -------------------------------------------------------------------


def test_fold_ignores_case_and_accents():
    assert fold("JOÃO d'Ávila") == "joao d'avila"
    assert fold("Ærø") == fold("ærø")


@pytest.mark.parametrize(
    ("query", "contact"),
    [
        ("joao", JOAO),
        ("JOAO", JOAO),
        ("ávila", JOAO),
        ("silva", MARIA),
        ("Maria da", MARIA),
        ("EXAMPLE.COM", MARIA),
        ("5678", MARIA),
        ("11 91234-5678", MARIA),
        ("11912345678", MARIA),
        ("(11) 91234 5678", MARIA),
        ("3333 4444", JOAO),
        ("", MARIA),
    ],
)
def test_matches(query, contact):
    assert matches(contact, query)


@pytest.mark.parametrize(
    ("query", "contact"),
    [
        ("joana", JOAO),
        ("vizinho", JOAO),  # notes are not searched
        ("5 9", MARIA),  # too few digits to match by digits
        ("55 x 11", MARIA),  # not a phone number, so no digit matching
        ("99999", MARIA),
    ],
)
def test_does_not_match(query, contact):
    assert not matches(contact, query)
