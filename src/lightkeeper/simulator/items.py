"""A merchant's demo stock: the item records, their R-Series JSON shape, and reading a stock PUT body.

Pure functions over ``Item`` values; the API (``api.py``) and the ``/_sim/`` item view both use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from lightkeeper.simulator.replies import JsonDict, int_value

ITEM_IDS = (1, 2, 3, 4, 5)
SHOP_IDS = (1, 2)


@dataclass
class ItemShop:
    item_shop_id: int
    shop_id: int
    qoh: int


@dataclass
class Item:
    item_id: int
    description: str
    sum_item_shop_id: int  # id of the computed shopID 0 row
    shops: dict[int, ItemShop]  # shop_id -> row, real shops only
    updated_at: float
    # DELETE archives (Lightspeed never deletes): still readable by ID, left out of the collection.
    archived: bool = False


def new_item(seq: int, item_id: int, description: str, now: float, *, stocked: bool = True) -> Item:
    """Item ``item_id`` of account number ``seq``: itemShopIDs unique per account; qoh varies by
    account/item/shop when ``stocked``, else 0 (an item just created through the API)."""
    base = seq * 1000 + item_id * 10
    shops = {
        shop: ItemShop(base + shop, shop, (seq * 7 + item_id * 5 + shop * 3) % 20 if stocked else 0)
        for shop in SHOP_IDS
    }
    return Item(item_id, description, base, shops, now)


def seed_items(seq: int, now: float) -> dict[int, Item]:
    """Deterministic demo stock for account number ``seq``."""
    return {item_id: new_item(seq, item_id, f"Demo Item {item_id}", now) for item_id in ITEM_IDS}


def _item_shop_entries(body: object) -> list[object] | None:
    """The ItemShop entries of a PUT body (object or list), or None when the shape is wrong."""
    if not isinstance(body, dict):
        return None
    shops = body.get("ItemShops")
    if not isinstance(shops, dict):
        return None
    entries = shops.get("ItemShop")
    if isinstance(entries, dict):
        return [entries]
    if isinstance(entries, list) and entries:
        return list(entries)
    return None


def request_cost(method: str, body: object = None) -> float:
    """Bucket cost: 1 per request, plus 0.5 per nested relation entity on writes."""
    if method.upper() not in {"PUT", "POST"}:
        return 1.0
    entries = _item_shop_entries(body)
    return 1.0 + 0.5 * (len(entries) if entries else 0)


def parse_relations(raw: str | None) -> set[str]:
    """The ``load_relations`` query value: a JSON list, one JSON string, or a comma-separated list."""
    if not raw:
        return set()
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {part.strip() for part in raw.split(",")}
    if isinstance(parsed, list):
        return {str(x) for x in parsed}
    return {str(parsed)}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def qoh_sum(item: Item) -> int:
    """The quantity of the computed shopID 0 row: the sum over the real shops."""
    return sum(row.qoh for row in item.shops.values())


def _item_shop_json(item: Item, item_shop_id: int, shop_id: int, qoh: int) -> JsonDict:
    return {
        "itemShopID": str(item_shop_id),
        "qoh": str(qoh),
        "backorder": "0",
        "reorderPoint": "0",
        "reorderLevel": "0",
        "itemID": str(item.item_id),
        "shopID": str(shop_id),
        "timeStamp": _iso(item.updated_at),
    }


def item_json(item: Item, *, with_shops: bool) -> JsonDict:
    """The item as the R-Series API sends it (numbers as strings); ItemShops only when asked for."""
    result: JsonDict = {
        "itemID": str(item.item_id),
        "systemSku": str(210000000000 + item.item_id),
        "description": item.description,
        "archived": "true" if item.archived else "false",
        "timeStamp": _iso(item.updated_at),
    }
    if with_shops:
        rows = [_item_shop_json(item, item.sum_item_shop_id, 0, qoh_sum(item))]
        rows += [_item_shop_json(item, r.item_shop_id, r.shop_id, r.qoh) for r in item.shops.values()]
        result["ItemShops"] = {"ItemShop": rows}
    return result


def _stock_update(item: Item, entry: object) -> tuple[ItemShop, int] | str:
    if not isinstance(entry, dict):
        return "Each ItemShop must be an object."
    qoh = int_value(entry.get("qoh"))
    if qoh is None:
        return "ItemShop.qoh must be an integer."
    if "itemShopID" in entry:
        wanted = int_value(entry["itemShopID"])
        row = next((r for r in item.shops.values() if r.item_shop_id == wanted), None)
    elif "shopID" in entry:
        row = item.shops.get(int_value(entry["shopID"]) or -1)
    else:
        return "ItemShop needs an itemShopID or a shopID."
    if row is None:
        return "ItemShop not found for this item (shopID 0 is the read-only total)."
    return row, qoh


def stock_updates(item: Item, body: object) -> list[tuple[ItemShop, int]] | str:
    """The rows a PUT body sets and their new qoh, or what is wrong with it.

    Every entry is validated before any is applied, so a bad PUT changes nothing.
    """
    entries = _item_shop_entries(body)
    if entries is None:
        return 'Body must be {"ItemShops":{"ItemShop": {...} or [...]}}.'
    updates: list[tuple[ItemShop, int]] = []
    for entry in entries:
        update = _stock_update(item, entry)
        if isinstance(update, str):
            return update
        updates.append(update)
    return updates


__all__ = [
    "Item",
    "ItemShop",
    "item_json",
    "new_item",
    "parse_relations",
    "qoh_sum",
    "request_cost",
    "seed_items",
    "stock_updates",
]
