"""Behind a reverse proxy (deploy/Caddyfile, the serve unit's ``--forwarded-allow-ips 127.0.0.1``): ``lightkeeper
serve`` believes ``X-Forwarded-For`` from the addresses it is given, and from no other.

The observable is the dashboard's refusal log line, which names the client address uvicorn settled on: the
forwarded one when the proxy is trusted, the proxy's own otherwise."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx2
import pytest

from tests.acceptance.conftest import WEB_START_TIMEOUT_S, Lightkeeper, wait_for
from tests.observability.test_processes import stop

CLIENT = "203.0.113.9"  # the browser, as the proxy names it (TEST-NET-3)
WRONG_KEY = "not-the-dashboard-key-0000000000000000"


def refusal_logged_by_serve(cli: Lightkeeper, log: Path, *options: str) -> str:
    """Start ``serve`` with ``options``; a wrong dashboard key from 127.0.0.1 (the proxy) on behalf of CLIENT;
    the address serve's log names for that refusal."""
    with log.open("w") as out:
        process = cli.start("serve", "--port", str(cli.port), "--no-scheduler", *options, stdout=out, stderr=out)
    try:
        wait_for(lambda: _healthy(cli, process), timeout=WEB_START_TIMEOUT_S, what="serve to answer /healthz")
        answer = httpx2.get(
            f"{cli.origin}/dashboard",
            headers={"Authorization": f"Bearer {WRONG_KEY}", "X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"},
            timeout=10,
        )
        assert answer.status_code in (401, 403), answer.status_code
    finally:
        stop(process)
    text = log.read_text()
    cli.transcript.append(text)
    found = [line.rsplit(" from ", 1)[1].strip() for line in text.splitlines() if "refused (wrong key) from" in line]
    assert len(found) == 1, text
    return found[0]


def _healthy(cli: Lightkeeper, process: subprocess.Popen[str]) -> bool:
    if process.poll() is not None:
        pytest.fail(f"`lightkeeper serve` exited {process.returncode}", pytrace=False)
    try:
        return httpx2.get(f"{cli.origin}/healthz", timeout=5).status_code == 200
    except httpx2.TransportError:
        return False


def test_x_forwarded_for_from_an_allowed_proxy_names_the_client(cli: Lightkeeper, tmp_path: Path) -> None:
    address = refusal_logged_by_serve(cli, tmp_path / "serve.log", "--forwarded-allow-ips", "127.0.0.1")
    assert address == CLIENT


def test_x_forwarded_for_from_any_other_address_is_ignored(cli: Lightkeeper, tmp_path: Path) -> None:
    # uvicorn's own default trusts loopback: only the option serve passes on makes 127.0.0.1 a stranger here.
    address = refusal_logged_by_serve(cli, tmp_path / "serve.log", "--forwarded-allow-ips", "192.0.2.1")
    assert address == "127.0.0.1"


def test_the_environment_variable_is_the_default(cli: Lightkeeper, tmp_path: Path) -> None:
    """``FORWARDED_ALLOW_IPS`` (uvicorn's variable) when the option is not given: a compose file can set it."""
    cli.env["FORWARDED_ALLOW_IPS"] = "192.0.2.1"
    assert refusal_logged_by_serve(cli, tmp_path / "serve.log") == "127.0.0.1"
