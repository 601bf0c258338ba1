"""Fresh processes: ``serve`` exports every refresh series at 0 before any work, and ``worker --metrics-port``
serves this process's metrics (with the database gauges) over HTTP."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import httpx2

from lightkeeper.metrics import OUTCOME_REASONS
from tests.acceptance.conftest import API_KEY, WEB_START_TIMEOUT_S, WEB_STOP_TIMEOUT_S, Lightkeeper, wait_for

from .conftest import Samples, sample, scrape

THIRTY_DAYS_S = 30 * 24 * 3600.0


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(WEB_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{process.args!r} did not stop on SIGTERM") from None


def assert_every_attempt_series(samples: Samples, *, value: float | None) -> None:
    for outcome, reasons in OUTCOME_REASONS.items():
        for reason in reasons:
            found = sample(samples, "lightkeeper_refresh_attempts_total", outcome=outcome, reason=reason.value)
            assert found is not None, (outcome, reason)
            assert value is None or found == value, (outcome, reason, found)


def test_a_fresh_serve_exports_every_series_at_zero(cli: Lightkeeper, tmp_path: Path) -> None:
    cli.seed("a", "b")
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = cli.start("serve", "--port", str(cli.port), "--no-scheduler", stdout=out, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx2.get(f"{cli.origin}/healthz", timeout=5).status_code == 200
            except httpx2.TransportError:
                return False

        wait_for(up, timeout=WEB_START_TIMEOUT_S, what="serve to answer /healthz")
        assert httpx2.get(f"{cli.origin}/metrics", timeout=5).status_code == 401  # the app port's needs a key
        samples = scrape(f"{cli.origin}/metrics", API_KEY)
        health = httpx2.get(f"{cli.origin}/healthz", timeout=5).json()
    finally:
        stop(process)
        cli.transcript.append(log.read_text())

    assert_every_attempt_series(samples, value=0)
    assert sample(samples, "lightkeeper_refresh_request_seconds_count") == 0
    assert sample(samples, "lightkeeper_run_duration_seconds_count") == 0
    assert sample(samples, "lightkeeper_scheduler_last_tick_timestamp_seconds") == 0
    assert sample(samples, "lightkeeper_connections", provider="r-series", status="connected") == 2
    assert sample(samples, "lightkeeper_connections", provider="r-series", status="expired") == 0
    assert sample(samples, "lightkeeper_refresh_token_max_age_seconds") == THIRTY_DAYS_S
    assert health["checks"]["scheduler"] == {"ok": True, "status": "not running here"}


def test_worker_serves_its_metrics_on_the_metrics_port(cli: Lightkeeper, tmp_path: Path) -> None:
    cli.seed("a")
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        process = cli.start(
            "worker", "--metrics-port", "0", env_extra={"WORKER_POLL_S": "0.1"}, stdout=out, stderr=subprocess.STDOUT
        )
    found: list[str] = []
    try:

        def announced() -> bool:
            assert process.poll() is None, log.read_text()
            found[:] = re.findall(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
            return bool(found)

        wait_for(announced, timeout=WEB_START_TIMEOUT_S, what="the worker to announce its metrics URL")

        def ticked() -> bool:
            return (sample(scrape(found[0]), "lightkeeper_scheduler_last_tick_timestamp_seconds") or 0) > 0

        wait_for(ticked, timeout=WEB_START_TIMEOUT_S, what="the worker loop to iterate")
        samples = scrape(found[0])
    finally:
        stop(process)
        cli.transcript.append(log.read_text())

    assert_every_attempt_series(samples, value=None)  # a due tick may have refreshed already
    assert sample(samples, "lightkeeper_connections", provider="r-series", status="connected") == 1
    assert sample(samples, "lightkeeper_refresh_token_max_age_seconds") == THIRTY_DAYS_S
    assert not any(name.startswith("lightkeeper_http_requests") for name, _ in samples)  # no web app here
    assert process.returncode == 0
