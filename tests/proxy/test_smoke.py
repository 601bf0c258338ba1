from __future__ import annotations

from tests.proxy.conftest import Merchant


def test_get_account_and_items(merchant: Merchant) -> None:
    items = merchant.call("GET", "Item.json", params={"limit": "2"})
    assert items.status_code == 200, items.text
    assert "x-ls-api-bucket-level" in items.headers
    print(items.headers)
