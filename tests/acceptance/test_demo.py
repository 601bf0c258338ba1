"""``lightkeeper demo`` on a fresh machine: no configuration at all, the whole main job, ciphertext at rest."""

from __future__ import annotations

import re
import sqlite3
import time

from tests.acceptance.conftest import Lightkeeper, describe, sqlite_bytes, token_leaks

DEMO_TIMEOUT_S = 60.0


def test_demo_runs_the_main_job_with_no_configuration(cli: Lightkeeper) -> None:
    started = time.monotonic()
    result = cli("demo", bare=True, timeout=DEMO_TIMEOUT_S)
    assert result.returncode == 0, describe(result)
    assert time.monotonic() - started < DEMO_TIMEOUT_S
    assert "Traceback" not in result.stdout + result.stderr, describe(result)

    db_file = cli.cwd / ".lightkeeper-demo" / "demo.db"
    assert db_file.exists(), describe(result)
    assert str(db_file) in result.stdout, describe(result)
    assert set(re.findall(r"Demo Store \d+", result.stdout)) == {"Demo Store 1", "Demo Store 2", "Demo Store 3"}
    assert "completed" in result.stdout, describe(result)

    with sqlite3.connect(db_file) as db:
        rows = db.execute("SELECT status, access_token, refresh_token FROM lightspeed_connections").fetchall()
    assert len(rows) == 3
    assert {status for status, _access, _refresh in rows} == {"connected"}
    for _status, access, refresh in rows:
        assert access.startswith("lk1:"), "the access token is not stored as ciphertext"
        assert refresh.startswith("lk1:"), "the refresh token is not stored as ciphertext"
    assert not token_leaks(set(), sqlite_bytes(db_file)), "a token-shaped string is in the demo's database"
