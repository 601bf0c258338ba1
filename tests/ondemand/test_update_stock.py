"""update-inventory-stock: ``lightkeeper update-stock`` as an operator runs it, and ``POST …/stock``.

Bad input is refused whole before anything is sent (the simulator's request counters prove nothing reached
Lightspeed); a failed row says why and the others go on; a persistent 401 ends the batch after one refresh.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from lightkeeper import Keeper
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import ConnectionRecord
from lightkeeper.web import BackgroundServer, create_app
from tests.acceptance.conftest import Lightkeeper, describe, parse_json
from tests.helpers import connect, make_settings

from .conftest import set_row

ITEMS = (1, 2, 3, 4, 5)
SHOPS = (1, 2)
ROW_KEYS = {"line", "item_id", "status", "error"}
API_KEY = "ondemand-stock-api-key-0b5d-7e21c94f"  # at least 32 characters


def qoh(sim: SimulatorControl, account_id: str, item_id: int, shop_id: int) -> int:
    return int(sim.item(account_id, item_id)["qoh_by_shop"][str(shop_id)])


def item_shop_id(sim: SimulatorControl, account_id: str, item_id: int, shop_id: int) -> int:
    rows = sim.item(account_id, item_id)["ItemShops"]["ItemShop"]
    return next(int(row["itemShopID"]) for row in rows if int(row["shopID"]) == shop_id)


def write_csv(path: Path, rows: list[tuple[Any, ...]], header: str = "item_id,shop_id,qoh") -> str:
    path.write_text("\n".join([header, *(",".join(map(str, row)) for row in rows)]) + "\n", encoding="utf-8")
    return str(path)


def last_stderr_line(result: Any) -> str:
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, describe(result)
    return str(lines[-1])


@pytest.fixture
def connection(cli: Lightkeeper) -> dict[str, Any]:
    (public,) = cli.seed("user-1")
    return public


def update_stock(connection: dict[str, Any], *args: str) -> tuple[str, ...]:
    return ("update-stock", "--connection", str(connection["id"]), *args)


# -- the CLI -----------------------------------------------------------------------------------------------


def test_single_updates_by_shop_and_by_item_shop(
    cli: Lightkeeper, connection: dict[str, Any], sim: SimulatorControl
) -> None:
    account = connection["account_id"]
    item_shop = item_shop_id(sim, account, 4, 1)
    by_shop, by_item_shop = cli.many(
        update_stock(connection, "--item", "3", "--shop", "2", "--qoh", "17"),
        update_stock(connection, "--item", "4", "--item-shop", str(item_shop), "--qoh", "0", "--json"),
    )

    for result in (by_shop, by_item_shop):
        assert result.returncode == 0, describe(result)
    assert "1 of 1 stock updates done, 0 failed" in by_shop.stdout
    assert parse_json(by_item_shop) == {
        "total": 1,
        "done": 1,
        "failed": 0,
        "rows": [{"line": 1, "item_id": 4, "status": "done", "error": None}],
    }
    assert (qoh(sim, account, 3, 2), qoh(sim, account, 4, 1)) == (17, 0)
    stats = sim.stats()
    assert stats["refreshes"] == 0 and stats["rate_limited"] == 0


def test_a_csv_of_300_rows_is_paced_with_no_429(
    cli: Lightkeeper, connection: dict[str, Any], sim: SimulatorControl, tmp_path: Path
) -> None:
    sim.configure(bucket_size=20, drip_rate=200, burst_limit=1000)  # the bucket, not the burst window, binds
    rows = [(ITEMS[n % 5], SHOPS[n // 5 % 2], n) for n in range(300)]
    path = write_csv(tmp_path / "stock.csv", rows)

    started = time.monotonic()
    document = cli.json(*update_stock(connection, "--from-csv", path))
    elapsed = time.monotonic() - started

    assert set(document) == {"total", "done", "failed", "rows"}
    assert (document["total"], document["done"], document["failed"]) == (300, 300, 0)
    assert all(set(row) == ROW_KEYS for row in document["rows"])
    assert [row["line"] for row in document["rows"]] == list(range(2, 302))  # line 1 is the header
    assert [row["item_id"] for row in document["rows"]] == [item for item, _, _ in rows]
    assert {row["status"] for row in document["rows"]} == {"done"}
    assert {row["error"] for row in document["rows"]} == {None}
    stats = sim.stats()
    assert stats["rate_limited"] == 0
    assert stats["per_account"][connection["account_id"]]["api_requests"] == 300 + 1  # + the connect's lookup
    assert elapsed >= (300 * 1.5 - 20) / 200  # the bucket's floor, 2.15 s
    last = {(item, shop): number for item, shop, number in rows}
    assert {key: qoh(sim, connection["account_id"], *key) for key in last} == last


def test_bad_input_is_refused_whole_and_nothing_is_sent(
    cli: Lightkeeper, connection: dict[str, Any], sim: SimulatorControl, tmp_path: Path
) -> None:
    good = [(ITEMS[n % 5], 1, n) for n in range(12)]
    rows: list[tuple[Any, ...]] = list(good)
    rows[3] = (2, 1, -4)  # line 5
    rows[7] = (3, 1, "2.5")  # line 9
    rows[10] = (1, 2)  # line 12: the qoh column is missing
    bad = write_csv(tmp_path / "bad.csv", rows)
    no_column = write_csv(tmp_path / "header.csv", [(1, 3)], header="item_id,qoh")
    too_many = write_csv(tmp_path / "wide.csv", [(1, 1, 3), (2, 1, 4, 9)])
    not_utf8 = tmp_path / "latin1.csv"
    not_utf8.write_bytes("item_id,shop_id,qoh\n1,1,3 # caf\xe9\n".encode("latin-1"))
    before = sim.stats()

    results = cli.many(
        update_stock(connection, "--from-csv", bad),
        update_stock(connection, "--from-csv", no_column),
        update_stock(connection, "--from-csv", too_many, "--json"),
        update_stock(connection, "--from-csv", str(not_utf8)),
        update_stock(connection, "--from-csv", str(tmp_path / "missing.csv")),
        update_stock(connection, "--item", "1", "--shop", "1", "--qoh", "-1"),
        update_stock(connection, "--item", "1", "--shop", "1", "--item-shop", "2", "--qoh", "3"),
    )

    for result in results:
        assert result.returncode != 0 and result.stdout == "", describe(result)
    message = last_stderr_line(results[0])
    for fragment in ("line 5", "qoh must not be negative", "line 9", "whole number", "line 12"):
        assert fragment in message, message
    assert "line 1" in last_stderr_line(results[1]) and "missing shop_id" in last_stderr_line(results[1])
    assert "line 3" in last_stderr_line(results[2]) and "more fields" in last_stderr_line(results[2])
    assert "not UTF-8" in last_stderr_line(results[3])
    assert "cannot read" in last_stderr_line(results[4])
    assert "qoh must not be negative" in last_stderr_line(results[5])
    assert "exactly one of --shop and --item-shop" in last_stderr_line(results[6])
    after = sim.stats()
    assert (after["api_requests"], after["token_requests"]) == (before["api_requests"], before["token_requests"])


def test_an_unknown_or_expired_connection_is_a_clear_error(
    cli: Lightkeeper, connection: dict[str, Any], sim: SimulatorControl, tmp_path: Path
) -> None:
    sim.revoke_account(connection["account_id"])  # the merchant uninstalled the app
    with cli.keeper() as keeper:
        set_row(keeper, connection["id"], token_expires_at=keeper.clock() - timedelta(minutes=1))
    path = write_csv(tmp_path / "stock.csv", [(1, 1, 3)])
    unknown, expired = cli.many(
        ("update-stock", "--connection", "999", "--item", "1", "--shop", "1", "--qoh", "3"),
        update_stock(connection, "--from-csv", path, "--json"),
    )

    assert unknown.returncode == 1 and last_stderr_line(unknown).endswith("there is no connection 999")
    assert expired.returncode == 1 and expired.stdout == "", describe(expired)
    assert last_stderr_line(expired).endswith("invalid_grant): the merchant must reconnect")
    stats = sim.stats()
    assert stats["invalid_grant"] == 1
    assert stats["per_account"][connection["account_id"]]["api_requests"] == 1  # only the connect's lookup
    with cli.keeper() as keeper:
        saved = keeper.store.connections.get(connection["id"])
    assert saved is not None and saved.status.value == "expired"


def test_a_failed_row_says_why_and_the_others_go_on(
    cli: Lightkeeper, connection: dict[str, Any], sim: SimulatorControl, tmp_path: Path
) -> None:
    rows = [(1, 1, 11), (99, 1, 5), (2, 2, 12), (3, 9, 1), (4, 1, 14)]
    path = write_csv(tmp_path / "stock.csv", rows)
    as_json = cli(*update_stock(connection, "--from-csv", path, "--json"))

    assert as_json.returncode == 1, describe(as_json)
    document = parse_json(as_json)
    assert (document["total"], document["done"], document["failed"]) == (5, 3, 2)
    by_line = {row["line"]: row for row in document["rows"]}
    assert [by_line[n]["status"] for n in range(2, 7)] == ["done", "failed", "done", "failed", "done"]
    assert "HTTP 404" in by_line[3]["error"] and "Could not find Item" in by_line[3]["error"]
    assert "HTTP 400" in by_line[5]["error"] and "ItemShop not found" in by_line[5]["error"]
    account = connection["account_id"]
    assert (qoh(sim, account, 1, 1), qoh(sim, account, 2, 2), qoh(sim, account, 4, 1)) == (11, 12, 14)
    assert sim.stats()["refreshes"] == 0


def test_a_persistent_401_stops_the_batch_after_one_refresh(
    cli: Lightkeeper, connection: dict[str, Any], sim: SimulatorControl, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "stock.csv", [(n, 1, 40 + n) for n in ITEMS])
    before = {n: qoh(sim, connection["account_id"], n, 1) for n in ITEMS}
    sim.inject_fault("api", "status", status=401, count=1000)  # Lightspeed refuses even a fresh token
    api_before = sim.stats()["api_requests"]

    result = cli(*update_stock(connection, "--from-csv", path, "--json"))

    assert result.returncode == 1, describe(result)
    document = parse_json(result)
    assert (document["total"], document["done"], document["failed"]) == (5, 0, 5)
    first, *rest = document["rows"]
    assert first["status"] == "failed" and "401" in first["error"] and "again after a refresh" in first["error"]
    assert [row["status"] for row in rest] == ["not_sent"] * 4
    assert all("persistent 401" in row["error"] for row in rest)
    stats = sim.stats()
    assert stats["refreshes"] == 1  # one refresh, never a loop
    assert stats["api_requests"] - api_before == 2  # the first row and its one retry, nothing after
    assert {n: qoh(sim, connection["account_id"], n, 1) for n in ITEMS} == before

    text = cli(*update_stock(connection, "--item", "1", "--shop", "1", "--qoh", "3"))  # single, plain text
    assert text.returncode == 1, describe(text)
    assert "0 of 1 stock updates done, 1 failed" in text.stdout
    assert "line 1 (item 1): failed: 401: Lightspeed refused the access token" in text.stdout
    assert sim.stats()["refreshes"] == 2  # again exactly one more


# -- the HTTP API ------------------------------------------------------------------------------------------


@dataclass
class StockApi:
    keeper: Keeper
    record: ConnectionRecord
    http: httpx2.Client

    def post(self, connection_id: int, updates: Any) -> httpx2.Response:
        return self.http.post(f"/api/connections/{connection_id}/stock", json={"updates": updates})


@pytest.fixture
def stock_api(sqlite_url: str, simulator_server: SimulatorServer, sim: SimulatorControl) -> Iterator[StockApi]:
    """The web app in this process (the route is a thin shell over what the CLI tests cover on the store)."""
    with (
        Keeper(make_settings(sqlite_url, simulator_server.url, LIGHTKEEPER_API_KEY=API_KEY)) as keeper,
        BackgroundServer(create_app(keeper)) as server,
        httpx2.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http,
    ):
        yield StockApi(keeper, connect(keeper, "user-1"), http)


def test_api_answers_per_row(stock_api: StockApi, sim: SimulatorControl) -> None:
    account = stock_api.record.account_id
    updates = [
        {"item_id": 1, "shop_id": 2, "qoh": 21},
        {"item_id": 99, "shop_id": 1, "qoh": 1},
        {"item_id": 2, "item_shop_id": item_shop_id(sim, account, 2, 1), "qoh": 22},
    ]
    response = stock_api.post(stock_api.record.id, updates)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["done"], body["failed"], body["stopped"]) == (3, 2, 1, None)
    assert [(row["line"], row["item_id"], row["status"]) for row in body["rows"]] == [
        (0, 1, "done"),
        (1, 99, "failed"),
        (2, 2, "done"),
    ]
    assert "HTTP 404" in body["rows"][1]["error"] and body["rows"][0]["error"] is None
    assert (qoh(sim, account, 1, 2), qoh(sim, account, 2, 1)) == (21, 22)
    assert json.dumps(body).find("eyJ") == -1  # no token in the answer


def test_api_refuses_bad_input_whole_with_nothing_sent(stock_api: StockApi, sim: SimulatorControl) -> None:
    before = sim.stats()["api_requests"]
    for bad in (
        {"item_id": 1, "shop_id": 1, "qoh": -1},
        {"item_id": 1, "shop_id": 1, "qoh": 2.5},
        {"item_id": 1, "shop_id": 1, "qoh": "seven"},
        {"item_id": 1, "shop_id": 1, "item_shop_id": 7, "qoh": 1},
        {"item_id": 1, "qoh": 1},
    ):
        response = stock_api.post(stock_api.record.id, [{"item_id": 2, "shop_id": 1, "qoh": 5}, bad])
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["code"] == "validation_error", bad
    assert sim.stats()["api_requests"] == before


def test_api_unknown_and_expired_connections(stock_api: StockApi, sim: SimulatorControl) -> None:
    updates = [{"item_id": 1, "shop_id": 1, "qoh": 3}]
    missing = stock_api.post(999, updates)
    assert missing.status_code == 404 and missing.json()["code"] == "connection_not_found"

    set_row(stock_api.keeper, stock_api.record.id, status="expired")
    expired = stock_api.post(stock_api.record.id, updates)
    assert expired.status_code == 409 and expired.json()["code"] == "connection_expired"
    assert "reconnect" in expired.json()["message"]
    assert sim.stats()["per_account"][stock_api.record.account_id]["api_requests"] == 1  # the connect's lookup


def test_api_persistent_401_stops_after_one_refresh(stock_api: StockApi, sim: SimulatorControl) -> None:
    sim.inject_fault("api", "status", status=401, count=100)
    response = stock_api.post(stock_api.record.id, [{"item_id": n, "shop_id": 1, "qoh": n} for n in ITEMS])
    assert response.status_code == 200, response.text
    body = response.json()
    assert [row["status"] for row in body["rows"]] == ["failed"] + ["not_sent"] * 4
    assert body["stopped"] and "401" in body["stopped"]
    assert sim.stats()["refreshes"] == 1
