"""The ``lightkeeper`` command as an operator (or an outside checker) uses it: subprocesses, env, exit codes, JSON.

Every command starts a fresh interpreter (seconds of imports), so independent commands run side by side with
``cli.many`` and state that is not under test is set up in-process with ``cli.seed``.
"""

from __future__ import annotations

import base64
import re
import signal
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.acceptance.conftest import (
    Lightkeeper,
    Web,
    describe,
    issued_tokens,
    parse_json,
    sqlite_bytes,
    token_leaks,
    wait_for,
)

COMMANDS = (
    "check-config",
    "db",
    "serve",
    "refresh",
    "status",
    "runs",
    "connect-link",
    "simulate",
    "demo",
    "gen-key",
    "rotate-key",
)
CONNECTION_KEYS = {
    "id",
    "user_id",
    "account_id",
    "account_name",
    "status",
    "token_expires_at",
    "last_token_refresh_at",
    "last_error",
}
RUN_KEYS = {
    "run_id",
    "job_name",
    "trigger",
    "status",
    "started_at",
    "finished_at",
    "total",
    "refreshed",
    "expired",
    "errors",
    "skipped",
}
JOB_NAME = "refresh-lightspeed-tokens-every-6h"
REFRESH_KEYS = ("run_id", "status", "total", "refreshed", "expired", "errors", "skipped")
#: The one timestamp format of the CLI and the API (CHANGELOG, issue 10).
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def when(text: str) -> datetime:
    """A timestamp of ``--json``: RFC 3339 in UTC with ``Z`` and microseconds, as the API writes it."""
    assert RFC3339.fullmatch(text), f"not the documented timestamp form: {text!r}"
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"timestamp without a time zone: {text}"
    return parsed


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, describe(result)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error as an operator sees it: no traceback, and one sentence as the last line on stderr.

    Log records and a progress bar may come before it on stderr; stdout stays free for ``--json``.
    """
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, describe(result)
    return lines[-1]


def refresh_counts(document: dict[str, Any]) -> dict[str, Any]:
    assert set(REFRESH_KEYS) <= set(document), document
    return {key: document[key] for key in REFRESH_KEYS if key != "run_id"}


def by_user(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["user_id"]: row for row in rows}


# --- configuration and help ---------------------------------------------------------------------------------


def test_check_config_names_every_missing_or_malformed_setting(cli: Lightkeeper) -> None:
    nothing = cli.start("check-config", bare=True)
    malformed = cli.start(
        "check-config",
        bare=True,
        env_extra={
            "LIGHTSPEED_CLIENT_ID": "someone",
            "LIGHTSPEED_CLIENT_SECRET": "something",
            "TOKEN_ENCRYPTION_KEY": "not-a-key-at-all",
            "REFRESH_DELAY_MS": "soon",
        },
    )
    valid = cli.start("check-config")

    result = cli.finish(nothing, check=2)
    line = error_line(result)
    assert len(result.stderr.strip().splitlines()) == 1, describe(result)
    message = line[line.index("Missing Lightspeed credentials") :]
    for name in ("LIGHTSPEED_CLIENT_ID", "LIGHTSPEED_CLIENT_SECRET", "TOKEN_ENCRYPTION_KEY"):
        assert name in message, describe(result)

    result = cli.finish(malformed, check=2)
    line = error_line(result)
    assert "TOKEN_ENCRYPTION_KEY" in line, describe(result)
    assert "REFRESH_DELAY_MS" in line, describe(result)
    assert "not-a-key-at-all" not in result.stdout + result.stderr, "a rejected value (maybe a secret) was echoed"

    result = cli.finish(valid, check=0)
    no_traceback(result)


def test_gen_key_prints_a_fresh_32_byte_key(cli: Lightkeeper) -> None:
    first, second = cli.many(["gen-key"], ["gen-key"], bare=True)
    keys = []
    for result in (first, second):
        assert result.returncode == 0, describe(result)
        key = result.stdout.strip()
        assert len(key) == 44, describe(result)
        assert len(base64.b64decode(key, validate=True)) == 32
        keys.append(key)
    assert keys[0] != keys[1]


def test_help_lists_every_command(cli: Lightkeeper) -> None:
    result = cli("--help", bare=True, check=0)
    for name in COMMANDS:
        assert re.search(rf"(?m)^\W*{re.escape(name)}\s", result.stdout), (
            f"{name} missing from --help:\n{result.stdout}"
        )


def test_usage_errors_exit_2_without_a_traceback(cli: Lightkeeper) -> None:
    no_args, no_user, neither = cli.many([], ["connect-link"], ["refresh"])
    for result in (no_user, neither):
        assert result.returncode == 2, describe(result)
        no_traceback(result)
    assert "--user" in no_user.stderr, describe(no_user)
    assert "--all" in neither.stderr, describe(neither)
    assert "--connection" in neither.stderr, describe(neither)
    assert no_args.returncode in (0, 2), describe(no_args)
    no_traceback(no_args)
    assert "Usage" in no_args.stdout + no_args.stderr, describe(no_args)


# --- connecting ---------------------------------------------------------------------------------------------


def test_connect_link_is_a_one_time_url_on_the_public_origin(cli: Lightkeeper, web: Web) -> None:
    plain, as_json = cli.many(
        ["connect-link", "--user", "merchant-a"], ["connect-link", "--user", "merchant-b", "--json"]
    )

    assert plain.returncode == 0, describe(plain)
    link = plain.stdout.strip().splitlines()[-1].strip()
    assert link.startswith(f"{cli.origin}/"), describe(plain)

    document = parse_json(as_json)
    assert set(document) >= {"url", "expires_at"}, document
    assert document["url"].startswith(f"{cli.origin}/")
    expires_in = when(document["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=55) < expires_in <= timedelta(hours=1, minutes=1), document

    page = web.connect(link)
    assert "Demo Store" in page.text  # the simulator's account name, looked up after the exchange
    again = web.open(link)
    assert again.status_code == 400, f"a used link answered HTTP {again.status_code}: {again.text[:300]}"
    assert "Connected" not in again.text
    web.connect(document["url"])

    forged = web.open(f"{cli.origin}/oauth/callback?code=forged&state=forged")
    assert forged.status_code == 400, forged.text[:300]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_end_to_end_connect_refresh_status_runs(cli: Lightkeeper, web: Web, sim: SimulatorControl) -> None:
    users = ["alice", "bob", "carol"]
    links = cli.many(*(["connect-link", "--user", user, "--json"] for user in users))
    for result in links:
        web.connect(parse_json(result)["url"])
    before = datetime.now(UTC)

    run = cli.json("refresh", "--all")
    assert refresh_counts(run) == {
        "status": "completed",
        "total": 3,
        "refreshed": 3,
        "expired": 0,
        "errors": 0,
        "skipped": 0,
    }
    assert sim.stats()["refreshes"] == 3

    status, runs = (parse_json(r) for r in cli.many(["status", "--json"], ["runs", "--json"]))
    assert isinstance(status, list)
    assert len(status) == 3
    for row in status:
        assert set(row) >= CONNECTION_KEYS, row
        assert row["status"] == "connected", row
        assert row["last_error"] is None, row
        assert row["account_name"].startswith("Demo Store"), row
        assert when(row["last_token_refresh_at"]) >= before - timedelta(seconds=5), row
        assert when(row["token_expires_at"]) > datetime.now(UTC) + timedelta(minutes=50), row
    assert sorted(row["user_id"] for row in status) == users
    assert len({row["account_id"] for row in status}) == 3

    assert isinstance(runs, list)
    assert len(runs) == 1
    assert set(runs[0]) >= RUN_KEYS, runs[0]
    assert runs[0]["run_id"] == run["run_id"]
    assert runs[0]["job_name"] == JOB_NAME
    assert runs[0]["trigger"] == "manual"
    assert runs[0]["status"] == "completed"
    assert when(runs[0]["started_at"]) <= when(runs[0]["finished_at"])
    assert {key: runs[0][key] for key in ("total", "refreshed", "expired", "errors", "skipped")} == {
        "total": 3,
        "refreshed": 3,
        "expired": 0,
        "errors": 0,
        "skipped": 0,
    }


# --- refresh outcomes ---------------------------------------------------------------------------------------


def test_revoked_account_is_marked_expired_and_the_others_stay_connected(
    cli: Lightkeeper, sim: SimulatorControl
) -> None:
    seeded = by_user(cli.seed("alice", "bob", "carol"))
    sim.revoke_account(seeded["bob"]["account_id"])

    run = cli.json("refresh", "--all")
    assert refresh_counts(run) == {
        "status": "completed",
        "total": 3,
        "refreshed": 2,
        "expired": 1,
        "errors": 0,
        "skipped": 0,
    }

    status = by_user(cli.json("status"))
    assert status["bob"]["status"] == "expired"
    assert "invalid_grant" in (status["bob"]["last_error"] or ""), status["bob"]
    for user in ("alice", "carol"):
        assert status[user]["status"] == "connected", status[user]
        assert status[user]["last_error"] is None


def test_provider_5xx_marks_error_keeps_tokens_and_a_later_run_recovers(
    cli: Lightkeeper, sim: SimulatorControl
) -> None:
    cli.seed("alice", "bob", "carol")
    sim.inject_fault("token", "status", status=503, count=3)

    failed = cli.json("refresh", "--all")
    assert refresh_counts(failed) == {
        "status": "completed",
        "total": 3,
        "refreshed": 0,
        "expired": 0,
        "errors": 3,
        "skipped": 0,
    }
    for row in cli.json("status"):
        assert row["status"] == "error", row
        assert "503" in (row["last_error"] or ""), row

    recovered = cli.json("refresh", "--all")  # the same stored refresh tokens: nothing was lost
    assert refresh_counts(recovered) == {
        "status": "completed",
        "total": 3,
        "refreshed": 3,
        "expired": 0,
        "errors": 0,
        "skipped": 0,
    }
    status, runs = (parse_json(r) for r in cli.many(["status", "--json"], ["runs", "--json"]))
    for row in status:
        assert row["status"] == "connected", row
        assert row["last_error"] is None, row
    assert [r["run_id"] for r in runs] == [recovered["run_id"], failed["run_id"]], "runs are not newest first"
    assert when(runs[0]["started_at"]) >= when(runs[1]["started_at"])


def test_wrong_client_secret_fails_the_run_and_touches_no_connection(cli: Lightkeeper) -> None:
    cli.seed("alice", "bob")
    watched = ("status", "last_error", "token_expires_at", "last_token_refresh_at")
    before = {row["id"]: {key: row[key] for key in watched} for row in cli.json("status")}

    result = cli("refresh", "--all", "--json", env_extra={"LIGHTSPEED_CLIENT_SECRET": "wrong"}, check=2)
    line = error_line(result)
    assert "invalid_client" in line or "LIGHTSPEED_CLIENT_SECRET" in line, describe(result)

    status, runs = (parse_json(r) for r in cli.many(["status", "--json"], ["runs", "--json"]))
    after = {row["id"]: {key: row[key] for key in watched} for row in status}
    assert after == before
    assert len(runs) == 1
    assert runs[0]["status"] == "failed", runs[0]
    assert runs[0]["refreshed"] == 0


def test_refresh_one_connection_by_id(cli: Lightkeeper) -> None:
    seeded = by_user(cli.seed("alice", "bob"))
    one, unknown = cli.many(
        ["refresh", "--connection", str(seeded["bob"]["id"]), "--json"], ["refresh", "--connection", "987654"]
    )

    assert one.returncode == 0, describe(one)
    assert refresh_counts(parse_json(one)) == {
        "status": "completed",
        "total": 1,
        "refreshed": 1,
        "expired": 0,
        "errors": 0,
        "skipped": 0,
    }
    assert unknown.returncode == 1, describe(unknown)
    assert "987654" in error_line(unknown)

    status = by_user(cli.json("status"))
    assert status["bob"]["last_token_refresh_at"] != seeded["bob"]["last_token_refresh_at"]
    assert status["alice"]["last_token_refresh_at"] == seeded["alice"]["last_token_refresh_at"]


def test_refresh_due_refreshes_only_what_is_due(cli: Lightkeeper) -> None:
    """`refresh --all --due` with the default REFRESH_DUE_AFTER=0 refreshes every connection; with an hour, the
    connections refreshed a moment ago are skipped."""
    cli.seed("alice", "bob")
    everything = cli.json("refresh", "--all", "--due")
    assert (everything["refreshed"], everything["skipped"]) == (2, 0)

    hour = {"REFRESH_DUE_AFTER": "3600"}
    nothing_due = cli.json("refresh", "--all", "--due", env_extra=hour)
    assert (nothing_due["total"], nothing_due["refreshed"], nothing_due["skipped"]) == (2, 0, 2)
    wrong = cli("refresh", "--connection", "1", "--due")
    assert wrong.returncode == 2, describe(wrong)
    assert "--due goes with --all" in describe(wrong)


# --- secrets at rest ----------------------------------------------------------------------------------------


def test_no_plaintext_token_in_the_database_file_or_any_output(
    cli: Lightkeeper, simulator_server: SimulatorServer
) -> None:
    cli.seed("alice", "bob")
    cli.json("refresh", "--all")
    assert cli.db_path is not None

    with cli.keeper() as keeper:  # the tokens lightkeeper holds now, decrypted with the key (positive control)
        held = [(keeper.vault.access_token(r), keeper.vault.refresh_token(r)) for r in keeper.connections()]
    tokens = issued_tokens(simulator_server)
    assert len(held) == 2
    assert {token for pair in held for token in pair} <= tokens
    assert len(tokens) == 8  # two code exchanges and two refreshes, each an access and a refresh token

    assert not token_leaks(tokens, sqlite_bytes(cli.db_path))
    assert not token_leaks(tokens, "\n".join(cli.transcript).encode())
    with sqlite3.connect(cli.db_path) as db:
        stored = db.execute("SELECT access_token, refresh_token FROM lightspeed_connections").fetchall()
    assert len(stored) == 2
    assert all(value.startswith("lk1:") for row in stored for value in row), "tokens are not stored as ciphertext"


# --- the database ---------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_serve_refuses_a_database_behind_the_migrations_until_db_upgrade(
    cli: Lightkeeper, pg_empty_database_url: str, request: pytest.FixtureRequest
) -> None:
    cli.env["DATABASE_URL"] = pg_empty_database_url
    started = time.monotonic()
    serve, status = cli.many(["serve", "--host", "127.0.0.1", "--port", str(cli.port)], ["status", "--json"])
    assert time.monotonic() - started < 20
    for result in (serve, status):
        assert result.returncode == 2, describe(result)
        assert "lightkeeper db upgrade" in error_line(result)

    cli("db", "upgrade", check=0)
    web: Web = request.getfixturevalue("web")
    assert httpx2.get(f"{web.origin}/healthz", timeout=5).json()["status"] == "ok"


def test_a_new_sqlite_file_is_created_and_migrated_on_first_use(cli: Lightkeeper) -> None:
    assert cli.db_path is not None
    assert not cli.db_path.exists()
    assert cli.json("status") == []
    assert cli.db_path.exists()


# --- a run whose process dies ---------------------------------------------------------------------------------


def test_a_killed_run_is_shown_interrupted_and_nothing_is_left_broken(cli: Lightkeeper, sim: SimulatorControl) -> None:
    heartbeat_s = 0.1
    stale_after_s = 3 * heartbeat_s + 5  # the documented rule
    cli.env |= {
        "RUN_HEARTBEAT_S": str(heartbeat_s),
        "REFRESH_LEASE_S": "10",
        "HTTP_TIMEOUT_S": "4",
        "REFRESH_MAX_RETRY_AFTER_S": "2",
        "REFRESH_CONCURRENCY": "1",
    }
    cli.seed("alice", "bob", "carol", "dave")
    sim.configure(token_latency_ms=3000)  # 12 s for the whole run: it is killed long before

    worker = cli.start("refresh", "--all", "--json")
    with cli.keeper() as keeper:  # cheap in-process polling, so the one `runs` below sees the run started

        def started() -> bool:
            assert worker.poll() is None, f"the refresh ended before it could be killed: {worker.communicate()}"
            return bool(keeper.store.runs.list(limit=1))

        wait_for(started, timeout=30, what="the refresh run to start")
    running = [r for r in cli.json("runs") if r["status"] == "running"]
    assert len(running) == 1, running
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_at = time.monotonic()
    cli.finish(worker)
    sim.configure(token_latency_ms=0)

    time.sleep(max(0.0, killed_at + stale_after_s + 0.3 - time.monotonic()))  # the one wait for time itself
    runs_result, status_result, rerun_result = cli.many(
        ["runs", "--json"], ["status", "--json"], ["refresh", "--all", "--json"]
    )
    runs = {r["run_id"]: r for r in parse_json(runs_result)}
    rerun = parse_json(rerun_result)
    assert runs[running[0]["run_id"]]["status"] == "interrupted", runs
    assert [r for r in runs.values() if r["status"] == "running" and r["run_id"] != rerun["run_id"]] == []
    for row in parse_json(status_result):
        assert row["status"] == "connected", row  # none left expired or error by the kill

    assert rerun["status"] == "completed", rerun
    assert rerun["expired"] == 0
    assert rerun["errors"] == 0
    # The one connection the dead worker had leased may still be leased (REFRESH_LEASE_S) and is then not
    # in this run; every other one is refreshed, including one whose refresh the kill cut off mid-request.
    assert rerun["refreshed"] >= 3, rerun
