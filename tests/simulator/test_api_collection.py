"""The Item collection (cursor pages with complete ``next``/``previous`` URLs), item create/archive, HEAD,
and the catch-all that charges and 404s every other ``/API/V3`` path (403 for another account's)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from tests.simulator.api_support import Seeded, Sim, module_sim, seed
from tests.simulator.api_support import sim as plain_sim

__all__ = ["module_sim", "plain_sim"]

RELATIONS = '["ItemShops"]'


@pytest.fixture
def sim(plain_sim: Sim) -> Iterator[Sim]:
    """These tests are about pages, not pacing: a burst limit they never reach."""
    plain_sim.control.configure(burst_limit=10_000)
    yield plain_sim


def get(sim: Sim, account: Seeded, url: str, **params: str) -> httpx2.Response:
    response = sim.http.get(url, params=params or None, headers=account.bearer)
    assert response.status_code == 200, response.text
    return response


def items_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    found = body.get("Item", [])
    return [found] if isinstance(found, dict) else list(found)


def ids_of(body: dict[str, Any]) -> list[int]:
    return [int(item["itemID"]) for item in items_of(body)]


def walk(sim: Sim, account: Seeded, first_url: str, link: str) -> tuple[list[list[int]], dict[str, Any]]:
    """Follow ``link`` ("next" or "previous") from ``first_url`` to the end: each page's IDs, the last body."""
    pages: list[list[int]] = []
    url = first_url
    while True:
        body = get(sim, account, url).json()
        pages.append(ids_of(body))
        if not body["@attributes"][link]:
            return pages, body
        url = body["@attributes"][link]
        assert len(pages) < 10, "the walk does not end"


# ------------------------------------------------------------------ paging


def test_a_250_item_collection_is_walked_forward_and_back_exactly_once(sim: Sim) -> None:
    account = seed(sim.control)
    assert sim.control.add_items(account.account_id, 245) == 250
    first = f"{sim.server.url}{account.path('Item.json')}?load_relations={RELATIONS}&limit=100"

    forward, last = walk(sim, account, first, "next")

    assert [len(page) for page in forward] == [100, 100, 50]
    assert [i for page in forward for i in page] == list(range(1, 251))
    assert "ItemShops" in items_of(last)[0]  # the kept load_relations still applies
    back, _ = walk(sim, account, last["@attributes"]["previous"], "previous")
    assert back == [list(range(101, 201)), list(range(1, 101))]


def test_next_is_a_complete_url_on_the_requests_own_base_keeping_its_parameters(sim: Sim) -> None:
    account = seed(sim.control)
    sim.control.add_items(account.account_id, 5)
    body = get(sim, account, account.path("Item.json"), limit="3", load_relations=RELATIONS).json()

    link = urlsplit(body["@attributes"]["next"])

    assert f"{link.scheme}://{link.netloc}" == sim.server.url
    assert link.path == account.path("Item.json")
    query = parse_qs(link.query)
    assert query["limit"] == ["3"] and query["load_relations"] == [RELATIONS]
    assert set(query) == {"limit", "load_relations", "after"}
    assert body["@attributes"]["previous"] == ""
    # Behind a proxy, the links name the host the request was sent to, not the simulator's.
    proxied = sim.http.get(
        account.path("Item.json"), params={"limit": "3"}, headers={**account.bearer, "Host": "proxy.test:8443"}
    )
    assert proxied.json()["@attributes"]["next"].startswith(f"http://proxy.test:8443{account.path('Item.json')}?")


def test_the_default_page_is_100_and_a_bigger_limit_is_refused(sim: Sim) -> None:
    account = seed(sim.control)
    sim.control.add_items(account.account_id, 145)
    assert len(ids_of(get(sim, account, account.path("Item.json")).json())) == 100
    for bad in ("101", "0", "-1", "ten"):
        refused = sim.http.get(account.path("Item.json"), params={"limit": bad}, headers=account.bearer)
        assert refused.status_code == 400
        assert refused.json()["httpCode"] == "400"
        assert "X-LS-API-Bucket-Level" in refused.headers  # charged like any call


def test_a_page_of_one_record_is_an_object_and_an_empty_page_has_no_item_key(sim: Sim) -> None:
    account = seed(sim.control)  # items 1-5
    one = get(sim, account, account.path("Item.json"), limit="1").json()
    assert isinstance(one["Item"], dict)
    assert one["Item"]["itemID"] == "1"
    for item_id in range(1, 6):
        assert sim.http.delete(account.path(f"Item/{item_id}.json"), headers=account.bearer).status_code == 200
    empty = get(sim, account, account.path("Item.json")).json()
    assert empty == {"@attributes": {"next": "", "previous": ""}}


def test_forged_edited_and_foreign_cursors_are_refused(sim: Sim) -> None:
    account, other = seed(sim.control), seed(sim.control)
    next_url = get(sim, account, account.path("Item.json"), limit="2").json()["@attributes"]["next"]
    cursor = parse_qs(urlsplit(next_url).query)["after"][0]
    forged = base64.urlsafe_b64encode(json.dumps({"a": int(account.account_id), "d": "after", "i": 3}).encode())
    edited = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    cases = [
        (account, {"after": "nonsense"}),
        (account, {"after": forged.decode().rstrip("=")}),
        (account, {"after": edited}),
        (account, {"before": cursor}),  # an "after" cursor sent as "before"
        (other, {"after": cursor}),  # another account's cursor
        (account, {"after": cursor, "before": cursor}),
    ]
    for who, params in cases:
        refused = sim.http.get(who.path("Item.json"), params=params, headers=who.bearer)
        assert refused.status_code == 400, params
        assert refused.json()["httpMessage"] == "Bad Request"
    assert sim.http.get(next_url, headers=account.bearer).status_code == 200
    sim.control.reset()  # a new world: old cursors mean nothing
    account = seed(sim.control)
    assert sim.http.get(next_url, headers=account.bearer).status_code == 400


# --------------------------------------------------------------- HEAD, POST, DELETE


def test_head_answers_the_same_status_and_headers_without_a_body(sim: Sim) -> None:
    account = seed(sim.control)
    for path in (account.path("Item.json"), account.path("Item/1.json"), account.path("Item/999.json")):
        got = sim.http.get(path, headers=account.bearer)
        head = sim.http.head(path, headers=account.bearer)
        assert head.status_code == got.status_code
        assert head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"]
        assert head.headers["X-LS-API-Request-Cost"] == "1"
    assert sim.http.head(account.path("Item.json")).status_code == 401


def test_post_creates_an_item_and_delete_archives_it(sim: Sim) -> None:
    account = seed(sim.control)
    created = sim.http.post(account.path("Item.json"), json={"description": "Blue mug"}, headers=account.bearer)
    assert created.status_code == 200
    item = created.json()["Item"]
    assert (item["itemID"], item["description"], item["archived"]) == ("6", "Blue mug", "false")
    assert created.headers["X-LS-API-Request-Cost"] == "1"
    assert ids_of(get(sim, account, account.path("Item.json")).json()) == [1, 2, 3, 4, 5, 6]

    archived = sim.http.delete(account.path("Item/6.json"), headers=account.bearer)
    assert archived.status_code == 200
    assert archived.json()["Item"]["archived"] == "true"
    assert ids_of(get(sim, account, account.path("Item.json")).json()) == [1, 2, 3, 4, 5]
    assert get(sim, account, account.path("Item/6.json")).json()["Item"]["archived"] == "true"

    for bad in ({}, {"description": ""}, {"description": 7}, ["x"]):
        refused = sim.http.post(account.path("Item.json"), json=bad, headers=account.bearer)
        assert refused.status_code == 400, bad
    assert sim.http.delete(account.path("Item/999.json"), headers=account.bearer).status_code == 404


def test_add_items_knob_checks_its_count(sim: Sim) -> None:
    account = seed(sim.control)
    for bad in (0, 100_001):
        with pytest.raises(httpx2.HTTPStatusError):
            sim.control.add_items(account.account_id, bad)
    with pytest.raises(httpx2.HTTPStatusError):
        sim.control.add_items(999_999, 1)


# -------------------------------------------------------------- catch-all


def test_any_other_path_and_method_is_charged_then_404(sim: Sim) -> None:
    account = seed(sim.control)
    paths = [account.path("Customer.json"), "/API/V3/Nothing", "/API/V3/Shop.json", account.path("x/y/z")]
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    for path in paths:
        for method in methods:
            response = sim.http.request(method, path, headers=account.bearer, content=b"{}")
            assert response.status_code == 404, (method, path)
            assert response.headers["X-LS-API-Request-Cost"] == "1"
            assert "X-LS-API-Burst-Level" in response.headers
            if method != "HEAD":
                assert response.json()["httpCode"] == "404"
    put_with_shop = {"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 1}}}
    costly = sim.http.put(account.path("Sale.json"), json=put_with_shop, headers=account.bearer)
    assert costly.headers["X-LS-API-Request-Cost"] == "1.5"  # the write cost, as request_cost says
    assert sim.http.patch(account.path("Item/1.json"), headers=account.bearer).status_code == 404
    assert sim.http.get(account.path("Customer.json")).status_code == 401
    count = len(paths) * len(methods) + 2
    assert sim.control.stats()["per_account"][account.account_id]["api_requests"] == count


def test_another_accounts_path_is_403_and_counted(sim: Sim) -> None:
    account, other = seed(sim.control), seed(sim.control)
    foreign = [
        ("GET", other.path("Customer.json")),
        ("DELETE", other.path("Sale/1.json")),
        ("GET", other.path("Item/1.json")),
        ("PUT", other.path("Item/1.json")),
        ("DELETE", other.path("Item/1.json")),
        ("GET", other.path("Item.json")),
        ("POST", other.path("Item.json")),
        ("GET", f"/API/V3/Account/{other.account_id}.json"),
    ]
    for method, path in foreign:
        response = sim.http.request(method, path, headers=account.bearer, json={"description": "x"})
        assert response.status_code == 403, (method, path)
        assert response.json()["httpMessage"] == "Forbidden"
        assert "X-LS-API-Bucket-Level" in response.headers
    assert sim.control.stats()["api_foreign_account"] == len(foreign)
    assert sim.control.item(other.account_id, 1)["archived"] == "false"  # nothing happened to it
