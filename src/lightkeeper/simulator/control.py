"""HTTP client for the simulator's ``/_sim/`` knobs, so tests and demos need not know the routes."""

from __future__ import annotations

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
        both limiters), ``burst_limited``, ``api_foreign_account``, ``api_disconnects``, … and ``per_account``."""
        return self._object("GET", "/stats")

    def reuse(self, account_id: int | str | None = None) -> int:
        """Refresh tokens presented again after their one exchange (all accounts, or one)."""
        stats = self.stats()
        if account_id is None:
            return int(stats["reuse"])
        return int(stats["per_account"][str(account_id)]["reuse"])

    def refresh_times(self) -> list[float]:
        """When each refresh_token grant request arrived (the simulator's monotonic seconds), sorted.

        Arrival, before any ``token_latency_ms``; requests answered by an injected fault that skips the
        grant (``status``, ``reset``, …) are not in it. Cleared by ``reset``.
        """
        return [float(t) for t in self._object("GET", "/refresh-times")["refresh_times"]]

    def reset(self) -> None:
        """Forget accounts, tokens, extra clients, faults, counters and clock offsets (config stays)."""
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
        """Make the next ``count`` requests to ``endpoint`` (token/api/revoke) fail as ``kind``.

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

    def requests(self) -> list[dict[str, Any]]:
        """What reached ``/API/V3``, oldest first (the last 2,000): ``method``, ``path`` (raw), ``query``,
        ``headers`` ([[name, value], …] as received, names lower-cased, tokens redacted), ``body_bytes``,
        ``account_id`` (the bearer token's account, or None)."""
        return [dict(entry) for entry in self._object("GET", "/requests")["requests"]]

    def clear_requests(self) -> None:
        """Empty the request log (``reset`` does too)."""
        self._call("DELETE", "/requests")

    def item(self, account_id: int | str, item_id: int | str) -> dict[str, Any]:
        """The item as stored, including ``qoh_by_shop`` ({"0": total, "1": …, "2": …})."""
        return self._object("GET", f"/accounts/{account_id}/items/{item_id}")


__all__ = ["SimulatorControl"]
