"""HTTP client for the simulator's ``/_sim/`` knobs, so tests and demos need not know the routes.

X-Series (``/x/…`` on the same server; see ``xseries_routes.py``): ``seed_x``, ``x_stores``, ``add_products``,
``x_product`` and ``x_stats``. Its counters live in ``stats()`` (the ``x_…`` keys, ``x_per_store``, and the
stores' entries in ``per_account``: see ``xseries_knobs.py``); ``x_stats`` is a view of them. Its knobs are
``SimulatorConfig``'s ``x_…`` fields, set with ``configure``; ``reset`` forgets X-Series state too. The knobs
that name an account (``account``, ``advance``, ``revoke_account``, ``expire_access_tokens``,
``authorize_mode``) take an X-Series store's account id or its domain prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx2


class SimulatorControl:
    """Wraps the knobs of a running simulator at ``base_url``. Errors raise ``httpx2.HTTPStatusError``."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, client: httpx2.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx2.Client(timeout=timeout)
        self._owns_client = client is None

    def __enter__(self) -> SimulatorControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._client.request(method, f"{self.base_url}/_sim{path}", json=body)
        response.raise_for_status()
        return response.json()

    def _object(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = self._call(method, path, body)
        if not isinstance(data, dict):
            raise TypeError(f"/_sim{path} answered {type(data).__name__}, expected an object")
        return data

    def stats(self) -> dict[str, Any]:
        """Counters: ``token_requests``, ``refreshes``, ``refreshes_in_grace``, ``reuse``, ``rate_limited`` (429s of
        both limiters), ``burst_limited``, ``api_foreign_account``, ``api_disconnects`` (a client gone while its
        API request waited), ``api_streams_cut`` (a client gone before a streamed body's end, either series), …
        and ``per_account``;
        the X-Series ``x_…`` counters and ``x_per_store`` (see ``x_stats``). Unprefixed totals are R-Series only."""
        return self._object("GET", "/stats")

    def reuse(self, account_id: int | str | None = None) -> int:
        """Refresh tokens presented again after their one exchange (all accounts of both series, or one:
        an account id, or an X-Series store's domain prefix)."""
        stats = self.stats()
        if account_id is None:
            return int(stats["reuse"]) + int(stats["x_reuse"])
        entry = stats["per_account"].get(str(account_id)) or stats["x_per_store"][str(account_id)]
        return int(entry["reuse"])

    def refresh_times(self) -> list[float]:
        """When each refresh_token grant request arrived (the simulator's monotonic seconds), sorted.

        Arrival, before any ``token_latency_ms``; requests answered by an injected fault that skips the
        grant (``status``, ``reset``, …) are not in it. Cleared by ``reset``.
        """
        return [float(t) for t in self._object("GET", "/refresh-times")["refresh_times"]]

    def reset(self) -> None:
        """Forget accounts, tokens, extra clients, faults, counters, clock offsets and the extra API answer
        headers (config stays)."""
        self._call("POST", "/reset")

    def config(self) -> dict[str, Any]:
        return self._object("GET", "/config")

    def configure(self, **fields: Any) -> dict[str, Any]:
        """Change any ``SimulatorConfig`` field(s); returns the whole new config."""
        return self._object("POST", "/config", fields)

    def authorize_mode(self, mode: str, account_id: int | str | None = None) -> None:
        """``"approve"`` (default) or ``"deny"`` (authorize redirects with error=access_denied).

        With ``account_id``, approvals are for that existing account (a merchant reconnecting).
        """
        body: dict[str, Any] = {"mode": mode}
        if account_id is not None:
            body["account_id"] = str(account_id)
        self._call("POST", "/authorize-mode", body)

    def inject_fault(
        self,
        endpoint: str,
        kind: str,
        count: int = 1,
        status: int | None = None,
        *,
        retry_after: int | None = None,
        seconds: float | None = None,
        body_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Make the next ``count`` requests to ``endpoint`` (token/api/revoke/x_token/x_api) fail as ``kind``.

        ``token`` and ``api`` faults hit the next request to that endpoint of either series; ``x_token`` and
        ``x_api`` ones only X-Series (which answers ``Retry-After`` as an HTTP date).

        Kinds (``lightkeeper.simulator.faults``): ``status`` (``status``, default 503), ``timeout``
        (held ``seconds``), ``reset``, ``garbage``, ``rate_limit``; on token/revoke only ``html_401``,
        ``invalid_grant_401``, ``invalid_client_json``; on token only ``no_expires_in`` (the grant really
        happens, the answer lacks ``expires_in``) and ``stall_after_issue`` (see ``stall_after_issue``); on
        api only ``slow_body`` (the real answer, its body in 4 chunks ``seconds`` apart) and ``large_body``
        (200 with a JSON body of exactly ``body_bytes`` bytes, sent as the fault's ``bytes`` field).
        """
        body: dict[str, Any] = {"endpoint": endpoint, "kind": kind, "count": count}
        if status is not None:
            body["status"] = status
        if retry_after is not None:
            body["retry_after"] = retry_after
        if seconds is not None:
            body["seconds"] = seconds
        if body_bytes is not None:
            body["bytes"] = body_bytes
        return self._object("POST", "/faults", body)

    def add_fault(self, endpoint: str, kind: str, **fields: Any) -> dict[str, Any]:
        """Queue a fault with any ``Fault`` fields as given (``count``, ``status``, ``seconds``, ``bytes``…)."""
        return self._object("POST", "/faults", {"endpoint": endpoint, "kind": kind, **fields})

    def stall_after_issue(self, seconds: float = 30.0, count: int = 1) -> dict[str, Any]:
        """The next ``count`` token requests are granted in full (a refresh rotates the pair), then their
        answers are held ``seconds``: a client that dies meanwhile lost a pair Lightspeed issued.

        ``stats()["refreshes"]`` moves when the pair is issued, before the hold: wait on it to know the
        answer is now stalled.
        """
        return self.inject_fault("token", "stall_after_issue", count, seconds=seconds)

    def faults(self) -> dict[str, Any]:
        return self._object("GET", "/faults")

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def register_client(self, client_id: str, client_secret: str, redirect_uri: str | None = None) -> dict[str, Any]:
        body = {"client_id": client_id, "client_secret": client_secret, "redirect_uri": redirect_uri}
        return self._object("POST", "/clients", body)

    def register_redirect_uri(self, redirect_uri: str, client_id: str | None = None) -> list[str]:
        """Accept ``redirect_uri`` for ``client_id`` (default: the configured client) until the next reset.

        Authorize and code exchange refuse URIs not registered; a fixture that starts a connect flow
        registers its callback URL here. Returns all the client's redirect URIs now.
        """
        body: dict[str, Any] = {"redirect_uri": redirect_uri}
        if client_id is not None:
            body["client_id"] = client_id
        uris: list[str] = self._object("POST", "/redirect-uris", body)["redirect_uris"]
        return uris

    def accounts(self) -> list[dict[str, Any]]:
        data = self._call("GET", "/accounts")
        if not isinstance(data, list):
            raise TypeError("/_sim/accounts did not answer a list")
        return [dict(entry) for entry in data]

    def account(self, account_id: int | str) -> dict[str, Any]:
        return self._object("GET", f"/accounts/{account_id}")

    def seed(self, count: int) -> list[dict[str, Any]]:
        """``count`` authorized accounts with their first token pairs (``account_id``, ``access_token``, …)."""
        result: list[dict[str, Any]] = self._call("POST", "/seed", {"count": count})
        return result

    def revoke_account(self, account_id: int | str) -> dict[str, Any]:
        """The merchant uninstalled the app: every token of the account is revoked."""
        return self._object("POST", f"/accounts/{account_id}/revoke")

    def advance(self, account_id: int | str, seconds: float) -> dict[str, Any]:
        """Move one account's clock forward (token, code and bucket times all follow it)."""
        return self._object("POST", f"/accounts/{account_id}/advance", {"seconds": seconds})

    def advance_all(self, seconds: float) -> dict[str, Any]:
        return self._object("POST", "/clock/advance", {"seconds": seconds})

    def expire_access_tokens(self, account_id: int | str) -> dict[str, Any]:
        return self._object("POST", f"/accounts/{account_id}/expire-access-tokens")

    def add_items(self, account_id: int | str, count: int) -> int:
        """Add ``count`` (1-100000) stocked items to the account; returns how many unarchived items it has."""
        return int(self._object("POST", f"/accounts/{account_id}/items", {"count": count})["items"])

    def requests(self, *, body_digests: bool = False) -> list[dict[str, Any]]:
        """What reached ``/API/V3``, oldest first (the last 2,000): ``method``, ``path`` (raw), ``query``,
        ``headers`` ([[name, value], …] as received, names lower-cased, tokens redacted), ``body_bytes``,
        ``account_id`` (the bearer token's account, or None); with ``body_digests``, also ``body_sha256``
        (the body's SHA-256, hex: the same bytes sent twice have the same one)."""
        path = "/requests?body_digests=1" if body_digests else "/requests"
        return [dict(entry) for entry in self._object("GET", path)["requests"]]

    def set_api_headers(self, headers: Mapping[str, str] | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Add ``headers`` to every API answer of either series, faults' included, until the next ``reset``
        (which the ``sim`` fixture does): ``ETag``, ``Last-Modified``, ``Set-Cookie``… as a real answer may
        carry. A mapping, or (name, value) pairs where a name repeats; replaces what was set before (empty:
        none). Framing headers (``Content-Length``, ``Transfer-Encoding``, ``Connection``…) are refused."""
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        answer = self._object("POST", "/api-headers", {"headers": [[name, value] for name, value in pairs]})
        return [(str(name), str(value)) for name, value in answer["headers"]]

    def api_headers(self) -> list[tuple[str, str]]:
        """The headers every API answer gets on top of its own (``set_api_headers``)."""
        return [(str(name), str(value)) for name, value in self._object("GET", "/api-headers")["headers"]]

    def clear_requests(self) -> None:
        """Empty the request log (``reset`` does too)."""
        self._call("DELETE", "/requests")

    def item(self, account_id: int | str, item_id: int | str) -> dict[str, Any]:
        """The item as stored, including ``qoh_by_shop`` ({"0": total, "1": …, "2": …})."""
        return self._object("GET", f"/accounts/{account_id}/items/{item_id}")

    # ----------------------------------------------------------- X-Series

    def seed_x(self, count: int) -> list[dict[str, Any]]:
        """``count`` (1-10000) X-Series stores, each connected by the configured client: per store
        ``account_id``, ``name``, and its first token answer (``access_token``, ``refresh_token``, ``expires``
        (unix time), ``expires_in`` (skewed: do not trust it), ``token_type``, ``domain_prefix``, ``scope``)."""
        result: list[dict[str, Any]] = self._call("POST", "/x/seed", {"count": count})
        return result

    def x_stores(self) -> list[dict[str, Any]]:
        """Every X-Series store: ``account_id``, ``domain_prefix``, ``name``, ``retailer_id``, ``outlet_ids``,
        ``products`` (how many), ``revoked``, ``active_refresh_tokens``, ``refreshes``, ``clock_offset_seconds``."""
        data = self._call("GET", "/x/stores")
        if not isinstance(data, list):
            raise TypeError("/_sim/x/stores did not answer a list")
        return [dict(entry) for entry in data]

    def add_products(self, store: int | str, count: int) -> int:
        """Add ``count`` (1-100000) products to a store (account id or domain prefix), each with a new, higher
        version; returns how many products it has now."""
        return int(self._object("POST", f"/x/stores/{store}/products", {"count": count})["products"])

    def x_product(self, store: int | str, product_id: str) -> dict[str, Any]:
        """A product as stored: ``id``, ``name``, ``version``, ``inventory`` ([{outlet_id, current_amount}])."""
        return self._object("GET", f"/x/stores/{store}/products/{product_id}")

    def x_stats(self, prefix: int | str | None = None) -> dict[str, Any]:
        """The X-Series counters: all the ``x_…`` totals (``x_refreshes``, ``x_reuse``, ``x_rate_limited``,
        ``x_token_rate_limited``, …), or with ``prefix`` (a domain prefix or account id) that store's
        (``refreshes``, ``invalid_grant``, ``api_requests``, ``rate_limited``, ``reuse``,
        ``x_window_violations``, ``x_token_rate_limited``, …)."""
        stats = self.stats()
        if prefix is None:
            return {key: value for key, value in stats.items() if key.startswith("x_") and key != "x_per_store"}
        entry = stats["x_per_store"].get(str(prefix)) or stats["per_account"][str(prefix)]
        return dict(entry)


__all__ = ["SimulatorControl"]
