"""vCard and CSV reading, writing and import planning (no network here)."""

import unicodedata
from datetime import UTC, datetime

import attrs
import pytest
import vobject
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_agenda.model import Contact
from twisted_agenda.phone import same_number
from twisted_agenda.vcard import (
    ADD,
    CSV,
    SKIP,
    UNCHANGED,
    UPDATE,
    VCARD,
    contact_uid,
    detect_format,
    plan_import,
    read_contacts,
    read_csv,
    read_vcards,
    write_csv,
    write_vcards,
)

MARIA = Contact("Maria da Silva", "+55 11 91234-5678", "maria@example.com", "tea")
ODD = Contact('Ana: "the {boss}" \\ d\'Ávila, Jr.; x=y', "1234 ext. 5", "", "a, b; c")
BOOK = [MARIA, ODD, Contact("木村 拓哉", "+81 3-1234-5678")]

V3 = """\
BEGIN:VCARD
VERSION:3.0
FN:João d'Ávila
N:d'Ávila;João;;;
TEL;TYPE=HOME,VOICE:+351 21 123 4567
TEL;TYPE=CELL,PREF:+351 91 234 5678
EMAIL;TYPE=INTERNET:joao@example.pt
NOTE:Lisbon office\\nsecond floor
END:VCARD
"""

V4 = """\
BEGIN:VCARD
VERSION:4.0
FN:Zoë Brandt
TEL;VALUE=uri;TYPE=voice:tel:+49-30-1234567
TEL;VALUE=uri;TYPE=fax:tel:+49-30-7654321
EMAIL;PREF=1:zoe@example.de
EMAIL:zoe@home.example
UID:urn:uuid:0b9e-something
REV:20240101T120000Z
END:VCARD
"""


def contacts(cards):
    return [card.contact for card in cards]


# -- reading vCards ------------------------------------------------------------


def test_reads_vcard_3_with_the_preferred_phone_and_a_one_line_note():
    (card,) = read_vcards(V3)
    assert card.line == 1
    assert card.contact == Contact(
        "João d'Ávila",
        "+351 91 234 5678",
        "joao@example.pt",
        "Lisbon office second floor",
    )
    assert card.warnings == ("kept the preferred of 2 phone numbers",)


def test_reads_vcard_4_with_tel_uris_and_pref_parameters():
    (card,) = read_vcards(V4)
    assert card.contact == Contact("Zoë Brandt", "+49 30 1234567", "zoe@example.de")


def test_a_card_without_fn_takes_its_name_from_n():
    text = (
        "BEGIN:VCARD\nVERSION:2.1\nN:Doe;John;Q.;Dr.;III\nTEL;CELL:555-1234\nEND:VCARD"
    )
    (card,) = read_vcards(text)
    assert card.contact == Contact("Dr. John Q. Doe III", "555-1234")


def test_a_cell_number_is_preferred_to_a_fax_when_none_is_marked():
    text = (
        "BEGIN:VCARD\nVERSION:3.0\nFN:A\nTEL;TYPE=FAX:111 111\n"
        "TEL;TYPE=WORK:222 222\nTEL;TYPE=CELL:333 333\nEND:VCARD\n"
    )
    assert read_vcards(text)[0].contact.phone == "333 333"


def test_every_bad_card_is_reported_with_its_line_and_the_rest_still_read():
    text = (
        "stray text\n"  # 1
        + V3  # 2-10
        + "BEGIN:VCARD\nVERSION:3.0\nFN:Broken\n"  # 11-13
        + "this line is garbage\nEND:VCARD\n"  # 14-15
        + "BEGIN:VCARD\nVERSION:3.0\nFN:No Phone\n"  # 16-18
        + "EMAIL:x@example.com\nEND:VCARD\n"  # 19-20
        + "BEGIN:VCARD\nVERSION:3.0\nTEL:123 456\nEND:VCARD\n"  # 21-24
        + V4  # 25-34
        + "BEGIN:VCARD\nVERSION:3.0\nFN:Cut short\n"  # 35-
    )
    cards = read_vcards(text)
    outcome = [(c.line, c.contact.name if c.contact else c.problem) for c in cards]
    assert outcome == [
        (1, "text outside BEGIN:VCARD ... END:VCARD"),
        (2, "João d'Ávila"),
        (14, "cannot read the card: Failed to parse line: this line is garbage"),
        (16, "'No Phone' has no phone number (TEL)"),
        (21, "no name (the card has neither FN nor N)"),
        (25, "Zoë Brandt"),
        (35, "the card starting here has no END:VCARD"),
    ]


@pytest.mark.parametrize("version", ["2.1", "3.0", "4.0"])
def test_unescaped_commas_do_not_cut_names_and_notes(version):
    # Legal in 2.1; some 3.0/4.0 writers do not escape them either.
    text = (
        f"BEGIN:VCARD\nVERSION:{version}\nN:Silva;Maria\nFN:Silva, Maria\n"
        "TEL;CELL:+55 11 97777-0001\nNOTE:call after 6pm, not before\n"
        "NOTE:escaped\\, too\\; and a\\nbreak\nEND:VCARD\n"
    )
    (card,) = read_vcards(text)
    assert card.contact.name == "Silva, Maria"
    assert card.contact.note == ("call after 6pm, not before escaped, too; and a break")


def test_quoted_printable_values_with_commas_are_whole():
    text = (
        "BEGIN:VCARD\nVERSION:2.1\nFN;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:"
        "Jo=C3=A3o, Jr.\nTEL:123 456\nEND:VCARD\n"
    )
    assert read_vcards(text)[0].contact.name == "João, Jr."


def test_spaces_inside_names_and_notes_are_kept_as_the_node_keeps_them():
    text = (
        "BEGIN:VCARD\nVERSION:3.0\nFN:  spaced   name \nTEL:123  456\n"
        "NOTE: two  spaces \nEND:VCARD\n"
    )
    assert read_vcards(text)[0].contact == Contact(
        "spaced   name", "123 456", "", "two  spaces"
    )
    # A name is compared in NFC, as the node stores it.
    decomposed = unicodedata.normalize("NFD", "João")
    text = f"name,phone,note\n {decomposed}  da  Silva ,123, a  b \n"
    assert contacts(read_csv(text)) == [Contact("João  da  Silva", "123", "", "a  b")]


def test_an_unclosed_card_is_reported_and_the_next_card_still_read():
    text = (
        "BEGIN:VCARD\nVERSION:3.0\nFN:Unclosed\nTEL:123\n"  # 1-4
        "BEGIN:VCARD\nVERSION:3.0\nFN:Good Card\nTEL:456\nEND:VCARD\n"  # 5-9
    )
    outcome = [
        (c.line, c.contact.name if c.contact else c.problem) for c in read_vcards(text)
    ]
    assert outcome == [
        (1, "the card starting here has no END:VCARD (a new card begins on line 5)"),
        (5, "Good Card"),
    ]


def test_a_vcard_2_1_agent_card_nested_in_a_card_is_not_a_missing_end():
    text = (
        "BEGIN:VCARD\nVERSION:2.1\nFN:Boss, The\nTEL:123 456\nAGENT:\n"
        "BEGIN:VCARD\nVERSION:2.1\nFN:Assistant\nTEL:789\nEND:VCARD\n"
        "END:VCARD\n"
        "BEGIN:VCARD\nVERSION:2.1\nFN:Next\nTEL:111\nEND:VCARD\n"
    )
    assert [(c.line, c.contact) for c in read_vcards(text)] == [
        (1, Contact("Boss, The", "123 456")),
        (12, Contact("Next", "111")),
    ]


def test_an_empty_file_has_no_cards():
    assert read_vcards("") == []
    assert read_csv("") == []


# -- writing vCards ------------------------------------------------------------


def test_writes_vcard_4_with_the_fields_the_issue_asks_for():
    text = write_vcards([MARIA], now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    card = vobject.readOne(text)
    assert card.version.value == "4.0"
    assert card.fn.value == "Maria da Silva"
    assert card.n.value.family == "Silva" and card.n.value.given == "Maria da"
    assert card.tel.value == "tel:+55-11-91234-5678"
    assert card.tel.params == {"TYPE": ["voice"], "VALUE": ["uri"]}
    assert card.email.value == "maria@example.com"
    assert card.note.value == "tea"
    assert card.uid.value == contact_uid(MARIA)
    assert card.rev.value == "20260102T030405Z"
    assert text.startswith("BEGIN:VCARD\r\nVERSION:4.0\r\n")


def test_a_number_kept_as_typed_is_written_as_text_not_as_a_uri():
    card = vobject.readOne(write_vcards([ODD]))
    assert card.tel.value == "1234 ext. 5"
    assert card.tel.params["VALUE"] == ["text"]


def test_vcard_3_is_written_on_request():
    card = vobject.readOne(write_vcards([MARIA], version="3.0"))
    assert card.version.value == "3.0"
    assert card.tel.value == "+55 11 91234-5678"


def test_uids_stay_the_same_across_exports_and_spellings_of_a_name():
    renamed = Contact("MARIA DA SILVA", "1")
    assert contact_uid(MARIA) == contact_uid(renamed)
    assert contact_uid(MARIA) != contact_uid(ODD)


@pytest.mark.parametrize("version", ["4.0", "3.0"])
def test_vcard_round_trip_gives_back_every_contact(version):
    assert contacts(read_vcards(write_vcards(BOOK, version))) == BOOK


def test_csv_round_trip_gives_back_every_contact():
    assert contacts(read_csv(write_csv(BOOK))) == BOOK


# Any one-line text, spaces inside and all, as the node keeps it: a name
# trimmed and NFC-normalised (model.clean_name), a note trimmed (clean_note).
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf")),
    max_size=20,
)
_name = _text.map(lambda s: unicodedata.normalize("NFC", s.strip())).filter(bool)
_note = _text.map(str.strip)


@settings(max_examples=200)
@given(
    st.lists(
        st.builds(
            Contact,
            name=_name | st.sampled_from(["spaced   name", "Silva, Maria", "a;b\\c"]),
            phone=st.from_regex(r"\+?[0-9][0-9 ()\-.]{2,20}[0-9]", fullmatch=True),
            email=st.just("") | st.emails(),
            note=_note | st.just("two  spaces, a comma; a semicolon"),
        ),
        max_size=5,
    )
)
def test_any_book_survives_both_round_trips(book):
    for cards in (read_vcards(write_vcards(book)), read_csv(write_csv(book))):
        got = contacts(cards)
        assert [(c.name, c.email, c.note) for c in got] == [
            (c.name, c.email, c.note) for c in book
        ]
        # A number written as a tel: URI may come back formatted, never other.
        for back, sent in zip(got, book, strict=True):
            assert same_number(back.phone, sent.phone)


# -- CSV -----------------------------------------------------------------------


def test_csv_understands_other_column_names_and_a_byte_order_mark():
    text = "\ufeffFirst Name,Last Name,Mobile Phone,E-mail Address,Notes\r\n"
    text += "Maria,da Silva,+55 11 91234-5678,maria@example.com,tea\r\n"
    assert contacts(read_csv(text)) == [MARIA]


def test_bad_csv_rows_are_reported_with_their_line():
    text = (
        "name,phone,email\n"  # 1
        "Maria da Silva,+55 11 91234-5678,maria@example.com\n"  # 2
        '"Multi\nline",123 456,\n'  # 3-4
        "\n"  # 5: blank, ignored
        ",123,\n"  # 6
        "No Phone,,\n"  # 7
        "Short\n"  # 8
    )
    outcome = [
        (c.line, c.contact.name if c.contact else c.problem) for c in read_csv(text)
    ]
    assert outcome == [
        (2, "Maria da Silva"),
        (3, "Multi line"),
        (6, "the row has no name"),
        (7, "'No Phone' has no phone number"),
        (8, "'Short' has no phone number"),
    ]


@pytest.mark.parametrize("separator", [";", "\t"])
def test_csv_with_semicolons_or_tabs_is_read(separator):
    # Excel writes ";" where the decimal mark is a comma (Brazil, most of Europe).
    rows = [
        ["Nome", "Telefone", "E-mail", "Notas"],
        ["Silva, Maria", "+55 11 91234-5678", "maria@example.com", "a, b"],
    ]
    text = "\r\n".join(separator.join(row) for row in rows) + "\r\n"
    assert contacts(read_csv(text)) == [
        Contact("Silva, Maria", "+55 11 91234-5678", "maria@example.com", "a, b")
    ]
    quoted = '"name";"phone"\n"Ana; Bia";"123"\n'
    assert contacts(read_csv(quoted)) == [Contact("Ana; Bia", "123")]


def test_csv_without_the_needed_columns_says_what_it_found():
    (card,) = read_csv("who,what\nx,y\n")
    assert card.line == 1
    assert "needs a name and a phone column" in card.problem
    assert "found: who, what" in card.problem


def test_format_is_detected_from_the_name_then_the_content():
    assert detect_format("book.VCF", "") == VCARD
    assert detect_format("book.csv", "BEGIN:VCARD") == CSV
    assert detect_format(None, "\n  BEGIN:VCARD\n") == VCARD
    assert detect_format("book.txt", "name,phone\n") == CSV
    assert contacts(read_contacts(write_csv([MARIA]))) == [MARIA]


# -- planning ------------------------------------------------------------------


def test_plan_adds_new_names_updates_changed_ones_and_skips_the_rest():
    cards = read_csv(
        "name,phone,email,note\n"
        "Maria da Silva,+55 (11) 91234-5678,,\n"  # same number, other format
        "JOÃO D'ÁVILA,+351 21 123 4567,new@example.pt,\n"  # other case, new email
        "Zoë Brandt,+49 30 1234567,,\n"  # new
        "zoë brandt,+49 30 0000000,,\n"  # the same name again
        "Nobody,,,\n"  # broken
    )
    book = [MARIA, Contact("João d'Ávila", "+351 21 123 4567", "old@example.pt")]
    plan = plan_import(cards, book)
    assert [(a.card.line, a.kind, a.changes, a.reason) for a in plan] == [
        (2, UNCHANGED, {}, ""),
        (3, UPDATE, {"email": "new@example.pt"}, ""),
        (4, ADD, {}, ""),
        (5, SKIP, {}, "the same name as the card on line 4"),
        (6, SKIP, {}, "'Nobody' has no phone number"),
    ]


def test_plan_never_clears_fields_the_file_leaves_out():
    cards = read_csv("name,phone\nMaria da Silva,+55 11 91234-5678\n")
    assert plan_import(cards, [MARIA])[0].kind == UNCHANGED


def test_plan_compares_local_numbers_in_the_given_region():
    cards = read_csv("name,phone\nMaria da Silva,(11) 91234-5678\n")
    assert plan_import(cards, [MARIA], region="BR")[0].kind == UNCHANGED
    (action,) = plan_import(cards, [MARIA], region=None)
    assert action.kind == UPDATE
    assert action.changes == {"phone": "(11) 91234-5678"}


def test_plan_skips_what_the_node_would_refuse_in_its_words():
    cards = read_csv(
        "name,phone,email\n"
        "Text Phone,call me maybe,\n"  # 2
        "Bad Email,123 456,not-an-email\n"  # 3
        "bad email,123 456,fixed@example.com\n"  # 4: the name is still free
        "Fine,123 456,\n"  # 5
        "Long Note,123 456,\n"  # 6 (note set below)
    )
    long_note = attrs.evolve(cards[4].contact, note="x" * 2001)
    cards[4] = attrs.evolve(cards[4], contact=long_note)
    plan = plan_import(cards, [])
    assert [(a.card.line, a.kind, a.reason) for a in plan] == [
        (
            2,
            SKIP,
            "phone 'call me maybe' is not a phone number: use digits, spaces and "
            "+ - ( ) . (an extension may follow, as in 'ext. 12')",
        ),
        (3, SKIP, "email 'not-an-email' does not look like name@example.com"),
        (4, ADD, ""),
        (5, ADD, ""),
        (6, SKIP, "note is longer than 2000 characters"),
    ]
