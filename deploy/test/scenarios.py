"""scripts/test-deploy's scenarios, once the images are built and the simulator runs (see that script).

Run with the project's .venv (httpx2, lightkeeper's simulator client and browser helper). Everything it starts
is named or labelled with $LKD_PREFIX, and scripts/test-deploy's trap removes it all, whatever happens here.
Each step prints one line with what it measured; the first broken expectation raises and fails the test.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

from lightkeeper.simulator import SimulatorControl
from lightkeeper.store.pgcron import FUNCTION_SQL
from lightkeeper.web.browser import continue_to_lightspeed

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ["LKD_WORK"])
PREFIX = os.environ["LKD_PREFIX"]
IMAGE = os.environ["LKD_IMAGE"]
PG_IMAGE = os.environ["LKD_PG_IMAGE"]
SIM = os.environ["LKD_SIMULATOR_URL"]
COMPOSE = os.environ["LKD_COMPOSE"]  # podman-compose
VERSION = os.environ["LKD_VERSION"]  # pyproject.toml's, passed to the build as LIGHTKEEPER_VERSION
MAX_IMAGE_MB = 300
CLIENT_ID, CLIENT_SECRET = "lightkeeper-demo", "demo-secret"
# Token requests of the whole deployment go at least PACING_MS apart (REFRESH_DELAY_MS is deployment-wide).
PACING_MS = 2500
# Quick grants (the shared run, the SIGKILL): a worker that has just saved a pair has nothing in flight for
# almost a whole pacing interval, so it can be killed with no refresh in flight (reuse 0, not the grace window).
QUICK_LATENCY_MS = 200
# Slow grants (the SIGTERM): a refresh is surely in flight when the stop's SIGTERM arrives.
SLOW_LATENCY_MS = 3000
# One refresh's worst case with these: 2 x 5 + 1 = 11 s, under the 12 s lease (checked by the settings).
FAST = {
    "HTTP_TIMEOUT_S": "5",
    "REFRESH_MAX_RETRY_AFTER_S": "1",
    "REFRESH_LEASE_S": "12",
    "RUN_HEARTBEAT_S": "1",
    "WORKER_POLL_S": "0.5",
    "REFRESH_DELAY_MS": str(PACING_MS),
    "REFRESH_CONCURRENCY": "1",  # one refresh at a time per worker: a run's connections spread over both
}
# deploy/test/compose.host.yaml's mem_limit for these services (podman enforces it here: cgroup v1, cgroupfs).
MEMORY_LIMITS = {"serve": "160m", "worker": "128m"}


def say(message: str) -> None:
    print(f"test-deploy: {message}", flush=True)


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {_noise_free(result.stderr)}")
    return result


def _noise_free(text: str) -> str:
    """podman's harmless complaints here (no syslog, no systemd for health-check timers) left out."""
    return "\n".join(line for line in text.splitlines() if "syslog" not in line and "systemd" not in line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (httpx2.HTTPError, OSError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:g} s waiting for {what}" + (f" (last error: {last})" if last else "")
    )


class Lightkeeper:
    """The JSON API and the connect flow of one running `serve`."""

    def __init__(self, base: str, api_key: str) -> None:
        self.base = base
        self.api = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {api_key}"}, timeout=15)

    def healthy(self) -> bool:
        return httpx2.get(f"{self.base}/healthz", timeout=5).status_code == 200

    def connect(self, user_id: str) -> None:
        link = self.api.post("/api/connect-sessions", json={"user_id": user_id})
        assert link.status_code == 201, f"connect-session for {user_id}: HTTP {link.status_code} {link.text}"
        with httpx2.Client(follow_redirects=True, timeout=15) as browser:
            page = continue_to_lightspeed(browser, link.json()["url"])
        assert page.status_code == 200 and "Connected" in page.text, f"connecting {user_id}: HTTP {page.status_code}"

    def connections(self) -> list[dict[str, Any]]:
        answer = self.api.get("/api/connections")
        answer.raise_for_status()
        return list(answer.json())

    def runs(self) -> list[dict[str, Any]]:
        answer = self.api.get("/api/runs", params={"limit": 50})
        answer.raise_for_status()
        return list(answer.json())

    def run(self, run_id: int) -> dict[str, Any]:
        return next(run for run in self.runs() if run["run_id"] == run_id)

    def refresh_now(self) -> int:
        answer = self.api.post("/api/refresh")
        assert answer.status_code == 202, f"POST /api/refresh: HTTP {answer.status_code} {answer.text}"
        return int(answer.json()["run_id"])

    def finished(self, run_id: int, timeout: float) -> dict[str, Any]:
        return dict(wait_for(f"run {run_id} to finish", lambda: _over(self.run(run_id)), timeout))


def _over(run: dict[str, Any]) -> dict[str, Any] | None:
    return run if run["status"] not in ("running", "queued") else None


def env_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("-e", f"{key}={value}")]


def secrets() -> dict[str, str]:
    """The .env a user makes (README, "Deploying"): the keys come from the image's own gen-key/gen-api-key."""
    key = podman("run", "--rm", "--network", "none", IMAGE, "gen-key").stdout.strip()
    api = podman("run", "--rm", "--network", "none", IMAGE, "gen-api-key", check=False)
    api_key = api.stdout.strip().splitlines()[-1] if api.returncode == 0 and api.stdout.strip() else ""
    if not re.fullmatch(r"[A-Za-z0-9_\-]{32,}", api_key):  # gen-api-key not there yet: any long random key
        api_key = os.urandom(24).hex()
    return {
        "LIGHTSPEED_CLIENT_ID": CLIENT_ID,
        "LIGHTSPEED_CLIENT_SECRET": CLIENT_SECRET,
        "TOKEN_ENCRYPTION_KEY": key,
        "LIGHTKEEPER_API_KEY": api_key,
        "LIGHTSPEED_OAUTH_URL": SIM,
        "LIGHTSPEED_API_URL": SIM,
    }


# -- 1. the image -----------------------------------------------------------------------------------------------
def check_image() -> None:
    info = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    size_mb = info["Size"] / 1e6
    config = info["Config"]
    user = config.get("User", "")
    label = config.get("Labels", {}).get("org.opencontainers.image.version")
    version = podman("run", "--rm", "--network", "none", IMAGE, "--version").stdout.strip()
    uid = podman("run", "--rm", "--network", "none", "--entrypoint", "id", IMAGE, "-u").stdout.strip()
    say(f"image {size_mb:.0f} MB, user {user} (id -u {uid}), `--version`: {version!r}, label version {label}")
    assert size_mb < MAX_IMAGE_MB, f"the image is {size_mb:.0f} MB, over {MAX_IMAGE_MB} MB"
    assert uid != "0" and user and not user.startswith(("0", "root")), "the image runs as root"
    assert version == f"lightkeeper {label}", "the OCI version label and `lightkeeper --version` differ"
    assert label == VERSION, f"the image's version label is {label}, pyproject.toml says {VERSION}"
    assert (info.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test"), (
        "the image has no HEALTHCHECK (built without --format docker?)"
    )
    assert "/data" in (config.get("Volumes") or {}), "no VOLUME /data"
    leaked = [item for item in config.get("Env", []) if item.startswith(("PIP_", "TOKEN_", "LIGHTSPEED_CLIENT"))]
    assert not leaked, f"build-time or secret variables in the image's environment: {leaked}"
    tools = podman(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        IMAGE,
        "-c",
        "command -v gcc cc pip pip3 || true; ls /opt/lightkeeper/bin | grep -x 'pip.*' || true",
    ).stdout
    assert not tools.strip(), f"a compiler or pip in the final image: {tools.split()}"


# -- 2. the image alone, on its SQLite default -------------------------------------------------------------------
def image_alone(base_env: dict[str, str]) -> None:
    port = free_port()
    name = f"{PREFIX}-alone"
    env = base_env | {"LIGHTSPEED_REDIRECT_URI": f"http://127.0.0.1:{port}/oauth/callback"}
    started = time.monotonic()
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        f"{PREFIX}=1",
        "--network",
        "host",
        *env_args(env),
        IMAGE,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    keeper = Lightkeeper(f"http://127.0.0.1:{port}", env["LIGHTKEEPER_API_KEY"])
    wait_for("the image's serve to answer /healthz", keeper.healthy, 60)
    say(f"image alone: healthy after {time.monotonic() - started:.1f} s")
    health = podman("healthcheck", "run", name, check=False)
    assert health.returncode == 0, f"the image's HEALTHCHECK failed: {_noise_free(health.stdout + health.stderr)}"
    keeper.connect("solo-merchant")
    run = keeper.finished(keeper.refresh_now(), 60)
    assert run["status"] == "completed" and run["refreshed"] == 1, f"image alone: {run}"
    listing = podman("exec", name, "ls", "-ln", "/data").stdout
    assert "lightkeeper.db" in listing, f"no SQLite file under /data: {listing}"
    # The volume podman made for VOLUME /data keeps the image's ownership: the image's user can write there.
    owner = podman("exec", name, "stat", "-c", "%u:%g", "/data").stdout.strip()
    user = podman("exec", name, "sh", "-c", 'echo "$(id -u):$(id -g)"').stdout.strip()
    assert owner == user and not owner.startswith("0:"), f"/data is owned by {owner}, the image runs as {user}"
    stop = time.monotonic()
    podman("stop", "-t", "30", name)
    code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
    say(
        f"image alone: connected 1 merchant, run {run['run_id']} completed (refreshed 1) on sqlite:////data "
        f"(owned by {owner}, the image's user); "
        f"SIGTERM stopped it in {time.monotonic() - stop:.1f} s, exit {code}"
    )
    assert code == "0", f"serve exited {code} on SIGTERM"
    podman("rm", "-v", name)


# -- 3. the compose stack ----------------------------------------------------------------------------------------
class Stack:
    def __init__(self, base_env: dict[str, str]) -> None:
        self.dir = WORK / "stack"
        self.dir.mkdir()
        for source in (REPO / "compose.yaml", REPO / "deploy/test/compose.host.yaml"):
            (self.dir / source.name).write_text(source.read_text())
        self.project = f"{PREFIX}-stack"
        self.port, self.pg_port = free_port(), free_port()
        self.password = os.urandom(12).hex()
        dotenv = (
            base_env
            | FAST
            | {
                "LIGHTSPEED_REDIRECT_URI": f"http://127.0.0.1:{self.port}/oauth/callback",
                "POSTGRES_PASSWORD": self.password,
            }
        )
        (self.dir / ".env").write_text("".join(f"{key}={value}\n" for key, value in dotenv.items()))
        (self.dir / ".env").chmod(0o600)
        self.env = os.environ | {
            "LIGHTKEEPER_IMAGE": IMAGE,
            "POSTGRES_IMAGE": PG_IMAGE,  # the file names the upstream image; here Debian's postgresql-15
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(self.pg_port),
            "LIGHTKEEPER_PORT": str(self.port),
        }
        self.keeper = Lightkeeper(f"http://127.0.0.1:{self.port}", dotenv["LIGHTKEEPER_API_KEY"])
        self.metrics: dict[str, str] = {}  # worker -> the metrics URL of its current process

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [COMPOSE, "--in-pod", "false", "-p", self.project, "-f", "compose.yaml", "-f", "compose.host.yaml"]
        result = subprocess.run(
            [*command, *args], cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise AssertionError(
                f"podman-compose {' '.join(args)} exited {result.returncode}:\n"
                f"{_noise_free(result.stdout)}\n{_noise_free(result.stderr)}"
            )
        return result

    def containers(self, service: str) -> list[str]:
        found = podman(
            "ps",
            "-a",
            "--filter",
            f"label=io.podman.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}",
        ).stdout
        return sorted(found.split())

    def up(self) -> float:
        """`up -d`, service by service in compose.yaml's order (postgres healthy, migrate done, then the rest):
        podman 4.3 here ignores `condition: service_healthy` and cannot start a container whose --requires has
        requirements of its own, so the conditions are waited for here and `--no-deps` leaves --requires out."""
        started = time.monotonic()
        self.compose("up", "-d", "--no-deps", "postgres")
        self.postgres_ready()
        self.compose("up", "-d", "--no-deps", "migrate")
        migrate = self.containers("migrate")[0]
        code = podman("wait", migrate, timeout=120).stdout.strip()
        assert code == "0", f"migrate exited {code}: {_noise_free(podman('logs', migrate, check=False).stderr)}"
        self.compose("up", "-d", "--no-deps", "serve", "worker")
        wait_for("the stack's serve to answer /healthz", self.keeper.healthy, 120)
        workers = self.containers("worker")
        assert len(workers) == 2, f"expected 2 workers, found {workers}"
        for worker in workers:
            self.await_metrics(worker, 0)
        return time.monotonic() - started

    def postgres_ready(self) -> None:
        """The compose file's own health check (pg_isready), run as the orchestrator would."""
        postgres = self.containers("postgres")[0]
        wait_for(
            "postgres's health check",
            lambda: podman("healthcheck", "run", postgres, check=False).returncode == 0,
            90,
            0.5,
        )

    def restart(self) -> None:
        """`start` in dependency order: PostgreSQL first (the others refuse to start without their database)."""
        workers = self.containers("worker")
        starts = {worker: len(self.logged_metrics_urls(worker)) for worker in workers}
        self.compose("start", "postgres")
        self.postgres_ready()
        self.compose("start", "serve", "worker")
        for worker in workers:
            self.await_metrics(worker, starts[worker])

    def logged_metrics_urls(self, worker: str) -> list[str]:
        """Every "metrics on URL" line of the container's log, one per start (port 0: a new port each time)."""
        logs = podman("logs", worker, check=False)
        return re.findall(r"metrics on (http://\S+/metrics)", logs.stdout + logs.stderr)

    def await_metrics(self, worker: str, earlier_starts: int) -> None:
        """Wait for the URL the worker's current process logs (after ``earlier_starts`` earlier ones)."""
        urls = wait_for(f"{worker}'s metrics URL", lambda: self.logged_metrics_urls(worker)[earlier_starts:], 60)
        self.metrics[worker] = urls[-1]

    def refreshed_by(self, worker: str) -> float:
        """The worker's lightkeeper_refresh_attempts_total{outcome="refreshed"}: counted after the pair is saved."""
        text = httpx2.get(self.metrics[worker], timeout=5).text
        pattern = r'^lightkeeper_refresh_attempts_total\{[^}]*outcome="refreshed"[^}]*\} (\S+)$'
        return sum(float(value) for value in re.findall(pattern, text, flags=re.M))

    def first_to_refresh(self, before: dict[str, float], read_at: float, timeout: float) -> tuple[str, float]:
        """The first worker whose refreshed count rises above ``before`` (read from ``read_at`` on), and when the
        last look that saw no count risen began: that worker saved its pair after that moment."""
        deadline, quiet_since = time.monotonic() + timeout, read_at
        while time.monotonic() < deadline:
            look = time.monotonic()
            for worker, count in before.items():
                if self.refreshed_by(worker) > count:
                    return worker, quiet_since
            quiet_since = look
            time.sleep(0.02)
        raise AssertionError(f"no worker refreshed anything within {timeout:g} s")

    def sql(self, statement: str) -> str:
        return podman(
            "exec",
            self.containers("postgres")[0],
            "psql",
            "-U",
            "lightkeeper",
            "-d",
            "lightkeeper",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            statement,
        ).stdout.strip()

    def queue_run(self) -> int:
        """A run as pg_cron or the host app's SQL starts one: queued, the workers woken by NOTIFY."""
        return int(self.sql("SELECT refresh_lightspeed_tokens()").splitlines()[-1])

    def exit_code(self, container: str) -> str:
        return podman("inspect", container, "--format", "{{.State.ExitCode}}").stdout.strip()

    def limited(self) -> list[str]:
        return [*self.containers("serve"), *self.containers("worker")]

    def memory_limits(self) -> dict[str, str]:
        """compose.host.yaml's mem_limit, as podman set it on each container (so the README's sizes were limits)."""
        for name in self.limited():
            service = "serve" if name in self.containers("serve") else "worker"
            limit = int(podman("inspect", name, "--format", "{{.HostConfig.Memory}}").stdout.strip())
            assert limit == int(MEMORY_LIMITS[service][:-1]) * 2**20, f"{name}: memory limit {limit} bytes"
        return dict(MEMORY_LIMITS)

    def memory_held(self) -> dict[str, float]:
        """Each limited container's peak memory (MiB, cgroup v1: page cache included); none killed for memory or
        restarted by its restart policy (an OOM kill would otherwise pass unseen)."""
        peaks = {}
        for name in self.limited():
            state = podman("inspect", name, "--format", "{{.State.OOMKilled}} {{.RestartCount}}").stdout.split()
            assert state == ["false", "0"], f"{name}: OOM-killed, restarts: {state}"
            peak = podman("exec", name, "cat", "/sys/fs/cgroup/memory/memory.max_usage_in_bytes", check=False)
            peaks[name] = int(peak.stdout) / 2**20 if peak.returncode == 0 and peak.stdout.strip() else 0.0
        return peaks

    def memory_in_use(self) -> dict[str, str]:
        names = [*self.containers("postgres"), *self.limited()]
        usage = podman("stats", "--no-stream", "--format", "{{.Name}}={{.MemUsage}}", *names, check=False).stdout
        return {k: v.split(" / ")[0] for k, v in (line.split("=", 1) for line in usage.splitlines() if "=" in line)}


def stack_scenarios(base_env: dict[str, str], sim: SimulatorControl) -> None:
    stack = Stack(base_env)
    took = stack.up()
    migrate = stack.containers("migrate")
    assert migrate and stack.exit_code(migrate[0]) == "0", "the one-shot migrate did not succeed"
    limits = stack.memory_limits()
    say(f"stack: postgres, migrate (exit 0), serve and 2 workers up and healthy in {took:.1f} s; limits {limits}")
    shared_run(stack, sim)
    killed_worker(stack, sim)
    held = stack.memory_held()  # before the stop: the counters of a container start over with it
    stopped_stack(stack, sim)
    held = {name: max(peak, stack.memory_held().get(name, 0.0)) for name, peak in held.items()}
    usage = stack.memory_in_use()
    pgdata = podman("exec", stack.containers("postgres")[0], "du", "-sh", "/var/lib/postgresql/data").stdout.split()
    say(
        f"stack: memory limits {limits} held (no process OOM-killed); peak use (cgroup, page cache included) "
        f"{ {name: f'{peak:.0f}MiB' for name, peak in held.items()} }; in use at the end {usage}; "
        f"PostgreSQL data {pgdata[:1]}"
    )
    stack.compose("down", "-v", timeout=240)


def shared_run(stack: Stack, sim: SimulatorControl) -> None:
    """Three merchants through the stack's serve, then a run that both workers work on."""
    keeper, workers = stack.keeper, stack.containers("worker")
    for number in range(1, 4):
        keeper.connect(f"merchant-{number}")
    stack.sql(FUNCTION_SQL)
    sim.configure(token_latency_ms=QUICK_LATENCY_MS)
    before = {worker: stack.refreshed_by(worker) for worker in workers}
    run = keeper.finished(stack.queue_run(), 90)
    shares = {worker: stack.refreshed_by(worker) - before[worker] for worker in workers}
    say(
        f"stack: 3 merchants connected through serve; run {run['run_id']} {run['status']}, refreshed "
        f"{run['refreshed']}, per worker {list(shares.values())}"
    )
    assert run["status"] == "completed" and run["refreshed"] == 3, run
    assert all(share >= 1 for share in shares.values()), f"the run was not spread over both workers: {shares}"


def killed_worker(stack: Stack, sim: SimulatorControl) -> None:
    """SIGKILL one worker mid-run, at a moment it has no refresh in flight: the other finishes the run, and no
    refresh token is presented twice (a kill during a grant loses the rotated pair: then one grace-window reuse is
    the designed recovery, tested in tests/faults/test_killed_before_commit.py, not here).

    The victim is killed right after its refreshed count rises: that pair is saved, and its next request waits for
    a pacing slot at least PACING_MS after the one it just made (the slots are the whole deployment's)."""
    keeper, workers = stack.keeper, stack.containers("worker")
    for number in range(4, 9):
        keeper.connect(f"merchant-{number}")
    before_kill = sim.stats()
    read_at = time.monotonic()
    counts = {worker: stack.refreshed_by(worker) for worker in workers}
    run_id = stack.queue_run()
    victim, quiet_since = stack.first_to_refresh(counts, read_at, 60)
    podman("kill", "--signal", "KILL", victim)
    killed_at = time.monotonic()
    survivor = next(worker for worker in workers if worker != victim)
    survivor_at_kill = stack.refreshed_by(survivor)
    # The victim's last request left at least QUICK_LATENCY_MS before its count rose (after quiet_since); its next
    # one leaves PACING_MS after that. Margin for the commit and the count: half a second.
    window_s = (PACING_MS - QUICK_LATENCY_MS) / 1000 - 0.5
    assert killed_at - quiet_since < window_s, (
        f"the SIGKILL came {killed_at - quiet_since:.2f} s after the victim's count rose, over {window_s:.2f} s: "
        "too late to be sure it had nothing in flight"
    )
    run = keeper.finished(run_id, 120)
    survivor_share = stack.refreshed_by(survivor) - survivor_at_kill
    victim_state = podman("inspect", victim, "--format", "{{.State.Status}}").stdout.strip()
    states = {connection["status"] for connection in keeper.connections()}
    after = sim.stats()
    reuse, in_grace, invalid = (after[k] - before_kill[k] for k in ("reuse", "refreshes_in_grace", "invalid_grant"))
    say(
        f"stack: SIGKILLed {victim} {killed_at - quiet_since:.2f} s after its refreshed count rose (nothing in "
        f"flight); {survivor} refreshed {survivor_share:.0f} more and finished run {run_id} {run['status']} "
        f"{time.monotonic() - killed_at:.1f} s later ({victim} {victim_state}): refreshed "
        f"{run['refreshed']}/{run['total']}, expired {run['expired']}, errors {run['errors']}; reuse {reuse} (in "
        f"the grace window {in_grace}), invalid_grant {invalid}; connection states {sorted(states)}"
    )
    assert run["status"] == "completed" and run["refreshed"] == run["total"] == 8, run
    assert run["expired"] == 0 and run["errors"] == 0 and invalid == 0, (run, invalid)
    assert reuse == 0 and in_grace == 0, f"reuse {reuse}, in the grace window {in_grace}: a token presented twice"
    assert survivor_share >= 1, f"{survivor} refreshed nothing after the kill"
    assert victim_state != "running", f"{victim} came back during the run ({victim_state}): the other did not finish it"
    assert not states & {"expired", "error", "revoked"}, states
    starts = len(stack.logged_metrics_urls(victim))
    podman("start", victim)
    stack.await_metrics(victim, starts)


def stopped_stack(stack: Stack, sim: SimulatorControl) -> None:
    """SIGTERM the whole stack while a refresh is in flight: it finishes and is saved, the run is handed back (a
    rolling restart's successor finishes it), the restarted workers end it, and no token is spent twice."""
    keeper, workers = stack.keeper, stack.containers("worker")
    sim.configure(token_latency_ms=SLOW_LATENCY_MS)
    reuse_before = sim.reuse()
    backlog = unanswered(sim.stats())  # code exchanges and the like: token requests that are not refreshes
    run_id = stack.queue_run()
    wait_for("a refresh of the run in flight", lambda: unanswered(sim.stats()) > backlog, 60, 0.05)
    in_flight = unanswered(sim.stats()) - backlog
    stopping = time.monotonic()
    # As `docker compose stop` does (dependents first), which podman-compose 1.x does not: it stops every
    # container at once, and PostgreSQL's fast shutdown would end the sessions of refreshes still finishing.
    stack.compose("stop", "serve", "worker", timeout=240)
    stop_s = time.monotonic() - stopping
    stack.compose("stop", "postgres", timeout=120)
    sim.configure(token_latency_ms=QUICK_LATENCY_MS)
    codes = {name: stack.exit_code(name) for name in [*stack.containers("serve"), *workers]}
    logs = "".join(podman("logs", worker, check=False).stderr for worker in workers)
    say(
        f"stack: SIGTERM with {in_flight} refresh(es) in flight ({SLOW_LATENCY_MS} ms grants) stopped it in "
        f"{stop_s:.1f} s; exit codes {codes}"
    )
    assert all(code == "0" for code in codes.values()), f"a process did not stop cleanly on SIGTERM: {codes}"
    assert "Traceback" not in logs, "a worker logged a traceback while stopping"
    stack.restart()
    wait_for("the stack's serve after the restart", keeper.healthy, 120)
    # A worker stopped by SIGTERM hands its run back: the restarted workers finish it (or, when the restart took
    # longer than the run's heartbeat allows, it is closed interrupted and the next run covers it).
    stopped_run = keeper.finished(run_id, 120)
    running = [run["run_id"] for run in keeper.runs() if run["status"] == "running"]
    why = f": {stopped_run['message']}" if stopped_run["message"] else ""
    say(
        f"stack: after the restart, run {run_id} is {stopped_run['status']} ({stopped_run['refreshed']} refreshed"
        f"{why}); runs left running: {running}"
    )
    assert stopped_run["status"] in ("completed", "interrupted") and not running, f"runs left running: {running}"
    assert stopped_run["errors"] == 0, stopped_run
    # The pairs granted while stopping were saved: had one been dropped, this run would present its old token.
    run = keeper.finished(stack.queue_run(), 120)
    reuse = sim.reuse() - reuse_before
    states = {connection["status"] for connection in keeper.connections()}
    say(
        f"stack: the next run {run['run_id']} {run['status']}: refreshed {run['refreshed']}/{run['total']}; "
        f"refresh tokens presented twice since the SIGTERM: {reuse}; connection states {sorted(states)}"
    )
    assert run["status"] == "completed" and run["refreshed"] == 8 and reuse == 0, (run, reuse)
    assert not states & {"expired", "error", "revoked"}, states


def unanswered(stats: dict[str, Any]) -> int:
    """Token requests the simulator has received and not granted (yet): it counts a request on arrival and a
    refresh when it grants it, after the token latency."""
    return int(stats["token_requests"]) - int(stats["refreshes"]) - int(stats["code_exchanges"])


def main() -> int:
    with SimulatorControl(SIM) as sim:
        start = sim.stats()
        check_image()
        base_env = secrets()
        image_alone(base_env)
        stack_scenarios(base_env, sim)
        end = sim.stats()
        stats = {key: end[key] - start[key] for key in ("refreshes", "refreshes_in_grace", "reuse", "invalid_grant")}
        say(
            f"simulator: {stats['refreshes']} refreshes, {stats['refreshes_in_grace']} in the grace window, "
            f"reuse {stats['reuse']}, invalid_grant {stats['invalid_grant']}"
        )
        assert stats["invalid_grant"] == 0 and stats["reuse"] == stats["refreshes_in_grace"] == 0, stats
    return 0


if __name__ == "__main__":
    sys.exit(main())
