"""``lightkeeper.client.records``: the records of one R-Series collection page, whatever shape it came in."""

from __future__ import annotations

from typing import Any

import pytest

from lightkeeper.client import records

ATTRIBUTES = {"@attributes": {"count": "2", "offset": "0", "limit": "100", "next": "", "previous": ""}}


def test_a_list_of_records() -> None:
    body = {**ATTRIBUTES, "Item": [{"itemID": "1"}, {"itemID": "2"}]}
    assert records(body, "Item") == [{"itemID": "1"}, {"itemID": "2"}]


def test_a_single_record_comes_as_an_object() -> None:
    """Lightspeed's one-record quirk: a page of one record holds the object itself, not a list of one."""
    body = {**ATTRIBUTES, "Item": {"itemID": "1", "description": "one"}}
    assert records(body, "Item") == [{"itemID": "1", "description": "one"}]


@pytest.mark.parametrize(
    "body",
    [{}, dict(ATTRIBUTES), {"Item": None}, {"Item": "1"}, {"Item": 7}, {"Item": []}, {"Category": [{"id": "1"}]}],
)
def test_no_records(body: dict[str, Any]) -> None:
    assert records(body, "Item") == []


def test_entries_that_are_not_objects_are_dropped() -> None:
    body = {"Item": [{"itemID": "1"}, "2", None, 3, ["4"], {"itemID": "5"}]}
    assert records(body, "Item") == [{"itemID": "1"}, {"itemID": "5"}]


def test_the_key_names_the_records() -> None:
    body = {"Item": [{"itemID": "1"}], "Category": {"categoryID": "9"}}
    assert records(body, "Category") == [{"categoryID": "9"}]
    assert records(body, "item") == []  # keys are exact, as Lightspeed spells them


def test_the_records_are_the_body_s_own_objects() -> None:
    one = {"itemID": "1"}
    assert records({"Item": one}, "Item")[0] is one
