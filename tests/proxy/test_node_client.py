"""A real client that is not Python: ``node/walk_and_update.mjs`` (Node 18+, built-in ``fetch``, no packages).

Through the real app on loopback against the simulator, on SQLite and PostgreSQL: the script walks the Item
collection by the proxy's ``Link: <…>; rel="next"`` headers, sets one item's stock and reads it back, holding only
lightkeeper's API key. The README's TypeScript example makes the same calls. Without ``node`` these tests fail: a
skipped test in CI is a defect.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.proxy.conftest import Merchant
from tests.web.conftest import issued_tokens

SCRIPT = Path(__file__).parent / "node" / "walk_and_update.mjs"
ITEMS = 250  # a new simulator account has 5; the walk pages through 250
NODE_TIMEOUT_S = 120
MIN_NODE = 18


def node() -> str:
    """The ``node`` executable (18 or later), or a failure that says how to get one."""
    found = shutil.which("node")
    if found is None:
        pytest.fail(
            "`node` (Node.js 18 or later) is not on PATH: the proxy's non-Python client test cannot run. "
            "Install Node.js (apt-get install nodejs, or nodejs.org); this test must not be skipped."
        )
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False, timeout=30)
    major = re.match(r"v(\d+)\.", version.stdout.strip())
    if major is None or int(major.group(1)) < MIN_NODE:
        pytest.fail(f"{found} is {version.stdout.strip() or version.stderr.strip()!r}; the client needs Node 18+")
    return found


def run_node(merchant: Merchant, **env: str) -> subprocess.CompletedProcess[str]:
    """The script against ``merchant``'s app with its key; ``env`` adds or overrides ``LK_*`` settings."""
    settings = {
        "LK_URL": merchant.server.url,
        "LK_KEY": merchant.server.api_key,
        "LK_CONNECTION": str(merchant.connection_id),
        **env,
    }
    environment = {name: value for name, value in os.environ.items() if not name.startswith("LK_")} | settings
    return subprocess.run(
        [node(), str(SCRIPT)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=NODE_TIMEOUT_S,
    )


def simulator_item_ids(server: SimulatorServer, account_id: str) -> list[int]:
    """The account's unarchived item ids as the simulator holds them (its own list, not a walk over HTTP)."""
    state = server.state
    with state._lock:
        items = state._records.accounts[int(account_id)].items
        return [item_id for item_id, item in items.items() if not item.archived]


def assert_nothing_secret(merchant: Merchant, *outputs: str) -> None:
    """Neither lightkeeper's API key nor any token the simulator issued appears in what the script printed."""
    secrets = {"the API key": merchant.server.api_key} | {
        f"issued token {token[:8]}…": token for token in issued_tokens(merchant.server.simulator)
    }
    assert secrets, "the simulator issued no token: the check would prove nothing"
    leaked = [name for name, secret in secrets.items() for output in outputs if secret in output]
    assert not leaked, f"the Node client printed {leaked}"


def parsed(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, f"node exited {result.returncode}: {result.stderr.strip()}"
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line on stdout, got {len(lines)}: {result.stdout[:500]!r}"
    document: dict[str, Any] = json.loads(lines[0])
    return document


# 83: 250 = 3 * 83 + 1, so the last page holds one record, which Lightspeed sends as an object, not a list.
@pytest.mark.parametrize("limit", [100, 83])
def test_walk_every_page_and_update_stock(merchant: Merchant, sim: SimulatorControl, limit: int) -> None:
    assert sim.add_items(merchant.account_id, ITEMS - 5) == ITEMS
    expected = simulator_item_ids(merchant.server.simulator, merchant.account_id)
    assert len(expected) == ITEMS
    item_id = expected[len(expected) // 2]
    before = sim.item(merchant.account_id, item_id)["qoh_by_shop"]
    qoh = 1000 + int(before["1"])  # never the current value (demo stock is below 20)
    sim.clear_requests()

    result = run_node(merchant, LK_LIMIT=str(limit), LK_QOH=str(qoh), LK_ITEM=str(item_id))
    document = parsed(result)

    walked = [int(i) for i in document["items"]]
    repeated = sorted(i for i, n in Counter(walked).items() if n > 1)
    assert not repeated, f"items walked more than once: {repeated}"
    assert sorted(walked) == expected, f"missing {sorted(set(expected) - set(walked))[:20]}"
    pages = math.ceil(ITEMS / limit)
    assert document["pages"] == pages
    assert document["statuses"] == [200] * (pages + 2)  # the pages, the PUT and the read-back
    assert document["updated"] == {"itemID": str(item_id), "shopID": 1, "qoh": qoh, "readBack": qoh}

    after = sim.item(merchant.account_id, item_id)["qoh_by_shop"]
    assert after["1"] == qoh, f"the simulator holds qoh {after['1']} for shop 1"
    assert after["2"] == before["2"], "another shop's stock changed"

    seen = sim.requests()
    assert [r["method"] for r in seen] == ["GET"] * pages + ["PUT", "GET"], [(r["method"], r["path"]) for r in seen]
    prefix = f"/API/V3/Account/{merchant.account_id}/"
    assert all(r["path"].startswith(prefix) for r in seen), [r["path"] for r in seen]
    assert all(r["account_id"] == merchant.account_id for r in seen)
    stats = sim.stats()
    assert stats["rate_limited"] == 0, f"Lightspeed answered 429 {stats['rate_limited']} times"
    assert stats["burst_limited"] == 0
    assert_nothing_secret(merchant, result.stdout, result.stderr)


def test_default_page_size_and_item(merchant: Merchant, sim: SimulatorControl) -> None:
    """Without ``LK_LIMIT`` and ``LK_ITEM``: pages of 100, and the last item walked is the one updated."""
    sim.add_items(merchant.account_id, ITEMS - 5)
    document = parsed(run_node(merchant, LK_QOH="0"))
    assert document["pages"] == math.ceil(ITEMS / 100)
    assert [int(i) for i in document["items"]] == simulator_item_ids(merchant.server.simulator, merchant.account_id)
    last = document["items"][-1]
    assert document["updated"] == {"itemID": last, "shopID": 1, "qoh": 0, "readBack": 0}
    assert sim.item(merchant.account_id, last)["qoh_by_shop"]["1"] == 0
    assert sim.stats()["rate_limited"] == 0


@pytest.mark.parametrize(
    ("override", "status", "code"),
    [
        ({"LK_CONNECTION": "999999"}, 404, "connection_not_found"),
        ({"LK_KEY": "not-the-key-" + "x" * 24}, 401, "unauthorized"),
        ({"LK_ITEM": "987654"}, 404, None),  # Lightspeed's own 404, passed through: the walk went fine
    ],
)
def test_a_refusal_exits_non_zero_and_says_why(
    merchant: Merchant, sim: SimulatorControl, override: dict[str, str], status: int, code: str | None
) -> None:
    result = run_node(merchant, LK_QOH="3", **override)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "", "nothing on stdout when it failed"
    message = result.stderr.strip()
    assert message.startswith("walk_and_update: ") and f"answered {status}" in message, message
    if code is not None:
        assert code in message, message
    assert_nothing_secret(merchant, result.stdout, result.stderr)
    assert override.get("LK_KEY", merchant.server.api_key) not in result.stderr
    assert sim.stats()["rate_limited"] == 0


def test_a_missing_setting_exits_2(merchant: Merchant) -> None:
    result = run_node(merchant)  # no LK_QOH
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.strip() == "walk_and_update: LK_QOH is not set"
    assert result.stdout == ""
