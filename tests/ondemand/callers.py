"""What each spawned process of ``test_multiprocess`` runs; imports only lightkeeper, so a process starts fast."""

from __future__ import annotations

import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lightkeeper import Keeper, load_settings
from lightkeeper.config import REQUIRE_ALL

#: ("ok", access token, expires_at) or ("error", what went wrong, "")
Outcome = tuple[str, str, str]


def fresh_token_callers(env: dict[str, str], connection_id: int, threads: int, start: Any, results: Any) -> None:
    """Build a Keeper from ``env``, then ``threads`` callers of ``fresh_token`` released by ``start``."""
    try:
        with Keeper(load_settings(env=env, require=REQUIRE_ALL)) as keeper:
            keeper.store.connections.get(connection_id)  # open a database connection before the start

            def call(_n: int) -> Outcome:
                start.wait(timeout=60)
                try:
                    grant = keeper.fresh_token(connection_id)
                except Exception as exc:  # reported to the test, which fails with it
                    return "error", f"{type(exc).__name__}: {exc}", ""
                return "ok", grant.access_token, grant.expires_at.isoformat()

            with ThreadPoolExecutor(threads) as pool:
                outcomes = list(pool.map(call, range(threads)))
        results.put(outcomes)
    except BaseException:
        results.put([("error", traceback.format_exc(), "")])
        raise


__all__ = ["Outcome", "fresh_token_callers"]
