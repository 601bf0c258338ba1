"""A demo-sized day of ``lightkeeper serve`` at DEBUG, in both log formats: every line it writes is free of
every secret it handled, and each refresh and run left one structured event.

The flow: three merchants connect through the real connect flow (link, confirm page, consent, callback), a
run refreshes them, tokens are handed out on demand, the API is used with its key, and a second run meets
one refused and one failing refresh.
"""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.web.browser import continue_to_lightspeed
from tests.acceptance.conftest import (
    API_KEY,
    WEB_START_TIMEOUT_S,
    WEB_STOP_TIMEOUT_S,
    Lightkeeper,
    free_port,
    issued_tokens,
    wait_for,
)
from tests.conftest import CLIENT_SECRET
from tests.helpers import TEST_KEY

WEBHOOK_SECRET = "webhook-secret-for-the-leak-test-5b1d"
ONE_TIME_PARAMS = ("session", "code", "state")


@dataclass
class Secrets:
    """Everything that must never reach a log line, gathered while the flow runs."""

    fixed: dict[str, str]
    seen: dict[str, set[str]] = field(default_factory=dict)

    def note_urls(self, response: httpx2.Response) -> None:
        """The one-time values (link token, OAuth code and state) in every URL of a redirect chain."""
        for hop in [*response.history, response]:
            for name, value in parse_qsl(urlsplit(str(hop.url)).query):
                if name in ONE_TIME_PARAMS:
                    self.seen.setdefault(name, set()).add(value)

    def leaks(self, lines: list[str], tokens: set[str]) -> list[str]:
        found = [f"{name} in: {line[:80]}" for line in lines for name, value in self.fixed.items() if value in line]
        for name, values in [*self.seen.items(), ("token", tokens)]:
            found += [f"{name} {value[:8]}… in: {line[:80]}" for line in lines for value in values if value in line]
        return found


def serve(cli: Lightkeeper, log_path: Path, fmt: str) -> subprocess.Popen[str]:
    env = {"LOG_LEVEL": "DEBUG", "LOG_FORMAT": fmt, "WORKER_POLL_S": "0.2"}
    env |= {"NOTIFY_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hooks", "NOTIFY_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with log_path.open("w") as log:  # stdout and stderr: every line the process writes
        return cli.start("serve", "--port", str(cli.port), env_extra=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(WEB_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("`lightkeeper serve` did not stop on SIGTERM")


def connect(api: httpx2.Client, origin: str, user: str, secrets: Secrets) -> None:
    link = api.post("/api/connect-sessions", json={"user_id": user}).json()["url"]
    with httpx2.Client(follow_redirects=True, timeout=10) as browser:
        confirm = browser.get(link)
        secrets.note_urls(confirm)
        page = continue_to_lightspeed(browser, link)
        secrets.note_urls(page)
        for name, value in browser.cookies.items():
            secrets.fixed[f"{user}'s cookie {name}"] = value
    assert page.status_code == 200 and str(page.url).startswith(f"{origin}/oauth/callback?"), page.text[:300]


def run(api: httpx2.Client) -> dict[str, object]:
    run_id = api.post("/api/refresh").json()["run_id"]
    found: dict[str, object] = {}

    def over() -> bool:
        nonlocal found
        [found] = [r for r in api.get("/api/runs").json() if r["run_id"] == run_id]
        return found["status"] != "running"

    wait_for(over, timeout=30, what=f"run {run_id} to end")
    return found


def day_of_work(cli: Lightkeeper, sim: SimulatorControl, secrets: Secrets) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx2.Client(base_url=cli.origin, headers=headers, timeout=10) as api:
        for user in ("alice", "bob", "carol"):
            connect(api, cli.origin, user, secrets)
        ids = [c["id"] for c in api.get("/api/connections").json()]
        assert run(api)["refreshed"] == 3
        for connection_id in ids:
            assert api.post(f"/api/connections/{connection_id}/token").status_code == 200
        sim.inject_fault("token", "invalid_grant_401")
        sim.inject_fault("token", "status", status=500)
        ended = run(api)
        assert (ended["refreshed"], ended["expired"], ended["errors"]) == (1, 1, 1)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_reaches_any_log_line_at_debug(
    fmt: str, cli: Lightkeeper, sim: SimulatorControl, simulator_server: SimulatorServer, tmp_path: Path
) -> None:
    secrets = Secrets(
        {
            "client secret": CLIENT_SECRET,
            "API key": API_KEY,
            "encryption key": TEST_KEY,
            "webhook secret": WEBHOOK_SECRET,
        }
    )
    log_path = tmp_path / "serve.log"
    process = serve(cli, log_path, fmt)
    try:
        wait_for(lambda: _healthy(cli.origin, process), timeout=WEB_START_TIMEOUT_S, what="serve to start")
        day_of_work(cli, sim, secrets)
    finally:
        stop(process)
    lines = log_path.read_text().splitlines()
    cli.transcript.append("\n".join(lines))  # the cli fixture checks token shapes in it too

    assert {"session", "code", "state"} <= set(secrets.seen)  # the one-time values were captured
    assert not secrets.leaks(lines, issued_tokens(simulator_server))
    assert not [line for line in lines if "?" in line and ("code=" in line or "session=" in line)]
    events = _refresh_events(lines, fmt)
    assert {e["outcome"] for e in events} >= {"refreshed", "expired", "error"}
    assert len([e for e in events if e["outcome"] == "refreshed"]) == 4


def _healthy(origin: str, process: subprocess.Popen[str]) -> bool:
    assert process.poll() is None, "`lightkeeper serve` exited"
    try:
        return httpx2.get(f"{origin}/healthz", timeout=5).status_code == 200
    except httpx2.TransportError:
        return False


_FIELDS = {"connection_id", "account_id", "outcome", "reason", "duration_ms", "run_id", "trigger"}


def _refresh_events(lines: list[str], fmt: str) -> list[dict[str, str]]:
    """The ``refresh`` events, read back from either format, each with every field."""
    if fmt == "json":
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        events = [{k: str(v) for k, v in e.items()} for e in entries if e.get("event") == "refresh"]
        assert any(e.get("event") == "run" for e in entries)
    else:
        events = [
            dict(pair.split("=", 1) for pair in line.split() if "=" in pair)
            for line in lines
            if " outcome=" in line and " connection_id=" in line
        ]
        assert any(" refreshed=" in line and " run_id=" in line for line in lines)  # the run events
    assert events and all(set(event) >= _FIELDS for event in events), events
    return events
