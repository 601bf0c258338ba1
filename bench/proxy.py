"""The API proxy (``/api/connections/{id}/lightspeed/{path}``): its added latency, the requests/s of one ``serve``,
and two ``serve`` processes pacing one account's small bucket.

Every lightkeeper here is a real ``lightkeeper serve`` subprocess (uvicorn as ``serve`` runs it: uvloop where
installed) on a fresh, migrated PostgreSQL database (``LIGHTKEEPER_TEST_PG``, as ``bench replicas``), which holds
the shared bucket rows. The simulator runs in a child process of its own (access log off), so the load
generator in this process, the proxy and the simulator each have their own interpreter.

(a) **Added latency**: sequential ``GET Item/1.json`` straight to the simulator (with the access token from
    ``POST /api/connections/{id}/token``) and through the proxy, ``--calls`` each, interleaved in blocks so a
    drift of the machine's speed hits both alike; simulator API latency 0, pacing out of the way (bucket and
    drip 1e9, burst limit 100,000). Added = proxied quantile - direct quantile.
(b) **Requests/s at concurrency 32**: ``--requests`` GETs from an aiohttp client (uvloop) through one ``serve``,
    beside the simulator's own requests/s at the same concurrency, measured in the same run (the ceiling a
    proxy in front of it could reach on this machine), each after a warm-up.
(c) **Two processes, one account** (the test ``tests/proxy/test_two_processes.py`` runs the same): bucket 20,
    drip 5/s, burst limit 10/s; 4 caller threads send 100 GETs and 20 PUTs (cost ``LIGHTSPEED_WRITE_COST``
    1.5) alternately through two ``serve`` processes; the bucket's own minimum is (100 + 20 x 1.5 - 20) / 5 =
    22 s.

    python -m bench proxy [--calls 2000] [--requests 5000] [--concurrency 32] [--quick] [--no-pacing]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from lightkeeper import Keeper, load_settings
from lightkeeper.config import REQUIRE_ALL
from lightkeeper.crypto import generate_key
from lightkeeper.simulator import SimulatorControl
from lightkeeper.store import make_engine, upgrade

from . import report
from .child import base_env, lightkeeper_command, workdir
from .replicas import fresh_database, process_cpu_s
from .seeding import seed_connections
from .tokens_stock import Latency, _interleaved

CLIENT_ID = "lightkeeper-bench"
CLIENT_SECRET = secrets.token_hex(16)
API_KEY = secrets.token_urlsafe(32)
TARGET_ADDED_P50_MS = 1.5
TARGET_ADDED_P99_MS = 5.0
TARGET_RPS = 400.0
TARGET_PACING_RATIO = 1.15
WRITE_COST = 1.5
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
#: Pacing out of the way for (a) and (b): the simulator's limits far above anything this machine can send.
UNLIMITED: dict[str, Any] = {"bucket_size": 1e9, "drip_rate": 1e9, "burst_limit": 100_000}
#: The two-process run's small bucket (the issue's test): it takes about 22 s.
SMALL = {"bucket_size": 20.0, "drip_rate": 5.0, "burst_limit": 10}
STOCK_BODY = {"ItemShops": {"ItemShop": {"shopID": 1, "qoh": 7}}}  # one ItemShop: cost 1.5 at the simulator


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx2.Client(timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited {process.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer {url} within {START_TIMEOUT_S} s")
            time.sleep(0.1)


@dataclass
class Child:
    """A server subprocess (``serve`` or the simulator) whose stderr goes to a file."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spawn(argv: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file
        )


@contextmanager
def serve_processes(count: int, env: dict[str, str], directory: Path) -> Iterator[list[Child]]:
    """``count`` ``lightkeeper serve --no-scheduler`` processes on free ports, started side by side, each
    answering ``/healthz``; stopped with SIGTERM (SIGKILL as the last resort) on the way out."""
    started: list[Child] = []
    try:
        for number in range(count):
            port = free_port()
            log_path = directory / f"serve-{number + 1}.log"
            argv = [*lightkeeper_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-scheduler"]
            started.append(Child(_spawn(argv, env, log_path, directory), f"http://127.0.0.1:{port}", log_path))
        for number, child in enumerate(started, start=1):
            _wait_healthy(f"{child.url}/healthz", child.process, child.log_path, f"`lightkeeper serve` #{number}")
        yield started
    finally:
        for child in started:
            child.stop()


@contextmanager
def simulator_process(directory: Path) -> Iterator[Child]:
    """The simulator in a child process of its own (``python -m bench.proxy simulator PORT``)."""
    port = free_port()
    log_path = directory / "simulator.log"
    argv = [sys.executable, "-m", "bench.proxy", "simulator", str(port), CLIENT_ID, CLIENT_SECRET]
    env = base_env() | {"PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
    child = Child(_spawn(argv, env, log_path, Path.cwd()), f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_healthy(f"{child.url}/_sim/config", child.process, log_path, "the simulator")
        yield child
    finally:
        child.stop()


def run_simulator(port: int, client_id: str, client_secret: str) -> None:
    """The simulator's child: uvicorn as ``SimulatorServer`` runs it, without an access log, until SIGTERM."""
    import uvicorn

    from lightkeeper.simulator import SimulatorConfig
    from lightkeeper.simulator.app import create_app

    app = create_app(SimulatorConfig(client_id=client_id, client_secret=client_secret))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run()


def serve_env(database_url: str, simulator_url: str, key: str, api_key: str, **extra: str) -> dict[str, str]:
    """A ``serve`` process's whole environment: lightkeeper's settings and nothing else from ours."""
    return {
        **base_env(),
        "DATABASE_URL": database_url,
        "LIGHTSPEED_OAUTH_URL": simulator_url,
        "LIGHTSPEED_API_URL": simulator_url,
        "LIGHTSPEED_CLIENT_ID": CLIENT_ID,
        "LIGHTSPEED_CLIENT_SECRET": CLIENT_SECRET,
        "LIGHTSPEED_REDIRECT_URI": "http://127.0.0.1:1/oauth/callback",
        "TOKEN_ENCRYPTION_KEY": key,
        "LIGHTKEEPER_API_KEY": api_key,
        "REFRESH_DELAY_MS": "0",
        **extra,
    }


# -- (c) two processes, one account: shared with tests/proxy/test_two_processes.py --------------------------------


def minimum_s(gets: int, puts: int, *, bucket: float, drip: float, write_cost: float = WRITE_COST) -> float:
    """The bucket's own minimum: what does not fit in it at the start, drained at the drip rate."""
    return max(0.0, gets + puts * write_cost - bucket) / drip


def pacing_calls(gets: int, puts: int) -> list[tuple[str, str]]:
    """``(method, path)`` of ``gets`` GETs and ``puts`` stock PUTs, the PUTs spread evenly among the GETs."""
    total = gets + puts
    put_at = {round((n + 0.5) * total / puts) for n in range(puts)} if puts else set()
    calls, items = [], (1, 2, 3, 4, 5)
    for n in range(total):
        item = items[n % len(items)]
        calls.append(("PUT" if n in put_at else "GET", f"Item/{item}.json"))
    return calls


@dataclass
class PacingRun:
    calls: int
    elapsed_s: float
    statuses: dict[str, int]  # status code -> how many answers
    failures: list[str] = field(default_factory=list)

    @property
    def all_ok(self) -> bool:
        return self.statuses == {"200": self.calls} and not self.failures


def run_callers(
    urls: Sequence[str], api_key: str, connection_id: int, calls: Sequence[tuple[str, str]], *, callers: int = 4
) -> PacingRun:
    """``callers`` threads take ``calls`` from one queue and send call n through ``urls[n % len(urls)]``,
    all released at once; timed from the release to the last answer."""
    lock = threading.Lock()
    queue = list(enumerate(calls))
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    start = threading.Barrier(callers + 1)
    headers = {"Authorization": f"Bearer {api_key}"}

    def caller() -> None:
        clients = [httpx2.Client(base_url=url, headers=headers, timeout=120) for url in urls]
        try:
            start.wait()
            while True:
                with lock:
                    if not queue:
                        return
                    number, (method, path) = queue.pop(0)
                client = clients[number % len(clients)]
                url = f"/api/connections/{connection_id}/lightspeed/{path}"
                try:
                    response = client.request(method, url, json=STOCK_BODY if method == "PUT" else None)
                except httpx2.HTTPError as exc:
                    with lock:
                        failures.append(f"{method} {path} via {urls[number % len(urls)]}: {exc!r}")
                    continue
                with lock:
                    statuses[str(response.status_code)] += 1
                    if response.status_code != 200:
                        failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        finally:
            for client in clients:
                client.close()

    threads = [threading.Thread(target=caller, name=f"caller-{n}", daemon=True) for n in range(callers)]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    return PacingRun(len(calls), time.monotonic() - started, dict(statuses), failures)


# -- (a) added latency -------------------------------------------------------------------------------------------


@dataclass
class LatencyResult:
    calls: int
    direct: Latency
    proxied: Latency
    failures: int

    def added_ms(self, q: float) -> float:
        return self.proxied.quantile_ms(q) - self.direct.quantile_ms(q)


def measure_latency(sim_url: str, serve_url: str, connection_id: int, direct_id: int, calls: int) -> LatencyResult:
    """Sequential GETs through the proxy (``connection_id``) and straight to the simulator with another
    connection's token (``direct_id``): another account, so that the direct calls do not spend the bucket the
    proxy paces, as no host app would beside its proxy."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    failures = 0
    with httpx2.Client(base_url=serve_url, headers=auth, timeout=30) as proxy:
        token = proxy.post(f"/api/connections/{direct_id}/token")
        token.raise_for_status()
        grant = token.json()
        bearer = {"Authorization": f"Bearer {grant['access_token']}"}
        with httpx2.Client(base_url=sim_url, headers=bearer, timeout=30) as direct:
            direct_path = f"/API/V3/Account/{grant['account_id']}/Item/1.json"
            proxied_path = f"/api/connections/{connection_id}/lightspeed/Item/1.json"

            def checked(client: httpx2.Client, path: str) -> Callable[[], None]:
                def call() -> None:
                    nonlocal failures
                    if client.get(path).status_code != 200:
                        failures += 1

                return call

            timed = _interleaved(
                {"direct": checked(direct, direct_path), "proxied": checked(proxy, proxied_path)}, calls, warmup=200
            )
    return LatencyResult(calls, Latency("direct", timed["direct"]), Latency("proxied", timed["proxied"]), failures)


# -- (b) requests/s ----------------------------------------------------------------------------------------------


@dataclass
class Throughput:
    path: str
    requests: int
    concurrency: int
    seconds: float
    statuses: dict[str, int]
    server_cpu_s: float  # the proxy (serve) process, or the simulator for the direct run
    simulator_cpu_s: float
    client_cpu_s: float  # this process: the load generator

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


async def _load(url: str, headers: dict[str, str], requests: int, concurrency: int) -> tuple[float, Counter[str]]:
    import aiohttp

    statuses: Counter[str] = Counter()
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(url) as response:
                    await response.read()
                    statuses[str(response.status)] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, statuses


def load(url: str, headers: dict[str, str], requests: int, concurrency: int) -> tuple[float, Counter[str]]:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover (uvloop is a dependency where it exists)
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_load(url, headers, requests, concurrency))


def measure_throughput(
    what: str, url: str, headers: dict[str, str], children: tuple[Child, Child], *, requests: int, concurrency: int
) -> Throughput:
    """``requests`` GETs of ``url`` at ``concurrency``; ``children``: (the server called, the simulator)."""
    server, simulator = children
    load(url, headers, min(500, requests), concurrency)  # warm-up: connections, caches, the proxy's first booking
    cpu_before, sim_before, own_before = server.cpu_s(), simulator.cpu_s(), time.process_time()
    seconds, statuses = load(url, headers, requests, concurrency)
    return Throughput(
        what,
        requests,
        concurrency,
        seconds,
        dict(statuses),
        server.cpu_s() - cpu_before,
        simulator.cpu_s() - sim_before,
        time.process_time() - own_before,
    )


# -- one run -----------------------------------------------------------------------------------------------------


@dataclass
class Options:
    calls: int = 2000
    requests: int = 5000
    concurrency: int = 32
    pacing: bool = True
    py_spy: bool = False
    burst_limit: int = UNLIMITED["burst_limit"]
    database: str = "postgresql"


@dataclass
class Result:
    latency: LatencyResult | None = None
    throughput: list[Throughput] = field(default_factory=list)
    pacing: PacingRun | None = None
    pacing_minimum_s: float = 0.0
    pacing_rate_limited: int = 0
    pacing_burst_limited: int = 0
    pacing_api_requests: int = 0
    profile: str = ""

    def verdicts(self) -> list[str]:
        lines = []
        if self.latency is not None:
            p50, p99 = self.latency.added_ms(0.50), self.latency.added_ms(0.99)
            lines.append(report.verdict("added p50", p50 <= TARGET_ADDED_P50_MS, f"{p50:.3f} ms (<= 1.5 ms)"))
            lines.append(report.verdict("added p99", p99 <= TARGET_ADDED_P99_MS, f"{p99:.3f} ms (<= 5 ms)"))
            if self.latency.failures:
                lines.append(f"FAIL {self.latency.failures} latency calls were not answered 200")
        proxied = [t for t in self.throughput if t.path.startswith("proxied")]
        for run in proxied:
            met = run.rps >= TARGET_RPS and run.statuses == {"200": run.requests}
            lines.append(report.verdict("proxied requests/s", met, f"{run.rps:.0f}/s (>= {TARGET_RPS:.0f}/s)"))
        if self.pacing is not None:
            ratio = self.pacing.elapsed_s / self.pacing_minimum_s
            met = self.pacing.all_ok and self.pacing_rate_limited == 0 and ratio <= TARGET_PACING_RATIO
            detail = (
                f"{self.pacing.elapsed_s:.2f} s = {ratio:.3f}x the minimum {self.pacing_minimum_s:.1f} s "
                f"(<= {TARGET_PACING_RATIO}x), {self.pacing_rate_limited} x 429 at the simulator (0), "
                f"answers {self.pacing.statuses}"
            )
            lines.append(report.verdict("two processes pacing", met, detail))
        return lines


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def py_spy(pid: int, seconds: float, directory: Path) -> str:
    """A py-spy top-functions summary of ``pid`` for ``seconds`` (empty when py-spy cannot attach)."""
    executable = Path(sys.executable).with_name("py-spy")
    if not executable.exists():
        return "py-spy is not installed (scripts/bootstrap bench)"
    out = directory / "serve.speedscope.txt"
    argv = [str(executable), "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-f", "raw", "-o", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.exists():
        return f"py-spy failed ({done.returncode}): {done.stderr.strip()[-300:]}"
    return summarize_raw(out.read_text())


def summarize_raw(text: str, top: int = 25) -> str:
    """Own and inclusive shares of the top frames of a py-spy ``raw`` (collapsed stacks) file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "py-spy: no samples"
    lines = [f"py-spy of one serve during the proxied requests/s run: {total} samples"]
    lines += ["own time (top frames):"]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in own.most_common(top)]
    lines += ["inclusive (lightkeeper frames):"]
    ours = [(frame, count) for frame, count in inclusive.most_common() if "lightkeeper" in frame]
    lines += [f"  {count / total:6.1%}  {frame}" for frame, count in ours[:top]]
    return "\n".join(lines)


def bench_database(options: Options, stack: ExitStack, directory: Path) -> str:
    """The serves' database: a migrated SQLite file in ``directory``, or a fresh PostgreSQL one (dropped after)."""
    if options.database == "sqlite":
        url = f"sqlite:///{directory / 'proxy.db'}"
        upgrade(make_engine(url))
        return url
    return stack.enter_context(fresh_database())


def measure(options: Options) -> Result:
    result = Result()
    key = generate_key()
    with ExitStack() as stack:
        directory = Path(stack.enter_context(workdir("proxy")))
        simulator = stack.enter_context(simulator_process(directory))
        control = stack.enter_context(SimulatorControl(simulator.url, timeout=60))
        control.configure(api_latency_ms=0, token_latency_ms=0, **(UNLIMITED | {"burst_limit": options.burst_limit}))
        database_url = bench_database(options, stack, directory)
        env = serve_env(database_url, simulator.url, key, API_KEY, PROXY_MAX_WAIT_S="60")
        with Keeper(load_settings(env=env, require=REQUIRE_ALL)) as keeper:
            latency_id, rate_id, pacing_id, direct_id = seed_connections(keeper, control, 4)
            pacing_account = keeper.fresh_token(pacing_id).account_id
        serves = stack.enter_context(serve_processes(2, env, directory))
        serve = serves[0]
        auth = {"Authorization": f"Bearer {API_KEY}"}

        report.note(f"(a) added latency: {options.calls} sequential GETs direct and proxied, interleaved…")
        result.latency = measure_latency(simulator.url, serve.url, latency_id, direct_id, options.calls)

        report.note(f"(b) requests/s at concurrency {options.concurrency}: {options.requests} GETs each…")
        with httpx2.Client(base_url=serve.url, headers=auth, timeout=30) as http:
            grant = http.post(f"/api/connections/{rate_id}/token").json()
        direct_url = f"{simulator.url}/API/V3/Account/{grant['account_id']}/Item/1.json"
        proxied_url = f"{serve.url}/api/connections/{rate_id}/lightspeed/Item/1.json"
        bearer = {"Authorization": f"Bearer {grant['access_token']}"}
        n, c = options.requests, options.concurrency
        for what, url, headers, server in (
            ("direct to the simulator", direct_url, bearer, simulator),
            ("proxied (one serve)", proxied_url, auth, serve),
        ):
            run = measure_throughput(what, url, headers, (server, simulator), requests=n, concurrency=c)
            result.throughput.append(run)
        if options.py_spy:
            report.note("py-spy of the serve during a further proxied run…")
            spy: list[str] = []
            thread = threading.Thread(target=lambda: spy.append(py_spy(serve.pid, 8, directory)))
            thread.start()
            time.sleep(0.5)
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                load(proxied_url, auth, 1000, c)
            thread.join()
            result.profile = spy[0] if spy else ""

        if options.pacing:
            control.configure(**SMALL)
            before = control.stats()["per_account"][pacing_account]
            calls = pacing_calls(100, 20)
            result.pacing_minimum_s = minimum_s(100, 20, bucket=SMALL["bucket_size"], drip=SMALL["drip_rate"])
            report.note(
                f"(c) two serves, 100 GETs + 20 PUTs, bucket 20, drip 5/s: minimum {result.pacing_minimum_s:.0f} s…"
            )
            result.pacing = run_callers([s.url for s in serves], API_KEY, pacing_id, calls)
            after = control.stats()["per_account"][pacing_account]
            result.pacing_rate_limited = after["rate_limited"] - before["rate_limited"]
            result.pacing_burst_limited = after.get("burst_limited", 0) - before.get("burst_limited", 0)
            result.pacing_api_requests = after["api_requests"] - before["api_requests"]
    return result


# -- report ------------------------------------------------------------------------------------------------------


def render(options: Options, result: Result) -> None:
    out = report.output()
    cores, model = os.cpu_count(), cpu_model()
    out.print(f"machine: {cores} CPU cores, {model}; PostgreSQL at the bench's LIGHTKEEPER_TEST_PG", markup=False)
    if result.latency is not None:
        lat = result.latency
        rows = [
            (
                "direct to the simulator",
                f"{lat.direct.p50_ms:.3f}",
                f"{lat.direct.p99_ms:.3f}",
                f"{lat.direct.mean_ms:.3f}",
                "",
            ),
            (
                "through the proxy",
                f"{lat.proxied.p50_ms:.3f}",
                f"{lat.proxied.p99_ms:.3f}",
                f"{lat.proxied.mean_ms:.3f}",
                "",
            ),
            (
                "added by the proxy",
                f"{lat.added_ms(0.5):.3f}",
                f"{lat.added_ms(0.99):.3f}",
                f"{lat.proxied.mean_ms - lat.direct.mean_ms:.3f}",
                "p50 <= 1.5, p99 <= 5",
            ),
        ]
        title = f"(a) GET Item/1.json, {lat.calls} sequential calls each, interleaved, simulator latency 0 ms"
        out.print(report.table(title, ("path", "p50 ms", "p99 ms", "mean ms", "goal"), rows))
    if result.throughput:
        rows = [
            (
                t.path,
                t.requests,
                f"{t.seconds:.2f}",
                f"{t.rps:.0f}",
                f"{t.server_cpu_s / t.requests * 1000:.2f}" if t.path.startswith("proxied") else "",
                f"{t.simulator_cpu_s / t.requests * 1000:.2f}",
                f"{t.client_cpu_s / t.requests * 1000:.2f}",
                " ".join(f"{k}:{v}" for k, v in sorted(t.statuses.items())),
                ">= 400/s" if t.path.startswith("proxied") else "ceiling",
            )
            for t in result.throughput
        ]
        title = f"(b) GET Item/1.json at concurrency {options.concurrency} (aiohttp client), pacing out of the way"
        columns = ("path", "requests", "s", "requests/s", "serve CPU ms/req", "sim CPU ms/req", "client CPU ms/req")
        out.print(report.table(title, (*columns, "answers", "goal"), rows))
    if result.pacing is not None:
        p = result.pacing
        rows = [
            (
                "2 serves, 4 callers, alternating",
                f"{p.calls} (100 GET + 20 PUT)",
                f"{p.elapsed_s:.2f}",
                f"{result.pacing_minimum_s:.2f}",
                f"{p.elapsed_s / result.pacing_minimum_s:.3f}",
                result.pacing_rate_limited,
                result.pacing_api_requests,
                " ".join(f"{k}:{v}" for k, v in sorted(p.statuses.items())),
            )
        ]
        title = "(c) two `serve` processes, one account: bucket 20, drip 5/s, burst limit 10/s, PUT cost 1.5"
        columns = ("run", "requests", "elapsed s", "minimum s", "elapsed / minimum", "429s", "sim requests", "answers")
        out.print(report.table(title, columns, rows))
        for failure in p.failures[:5]:
            out.print(f"  {failure}", markup=False)
    if result.profile:
        out.print(result.profile, markup=False, highlight=False)
    for line in result.verdicts():
        out.print(line, markup=False)


def parse(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls of each path in (a) (default 2000)")
    parser.add_argument("--requests", type=int, default=5000, help="requests of each run in (b) (default 5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrency of (b) (default 32)")
    parser.add_argument("--no-pacing", action="store_true", help="skip (c), the two-process pacing run (~25 s)")
    parser.add_argument("--py-spy", action="store_true", help="also sample the serve with py-spy during (b)")
    parser.add_argument(
        "--burst-limit", type=int, default=UNLIMITED["burst_limit"], help="simulator burst limit in (a), (b)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 calls, 1000 requests")
    parser.add_argument(
        "--database",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="the serves' shared database: a fresh PostgreSQL one (default) or a SQLite file",
    )
    args = parser.parse_args(argv)
    if args.calls < 100 or args.requests < 1 or args.concurrency < 1:
        parser.error("--calls must be >= 100, --requests and --concurrency >= 1")
    return Options(
        calls=300 if args.quick else args.calls,
        requests=1000 if args.quick else args.requests,
        concurrency=args.concurrency,
        pacing=not args.no_pacing,
        py_spy=args.py_spy,
        burst_limit=args.burst_limit,
        database=args.database,
    )


def main(argv: Sequence[str]) -> int:
    options = parse(argv)
    result = measure(options)
    render(options, result)
    verdicts = result.verdicts()
    payload: dict[str, Any] = {
        "options": asdict(options),
        "cpu_model": cpu_model(),
        "latency": None
        if result.latency is None
        else {
            "calls": result.latency.calls,
            "direct_ms": {"p50": result.latency.direct.p50_ms, "p99": result.latency.direct.p99_ms},
            "proxied_ms": {"p50": result.latency.proxied.p50_ms, "p99": result.latency.proxied.p99_ms},
            "added_ms": {"p50": result.latency.added_ms(0.5), "p99": result.latency.added_ms(0.99)},
            "failures": result.latency.failures,
        },
        "throughput": [asdict(t) | {"rps": t.rps} for t in result.throughput],
        "pacing": None
        if result.pacing is None
        else asdict(result.pacing)
        | {
            "minimum_s": result.pacing_minimum_s,
            "rate_limited": result.pacing_rate_limited,
            "burst_limited": result.pacing_burst_limited,
            "api_requests": result.pacing_api_requests,
        },
        "profile": result.profile,
        "verdicts": verdicts,
    }
    report.write_json("proxy", payload)
    broken = (result.latency is not None and result.latency.failures) or (
        result.pacing is not None and not result.pacing.all_ok
    )
    return 1 if broken else 0


__all__ = ["Options", "Result", "main", "measure", "minimum_s", "pacing_calls", "run_callers", "serve_processes"]


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "simulator":
        run_simulator(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(main(sys.argv[1:]))
