"""The views the API answers with and ``--json`` prints: the keys users script against, one time format.

The API and the CLI are checked end to end in test_api.py and tests/acceptance; these pin the views
themselves, on records made by hand (no database, no server).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from lightkeeper.stock import BatchResult, RowResult
from lightkeeper.store import ConnectionRecord, RunRecord, RunStatus, Status
from lightkeeper.views import REFRESH_FIELDS, ConnectionView, RunView, StockAnswerView, StockView, rfc3339

NOW = datetime(2026, 11, 30, 18, 0, 0, 123456, tzinfo=UTC)
#: ``runs --json`` and ``GET /api/runs``, in order.
RUN_KEYS = (
    "run_id",
    "job_name",
    "trigger",
    "status",
    "connection_id",
    "started_at",
    "finished_at",
    "total",
    "refreshed",
    "expired",
    "errors",
    "skipped",
    "message",
    "due_before",
)
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
CONNECTION = ConnectionRecord(
    id=7,
    user_id="user-1",
    account_id="12345",
    account_name="Demo Store",
    status=Status.CONNECTED,
    access_token="ciphertext-a",
    refresh_token="ciphertext-r",
    token_expires_at=NOW + timedelta(hours=1),
    last_token_refresh_at=NOW,
    last_error=None,
    token_version=3,
    consecutive_failures=0,
    next_attempt_at=None,
    acquired_by=None,
    acquired_until=None,
    lease_token=None,
    last_run_id=None,
    claim_run_id=None,
    created_at=NOW,
    updated_at=NOW,
)
RUN = RunRecord(
    id=3,
    job_name="refresh-lightspeed-tokens-every-6h",
    trigger="api",
    status=RunStatus.RUNNING,
    connection_id=None,
    scheduled_for=None,
    created_at=NOW - timedelta(seconds=5),
    started_at=NOW,
    finished_at=None,
    heartbeat_at=NOW,
    acquired_by="host:1:abc",
    total=2,
    refreshed=1,
    expired=0,
    errors=0,
    skipped=0,
    message=None,
)


def test_times_are_rfc3339_utc_with_microseconds() -> None:
    assert rfc3339(NOW) == "2026-11-30T18:00:00.123456Z"
    assert RFC3339.fullmatch(rfc3339(datetime.now(UTC)))
    assert rfc3339(NOW.replace(microsecond=0)) == "2026-11-30T18:00:00.000000Z"  # fixed width: sorts as time
    assert rfc3339(NOW.astimezone(timezone(timedelta(hours=2)))) == "2026-11-30T18:00:00.123456Z"
    assert rfc3339(NOW.replace(tzinfo=None)) == "2026-11-30T18:00:00.123456Z"  # naive is UTC, never local


def test_a_connection_shows_the_status_json_keys_and_never_a_token() -> None:
    document = ConnectionView.model_validate(CONNECTION).document()
    assert document == {
        "id": 7,
        "user_id": "user-1",
        "provider": "r-series",
        "account_id": "12345",
        "account_name": "Demo Store",
        "status": "connected",
        "token_expires_at": "2026-11-30T19:00:00.123456Z",
        "last_token_refresh_at": "2026-11-30T18:00:00.123456Z",
        "last_error": None,
        "consecutive_failures": 0,
        "next_attempt_at": None,
    }
    assert "ciphertext" not in repr(document) and "token_version" not in document


def test_a_run_shows_the_runs_json_keys() -> None:
    document = RunView.model_validate(RUN).document()
    assert tuple(document) == RUN_KEYS
    assert (document["run_id"], document["status"], document["finished_at"]) == (3, "running", None)
    assert document["started_at"] == "2026-11-30T18:00:00.123456Z"


def test_a_queued_run_shows_when_it_was_requested() -> None:
    queued = replace(RUN, status=RunStatus.QUEUED, started_at=None)
    assert RunView.model_validate(queued).document()["started_at"] == "2026-11-30T17:59:55.123456Z"


def test_refresh_json_is_the_outcome_of_the_run_in_the_order_it_always_had() -> None:
    document = RunView.model_validate(RUN).document(include=REFRESH_FIELDS)
    assert list(document) == ["run_id", "status", "total", "refreshed", "expired", "errors", "skipped", "message"]


def test_a_stock_batch_counts_its_rows_and_only_the_api_says_why_it_stopped() -> None:
    result = BatchResult(
        rows=[RowResult(2, 10, "done"), RowResult(3, 11, "failed", "HTTP 404"), RowResult(4, 12, "not_sent")],
        stopped="Lightspeed refused the token",
    )
    cli = StockView.model_validate(result).document()
    assert cli == {
        "total": 3,
        "done": 1,
        "failed": 2,
        "rows": [
            {"line": 2, "item_id": 10, "status": "done", "error": None},
            {"line": 3, "item_id": 11, "status": "failed", "error": "HTTP 404"},
            {"line": 4, "item_id": 12, "status": "not_sent", "error": None},
        ],
    }
    assert StockAnswerView.model_validate(result).document() == cli | {"stopped": "Lightspeed refused the token"}
