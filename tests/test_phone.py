"""Phone numbers: one international format when placed, as typed otherwise."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_agenda.model import InvalidField
from twisted_agenda.phone import (
    check_phone,
    check_region,
    normalize_phone,
    phone_matches,
    same_number,
)

# -- normalize_phone ------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "region", "shown"),
    [
        # Typed in Brazil, any local style: one format.
        ("11 91234-5678", "BR", "+55 11 91234-5678"),
        ("(11) 91234-5678", "BR", "+55 11 91234-5678"),
        ("011 91234 5678", "BR", "+55 11 91234-5678"),
        ("11912345678", "br", "+55 11 91234-5678"),
        # With a country code the region does not matter.
        ("+55 (11) 91234-5678", None, "+55 11 91234-5678"),
        ("+5511912345678", "US", "+55 11 91234-5678"),
        ("+44 20 7946 0958", "BR", "+44 20 7946 0958"),
        ("  +1 (201) 555-0123 ", None, "+1 201-555-0123"),
        ("201.555.0123", "US", "+1 201-555-0123"),
    ],
)
def test_numbers_it_can_place_get_one_international_format(typed, region, shown):
    assert normalize_phone(typed, region) == shown


@pytest.mark.parametrize(
    ("typed", "region"),
    [
        # Short internal numbers and emergency numbers.
        ("1234", "BR"),
        ("190", "BR"),
        # A local number without its area code.
        ("91234-5678", "BR"),
        # No region and no country code: nowhere to place it.
        ("(11) 91234-5678", None),
        # Extensions, in the office's own notation.
        ("+1 201 555 0123 ext. 12", None),
        ("201-555-0123 x12", "US"),
        ("+55 11 3333-4444 ramal 210", "BR"),
        ("3333-4444 #12", "BR"),
        # A number that looks plausible but is not valid where it would be.
        ("+55 11 1234", None),
    ],
)
def test_numbers_it_cannot_place_are_kept_exactly_as_typed(typed, region):
    assert normalize_phone(typed, region) == typed


def test_kept_numbers_only_lose_extra_spaces():
    assert normalize_phone("  12   34 ", None) == "12 34"


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("call me", "is not a phone number"),
        ("1-800-FLOWERS", "is not a phone number"),
        ("maria@example.com", "is not a phone number"),
        ("12", "at least 3 digits"),
        ("+-()", "at least 3 digits"),
        ("11 +55 1234", r"'\+' may only start"),
        ("ext. 12", "is not a phone number"),
        ("1" * 65, "longer than 64"),
    ],
)
def test_text_that_is_no_phone_number_is_refused_saying_why(typed, why):
    with pytest.raises(InvalidField, match=why):
        normalize_phone(typed, "BR")


def test_invalid_field_is_a_value_error_like_every_model_refusal():
    with pytest.raises(ValueError):
        normalize_phone("nope", None)


@pytest.mark.parametrize("region", ["BR", "us", " gb ", None, ""])
def test_known_regions_are_accepted(region):
    expected = region.strip().upper() if region and region.strip() else None
    assert check_region(region) == expected


@pytest.mark.parametrize("region", ["XX", "Brazil", "55"])
def test_unknown_regions_are_refused_with_an_example(region):
    with pytest.raises(ValueError, match="two-letter country code such as BR"):
        check_region(region)
    with pytest.raises(ValueError):
        normalize_phone("11 91234-5678", region)


_phone_text = st.text(alphabet="0123456789 +-().", min_size=0, max_size=30)


@given(_phone_text, st.sampled_from(["BR", "US", "DE", None]))
def test_normalizing_twice_changes_nothing(text, region):
    try:
        once = normalize_phone(text, region)
    except InvalidField:
        return
    assert normalize_phone(once, region) == once
    # And whatever we keep is still a phone number by our own rules.
    assert check_phone(once) == once


# -- phone_matches -------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "phone", "region"),
    [
        ("11 91234-5678", "+55 11 91234-5678", None),
        ("(11) 91234-5678", "+55 11 91234-5678", None),
        ("91234 5678", "+55 11 91234-5678", None),
        ("+55 11 91234 5678", "(11) 91234-5678", None),
        ("011 91234-5678", "+55 11 91234-5678", "BR"),
        ("5678", "+55 11 91234-5678", None),
        ("201-555-0123", "+1 201-555-0123 ext. 12", None),
        ("  +1 201 555 0123  ", "(201) 555-0123", "US"),
    ],
)
def test_a_number_matches_however_it_was_typed(query, phone, region):
    assert phone_matches(query, phone, region)


@pytest.mark.parametrize(
    ("query", "phone"),
    [
        ("11 91234-0000", "+55 11 91234-5678"),
        ("12", "+55 11 91234-5678"),  # too short to mean anything
        ("maria", "+55 11 91234-5678"),  # not a number: name search's job
        ("", "+55 11 91234-5678"),
    ],
)
def test_other_numbers_and_non_numbers_do_not_match(query, phone):
    assert not phone_matches(query, phone, "BR")


# -- same_number ---------------------------------------------------------------


def test_same_number_ignores_formatting_but_not_digits():
    assert same_number("+55 (11) 91234-5678", "+55 11 91234-5678")
    assert same_number("(11) 91234-5678", "+55 11 91234-5678", "BR")
    assert same_number("1234", " 1234 ")
    assert not same_number("(11) 91234-5678", "+55 11 91234-5678", None)
    assert not same_number("+55 11 91234-5678", "+55 11 91234-5679")
    assert not same_number("1234", "1235")
