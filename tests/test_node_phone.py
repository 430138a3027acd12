"""The node formats phones for its region and finds them however typed."""

from __future__ import annotations

import pytest

from twisted_agenda.model import Contact, InvalidField


@pytest.fixture
def br(make_agenda):
    return make_agenda("br", default_region="BR")


def test_numbers_typed_locally_get_the_international_format(br):
    br.node.add("Maria", "(11) 91234-5678")
    br.node.add("Ramal", "(11) 3333-4444 ext. 12")
    br.node.add("Portaria", "1234")
    br.settle()
    assert br.node.get("maria").phone == "+55 11 91234-5678"
    assert br.node.get("ramal").phone == "(11) 3333-4444 ext. 12"
    assert br.node.get("portaria").phone == "1234", "short numbers stay as typed"


def test_text_that_is_no_number_is_refused(br):
    with pytest.raises(InvalidField, match="not a phone number"):
        br.node.add("Maria", "call me")


@pytest.mark.parametrize("query", ["11 91234-5678", "011 91234 5678", "+5511912345678"])
def test_find_by_number_however_typed(br, query):
    br.node.add("Maria", "(11) 91234-5678")
    br.node.add("Outra", "+1 650 253 0000")
    br.settle()
    assert br.node.find(query) == [Contact("Maria", "+55 11 91234-5678")]


def test_update_formats_the_new_number(br):
    br.node.add("Maria", "(11) 91234-5678")
    br.settle()
    br.node.update("Maria", phone="21 3333-4444")
    br.settle()
    assert br.node.get("Maria").phone == "+55 21 3333-4444"


def test_status_tells_clients_the_region(br):
    assert "default_region=BR" in br.request("STATUS")
