"""The careless operator and the hostile value, through the real ``lightkeeper`` command.

Weak settings are refused (exit 2, one sentence); dev mode stays on loopback; values from outside are
printed as text, logged without control characters; the SQLite file is readable by its owner only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from tests.acceptance.conftest import API_KEY, Lightkeeper, Web, describe, parse_json, wait_for
from tests.acceptance.test_cli import error_line, no_traceback

MARKUP_USER = "[/] [link=https://evil.example]click[/link]"
MARKUP_NAME = "[bold red]Evil[/] \x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"
FORGED = "2026-01-01 00:00:00,000 ERROR lightkeeper.forged: FORGED"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files are world-readable unless made private on purpose."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


# -- weak configuration --------------------------------------------------------------------------------


def test_a_short_api_key_is_refused_by_check_config_and_serve(cli: Lightkeeper) -> None:
    short = "k" * 31
    results = cli.many(
        ["check-config"],
        ["serve", "--host", "127.0.0.1", "--port", str(cli.port)],
        env_extra={"LIGHTKEEPER_API_KEY": short},
    )
    for result in results:
        assert result.returncode == 2, describe(result)
        line = error_line(result)
        assert "LIGHTKEEPER_API_KEY (must be at least 32 characters" in line, describe(result)
        assert short not in result.stdout + result.stderr
    assert cli.db_path is not None and not cli.db_path.exists()  # serve refused before opening anything


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("LIGHTSPEED_OAUTH_URL", "http://cloud.lightspeedapp.com"),
        ("LIGHTSPEED_API_URL", "http://10.1.2.3:8080"),
        ("LIGHTSPEED_OAUTH_URL", "http://127.example.com"),
    ],
)
def test_a_plain_http_lightspeed_url_is_refused_unless_loopback(cli: Lightkeeper, name: str, url: str) -> None:
    result = cli("check-config", env_extra={name: url}, check=2)
    assert f"{name} (must be an https:// URL" in error_line(result), describe(result)


def test_plain_http_to_a_loopback_lightspeed_is_allowed(cli: Lightkeeper) -> None:
    for url in ("http://localhost:9100", "http://127.0.0.2:9100", "http://[::1]:9100"):
        cli("check-config", env_extra={"LIGHTSPEED_OAUTH_URL": url, "LIGHTSPEED_API_URL": url}, check=0)


# -- dev mode ------------------------------------------------------------------------------------------


def test_serve_refuses_dev_mode_on_a_public_interface(cli: Lightkeeper) -> None:
    env = {"LIGHTKEEPER_DEV": "1", "LIGHTKEEPER_API_KEY": None}
    result = cli("serve", "--host", "0.0.0.0", "--port", str(cli.port), env_extra=env, timeout=30)
    assert result.returncode == 2, describe(result)
    line = error_line(result)
    assert line.startswith("error: LIGHTKEEPER_DEV=1") and line.count(". ") == 0, line
    assert cli.db_path is not None and not cli.db_path.exists()


def test_serve_in_dev_mode_on_loopback_warns_and_answers_only_local_keyless_requests(
    cli: Lightkeeper, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cli.env["LIGHTKEEPER_DEV"] = "1"
    del cli.env["LIGHTKEEPER_API_KEY"]
    web: Web = request.getfixturevalue("web")

    assert web.browser.get(f"{web.origin}/api/connections").status_code == 200
    proxied = web.browser.get(f"{web.origin}/api/connections", headers={"X-Forwarded-For": "203.0.113.7"})
    assert proxied.status_code == 401
    assert "LIGHTKEEPER_DEV=1" in (tmp_path / "serve.err").read_text()


# -- values from outside -------------------------------------------------------------------------------


def test_markup_and_control_characters_in_values_are_printed_as_text(cli: Lightkeeper) -> None:
    [seeded] = cli.seed(MARKUP_USER)
    with cli.keeper() as keeper:
        keeper.store.connections.set_account_name(seeded["id"], MARKUP_NAME, datetime.now(UTC))

    status = cli("status", check=0)
    link = cli("connect-link", "--user", MARKUP_USER, check=0)

    no_traceback(status)
    assert MARKUP_USER in status.stdout, describe(status)
    assert "[bold red]Evil[/]" in status.stdout and "\\x1b]8;;https://evil.example" in status.stdout
    assert "\x1b" not in status.stdout  # no escape sequence reaches the terminal
    assert MARKUP_USER in link.stdout, describe(link)
    [row] = cli.json("status")
    assert (row["user_id"], row["account_name"]) == (MARKUP_USER, MARKUP_NAME)  # JSON keeps the values exact


def test_a_newline_in_a_user_id_cannot_forge_a_log_line(cli: Lightkeeper, web: Web, tmp_path: Path) -> None:
    user = f"merchant\n{FORGED}"
    api = httpx2.Client(base_url=cli.origin, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    with api:
        created = api.post("/api/connect-sessions", json={"user_id": user})
        assert created.status_code == 201, created.text
        web.connect(created.json()["url"])

    log = tmp_path / "serve.err"
    wait_for(lambda: "connected for user" in log.read_text(), timeout=15, what="the connect log line")
    text = log.read_text()
    assert f"connected for user merchant\\n{FORGED}" in text
    assert not any(line.startswith(FORGED) for line in text.splitlines())


def test_serve_logs_failed_api_authentication_without_the_key(cli: Lightkeeper, web: Web, tmp_path: Path) -> None:
    presented = "Bearer an-almost-right-key-that-must-not-be-logged"
    answer = web.browser.get(f"{web.origin}/api/connections/3", headers={"Authorization": presented})
    assert answer.status_code == 401

    log = tmp_path / "serve.err"
    wait_for(lambda: "API request refused" in log.read_text(), timeout=15, what="the refusal in the log")
    assert "API request refused (unauthorized): GET /api/connections/3 from 127.0.0.1" in log.read_text()
    assert "an-almost-right-key" not in log.read_text() and API_KEY not in log.read_text()


def test_connect_link_label_names_the_store_on_the_confirm_page(cli: Lightkeeper, web: Web) -> None:
    link = parse_json(cli("connect-link", "--user", "merchant-7", "--label", "Acme Store #7", "--json", check=0))
    page = web.browser.get(link["url"])
    assert page.status_code == 200 and "Acme Store #7" in page.text and "Continue to Lightspeed" in page.text
    assert web.connect(link["url"]).status_code == 200


# -- the SQLite file -----------------------------------------------------------------------------------


def test_a_new_sqlite_file_and_its_wal_and_shm_are_private(
    cli: Lightkeeper, umask_022: None, request: pytest.FixtureRequest
) -> None:
    web: Web = request.getfixturevalue("web")  # serve creates the file, under umask 022
    [row] = cli.seed("merchant-1")  # a write: the WAL has content while serve holds the database open
    assert web.browser.get(f"{web.origin}/healthz").status_code == 200 and row["id"]

    assert cli.db_path is not None
    side_files = [cli.db_path.with_name(cli.db_path.name + suffix) for suffix in ("-wal", "-shm")]
    assert all(path.exists() for path in side_files), [path.name for path in side_files]
    for path in [cli.db_path, *side_files]:
        assert mode(path) == 0o600, f"{path.name}: {oct(mode(path))}"


def test_an_existing_world_readable_file_is_tightened_when_opened(cli: Lightkeeper, umask_022: None) -> None:
    cli("db", "upgrade", check=0)
    assert cli.db_path is not None
    cli.db_path.chmod(0o644)

    cli("status", check=0)

    assert mode(cli.db_path) == 0o600
