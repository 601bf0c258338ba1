"""The test-side controls behind ``/_sim/``: counters, accounts, clocks, stored items and the config.

Nothing here is part of the provider's behaviour: these are the levers and gauges a test uses to set up a
situation (a revoked merchant, a clock 31 days on, 10,000 authorized accounts) and to check what a client
did (refreshes, reuse, rate limiting). Clients and redirect URIs are registered through ``clients.py``,
consent is set on the OAuth server, and faults are queued in ``faults.py``. The X-Series knobs and counters
are in ``xseries_knobs.py``; the ones here that act on an account (``revoke_account``, ``advance``,
``expire_access_tokens``) reach an X-Series store's tokens too, named by account id or domain prefix.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from lightkeeper.simulator.config import coerce_config
from lightkeeper.simulator.items import item_json, qoh_sum
from lightkeeper.simulator.oauth import OAuthServer
from lightkeeper.simulator.records import Account, Records
from lightkeeper.simulator.replies import JsonDict, SimulatorError, int_value
from lightkeeper.simulator.xseries_knobs import (
    active_x_refresh_tokens,
    expire_x_access_tokens,
    revoke_x_tokens,
    x_account_counters,
    x_stats,
)

# The provider-wide counters ``/_sim/stats`` reports (absent ones as 0).
_STAT_KEYS = (
    "token_requests",
    "code_exchanges",
    "refreshes",
    "refreshes_in_grace",
    "invalid_grant",
    "invalid_client",
    "revokes",
    "api_requests",
    "rate_limited",
    "burst_limited",
    "api_foreign_account",
    "api_disconnects",
    "api_streams_cut",
    "revoke_requests",
    "faults_served",
    "reuse",
)
_MAX_SEED = 100_000
_MAX_ADD_ITEMS = 100_000
_MAX_EXTRA_HEADERS = 50
# RFC 9110 field names (tokens) and values (visible characters, spaces and tabs; never CR, LF or NUL).
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
# Headers that frame the answer: the server sets them, and a second one would break the connection itself.
_FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "trailer", "te"}
)


def _check_seconds(seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise SimulatorError(400, "seconds must be a non-negative number (the clock only moves forward)")


def _header_pairs(headers: object) -> list[tuple[str, str]]:
    """``headers`` (an object or a list of pairs) as checked pairs, or ``SimulatorError`` 400 saying why not."""
    if isinstance(headers, Mapping):
        pairs: list[object] = [[name, value] for name, value in headers.items()]
    elif isinstance(headers, list):
        pairs = list(headers)
    else:
        raise SimulatorError(400, "headers must be an object or a list of [name, value] pairs")
    if len(pairs) > _MAX_EXTRA_HEADERS:
        raise SimulatorError(400, f"at most {_MAX_EXTRA_HEADERS} headers")
    return [_header_pair(pair) for pair in pairs]


def _header_pair(pair: object) -> tuple[str, str]:
    if not isinstance(pair, list | tuple) or len(pair) != 2 or not all(isinstance(part, str) for part in pair):
        raise SimulatorError(400, "each header must be a [name, value] pair of strings")
    name, value = str(pair[0]), str(pair[1])
    if not _HEADER_NAME.match(name):
        raise SimulatorError(400, f"{name!r} is not a header name")
    if name.lower() in _FRAMING_HEADERS:
        raise SimulatorError(400, f"{name} frames the answer: the server sets it")
    if not _HEADER_VALUE.match(value):
        raise SimulatorError(400, f"the value of {name} holds a control character")
    return name, value


class Knobs:
    """The ``/_sim/`` operations over shared ``Records``; the caller holds the state lock."""

    def __init__(self, records: Records, oauth: OAuthServer) -> None:
        self._records = records
        # Seeding issues token pairs exactly as a code exchange would.
        self._oauth = oauth

    # ------------------------------------------------------------- gauges

    def stats(self) -> JsonDict:
        result: JsonDict = {key: self._records.stats[key] for key in _STAT_KEYS}
        accounts = self._records.accounts.values()
        result["per_account"] = {str(a.account_id): x_account_counters(a) for a in accounts}
        result.update(x_stats(self._records))
        return result

    def refresh_times(self) -> list[float]:
        """Arrival times (monotonic seconds) of every refresh_token grant request, in arrival order."""
        return sorted(self._records.refresh_times)

    def get_config(self) -> JsonDict:
        return asdict(self._records.config)

    def update_config(self, changes: Mapping[str, Any]) -> JsonDict:
        """Apply ``changes`` all or nothing: every value is checked before any is set."""
        coerced = {name: coerce_config(name, value) for name, value in changes.items()}
        for name, value in coerced.items():
            setattr(self._records.config, name, value)
        return asdict(self._records.config)

    def api_headers(self) -> list[list[str]]:
        """The headers added to every API answer, as ``[[name, value], …]``."""
        return [[name, value] for name, value in self._records.api_extra_headers]

    def set_api_headers(self, headers: object) -> list[list[str]]:
        """Add these headers to every API answer of either series from now until the next reset (an empty
        list: none). ``headers`` is ``{name: value}`` or ``[[name, value], …]`` (a name may repeat, as
        ``Set-Cookie`` does); all or nothing."""
        self._records.api_extra_headers = _header_pairs(headers)
        return self.api_headers()

    # ----------------------------------------------------------- accounts

    def _account_json(self, account: Account) -> JsonDict:
        if account.xstore is not None:
            active = active_x_refresh_tokens(self._records, account)
        else:
            tokens = self._records.refresh_tokens.values()
            active = sum(1 for t in tokens if t.account_id == account.account_id and self._records.refresh_alive(t))
        result: JsonDict = {
            "account_id": str(account.account_id),
            "name": account.name,
            "revoked": account.revoked,
            "active_refresh_tokens": active,
            "refreshes": account.counters.refreshes,
            "clock_offset_seconds": account.clock_offset,
        }
        if account.xstore is not None:
            result["domain_prefix"] = account.xstore.domain_prefix
        return result

    def accounts(self) -> list[JsonDict]:
        return [self._account_json(a) for a in self._records.accounts.values()]

    def account(self, account_id: int | str) -> JsonDict:
        return self._account_json(self._records.account(account_id))

    def seed(self, count: int, scope: str) -> list[JsonDict]:
        """``count`` new accounts, each already authorized by the configured client (for benchmarks).

        Returns each account's first token pair, as a code exchange would have.
        """
        if not 1 <= count <= _MAX_SEED:
            raise SimulatorError(400, "count must be from 1 to 100000")
        return [self._seed_one(scope) for _ in range(count)]

    def _seed_one(self, scope: str) -> JsonDict:
        account = self._records.new_account()
        client_id = self._records.config.client_id
        reply = self._oauth.issue_pair(account, client_id, scope, secrets.token_hex(8), parent=None)
        assert isinstance(reply.body, dict)
        return {"account_id": str(account.account_id), "name": account.name, **reply.body}

    def revoke_account(self, account_id: int | str) -> JsonDict:
        """The merchant uninstalled the app: every token of the account dies."""
        account = self._records.account(account_id)
        account.revoked = True
        for token in self._records.refresh_tokens.values():
            if token.account_id == account.account_id:
                self._records.revoke_pair(token.token)
        revoke_x_tokens(self._records, account)
        return self._account_json(account)

    def add_items(self, account_id: int | str, count: int) -> JsonDict:
        """``count`` more stocked items (``Demo Item {id}``); answers how many unarchived items it has now."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_ADD_ITEMS:
            raise SimulatorError(400, f"count must be from 1 to {_MAX_ADD_ITEMS}")
        account = self._records.account(account_id)
        if account.xstore is not None:
            raise SimulatorError(400, f"account {account_id} is an X-Series store: add products instead")
        for _ in range(count):
            self._records.add_item(account, None, stocked=True)
        return {"items": sum(1 for item in account.items.values() if not item.archived)}

    def item(self, account_id: int | str, item_id: int | str) -> JsonDict:
        """The item as stored, plus ``qoh_by_shop`` (ints) for easy assertions."""
        account = self._records.account(account_id)
        item = account.items.get(int_value(item_id) or -1)
        if item is None:
            raise SimulatorError(404, f"unknown item {item_id}")
        result = item_json(item, with_shops=True)
        result["qoh_by_shop"] = {"0": qoh_sum(item), **{str(s): r.qoh for s, r in item.shops.items()}}
        return result

    # ------------------------------------------------------------- clocks

    def advance_account(self, account_id: int | str, seconds: float) -> JsonDict:
        _check_seconds(seconds)
        account = self._records.account(account_id)
        account.clock_offset += seconds
        return self._account_json(account)

    def advance_all(self, seconds: float) -> JsonDict:
        _check_seconds(seconds)
        self._records.global_offset += seconds
        return {"global_offset_seconds": self._records.global_offset}

    def expire_access_tokens(self, account_id: int | str) -> JsonDict:
        account = self._records.account(account_id)
        now = self._records.account_now(account)
        expired = 0
        for token in self._records.access_tokens.values():
            if token.account_id == account.account_id and not token.revoked and token.expires_at > now:
                token.expires_at = now
                expired += 1
        return {"expired": expired + expire_x_access_tokens(self._records, account)}


__all__ = ["Knobs"]
