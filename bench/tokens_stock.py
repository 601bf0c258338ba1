"""On-demand tokens and paced stock updates.

``tokens``: latency of ``keeper.fresh_token`` for a valid token, in-process and through
``POST /api/connections/{id}/token`` over loopback, beside the floor measured in the same run: one SQLAlchemy Core
select of the connection row plus an AES-GCM decrypt written out by hand.

    python -m bench tokens [--calls 10000] [--http-calls 2000] [--database-url URL] [--quick] [--profile]

``stock``: a stock batch against the simulator's leaky bucket, paced by lightkeeper (``stock.send``, the code
behind ``update-stock``) and sent naively (a plain loop of PUTs that sleeps ``Retry-After`` on a 429), each
against its own account so both start with an empty bucket. The theoretical minimum is what does not fit in
the bucket, drained at the drip rate: ``(rows x 1.5 - bucket) / drip``.

    python -m bench stock [--rows 300] [--bucket 90] [--drip 1] [--api-latency-ms 0] [--quick] [--no-naive]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import Request
from fastapi.responses import JSONResponse
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from lightkeeper import Keeper, load_settings
from lightkeeper.config import REQUIRE_ALL
from lightkeeper.crypto import connection_context, generate_key, parse_key
from lightkeeper.lightspeed.api import PUT_ONE_RELATION_COST
from lightkeeper.simulator import SimulatorConfig, SimulatorControl, SimulatorServer
from lightkeeper.store import upgrade
from lightkeeper.store.schema import connections
from lightkeeper.web import BackgroundServer, create_app

from .seeding import seed_connections

CLIENT_ID = "lightkeeper-bench"
CLIENT_SECRET = secrets.token_hex(16)
API_KEY = secrets.token_urlsafe(24)
TARGET_IN_PROCESS_P50_MS = 0.3
TARGET_HTTP_P50_MS = 3.0
TARGET_STOCK_RATIO = 1.10  # paced batch within 10% of the bucket's theoretical minimum
ITEMS = (1, 2, 3, 4, 5)
SHOPS = (1, 2)

console = Console(stderr=True)


def _output() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=200)  # piped: one line a row


@contextmanager
def _setup(database_url: str | None, **env: str) -> Iterator[tuple[Keeper, SimulatorControl, SimulatorServer]]:
    """A simulator on loopback and a Keeper on a fresh SQLite file (or ``database_url``), migrated."""
    config = SimulatorConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with (
        tempfile.TemporaryDirectory(prefix="lk-bench-") as tmp,
        SimulatorServer(config) as server,
        SimulatorControl(server.url, timeout=60) as control,
    ):
        settings = load_settings(
            env={
                "LIGHTSPEED_CLIENT_ID": CLIENT_ID,
                "LIGHTSPEED_CLIENT_SECRET": CLIENT_SECRET,
                "TOKEN_ENCRYPTION_KEY": generate_key(),
                "DATABASE_URL": database_url or f"sqlite:///{Path(tmp) / 'bench.db'}",
                "LIGHTSPEED_OAUTH_URL": server.url,
                "LIGHTSPEED_API_URL": server.url,
                "LIGHTKEEPER_API_KEY": API_KEY,
                "REFRESH_DELAY_MS": "0",
                "LOG_LEVEL": "WARNING",
                **env,
            },
            require=REQUIRE_ALL,
        )
        with Keeper(settings) as keeper:
            upgrade(keeper.store.engine)
            yield keeper, control, server


# -- tokens ---------------------------------------------------------------------------------------------------


@dataclass
class Latency:
    path: str
    samples_ns: list[int]
    target_ms: float | None = None

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.samples_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    @property
    def p50_ms(self) -> float:
        return self.quantile_ms(0.50)

    @property
    def p99_ms(self) -> float:
        return self.quantile_ms(0.99)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_ns) / 1e6


def _interleaved(calls: dict[str, Callable[[], object]], count: int, *, warmup: int) -> dict[str, list[int]]:
    """``count`` timed calls of each, in alternating rounds, so a busy moment of the host hits them alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[int]] = {name: [] for name in calls}
    clock = time.perf_counter_ns
    rounds = max(1, min(20, count // 100))
    for n in range(rounds):
        share = count // rounds + (1 if n < count % rounds else 0)
        for name, call in calls.items():
            for _ in range(share):
                started = clock()
                call()
                samples[name].append(clock() - started)
    return samples


def floor_reader(keeper: Keeper, connection_id: int) -> Callable[[], str]:
    """One Core select of the row and an AES-GCM decrypt by hand: the least a token read can cost."""
    aead = AESGCM(parse_key(keeper.settings.token_encryption_key.get_secret_value()))
    aad = connection_context(connection_id, "access_token").encode()
    query = select(connections).where(connections.c.id == connection_id)
    engine = keeper.store.engine

    def read() -> str:
        with engine.connect() as conn:
            row = conn.execute(query).one()
        data = row.access_token.rsplit(":", 1)[1]
        blob = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        return aead.decrypt(blob[:12], blob[12:], aad).decode()

    return read


def _profile(call: Callable[[], object], count: int, title: str) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        call()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
    return f"--- cProfile of {count} x {title} (cumulative) ---\n{text.getvalue()}"


async def _noop() -> dict[str, bool]:
    """The HTTP floor in the same server and client: uvicorn, FastAPI routing and httpx2, nothing else."""
    return {"ok": True}


def _async_token(keeper: Keeper) -> Callable[[int], Awaitable[JSONResponse]]:
    """What the token route costs without FastAPI's three thread-pool hops (sync auth dependency, sync
    endpoint, response validation of a sync endpoint): the fast path on the event loop, a refresh in a thread."""

    expected = f"Bearer {keeper.settings.lightkeeper_api_key.get_secret_value()}".encode()

    async def token(connection_id: int, request: Request) -> JSONResponse:
        if not secrets.compare_digest(request.headers.get("authorization", "").encode(), expected):
            return JSONResponse({"code": "unauthorized", "message": "missing or wrong API key"}, status_code=401)
        grant = keeper.tokens.current(connection_id) or await run_in_threadpool(keeper.fresh_token, connection_id)
        body = {"access_token": grant.access_token, "expires_at": grant.expires_at.isoformat()}
        return JSONResponse(body | {"account_id": grant.account_id})

    return token


def tokens_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tokens", description="fresh_token latency vs the floor")
    parser.add_argument("--calls", type=int, default=10_000, help="in-process calls (default 10000)")
    parser.add_argument("--http-calls", type=int, default=2_000, help="HTTP calls (default 2000)")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--quick", action="store_true", help="1000 in-process and 200 HTTP calls")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of both paths")
    args = parser.parse_args(argv)
    calls, http_calls = (1_000, 200) if args.quick else (args.calls, args.http_calls)

    results: list[Latency] = []
    failures: list[str] = []
    profiles: list[str] = []
    with _setup(args.database_url) as (keeper, control, _server):
        [connection_id] = seed_connections(keeper, control, 1)
        on_sqlite = keeper.store.engine.dialect.name == "sqlite"  # the targets are set for SQLite
        expected = keeper.fresh_token(connection_id).access_token
        floor = floor_reader(keeper, connection_id)
        if floor() != expected:
            failures.append("FAIL the hand-made floor read another token than fresh_token")
        console.print(f"[dim]in-process: {calls} calls of fresh_token and of the floor, interleaved…[/]")
        timed = _interleaved({"floor": floor, "fresh": lambda: keeper.fresh_token(connection_id)}, calls, warmup=200)
        results.append(Latency("floor: Core select + AES-GCM by hand", timed["floor"]))
        results.append(
            Latency("keeper.fresh_token (in-process)", timed["fresh"], TARGET_IN_PROCESS_P50_MS if on_sqlite else None)
        )
        if args.profile:
            profiles.append(_profile(lambda: keeper.fresh_token(connection_id), min(calls, 5000), "fresh_token"))

        console.print(f"[dim]HTTP: {http_calls} calls of POST /api/connections/{connection_id}/token…[/]")
        app = create_app(keeper)
        app.add_api_route("/_bench/noop", _noop, methods=["POST"], include_in_schema=False)
        app.add_api_route("/_bench/token-async/{connection_id}", _async_token(keeper), methods=["POST"])
        with (
            BackgroundServer(app) as web,
            httpx2.Client(base_url=web.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http,
        ):
            path = f"/api/connections/{connection_id}/token"

            def post() -> None:
                response = http.post(path)
                if response.status_code != 200 or response.json()["access_token"] != expected:
                    failures.append(f"FAIL POST {path} answered {response.status_code}")

            calls_by_name: dict[str, Callable[[], object]] = {
                "noop": lambda: http.post("/_bench/noop"),
                "token": post,
                "async": lambda: http.post(f"/_bench/token-async/{connection_id}"),
            }
            timed = _interleaved(calls_by_name, http_calls, warmup=100)
            results.append(
                Latency(f"POST {path} (loopback)", timed["token"], TARGET_HTTP_P50_MS if on_sqlite else None)
            )
            results.append(
                Latency("  the same from an async route with the key check (no thread hops)", timed["async"])
            )
            results.append(Latency("  POST /_bench/noop: async no-op, no auth (HTTP floor)", timed["noop"]))
        refreshes = control.stats()["refreshes"]
        if refreshes:
            failures.append(f"FAIL {refreshes} refresh(es) reached Lightspeed for a valid token")
        dialect = keeper.store.engine.dialect.name

    out = _output()
    out.print(_tokens_table(results, dialect))
    for text in profiles:
        out.print(text, markup=False, highlight=False)
    lines = failures[:5] + _token_verdicts(results)
    for line in lines:
        out.print(line, markup=False)
    return 1 if failures else 0


def _tokens_table(results: list[Latency], dialect: str) -> Table:
    floor = results[0]
    table = Table(title=f"fresh_token for a valid token ({dialect})", title_justify="left")
    for name in ("path", "calls", "p50 ms", "p99 ms", "mean ms", "p50 / floor", "target p50"):
        table.add_column(name, justify="left" if name == "path" else "right")
    for r in results:
        met = r.target_ms is None or r.p50_ms <= r.target_ms
        table.add_row(
            r.path,
            str(len(r.samples_ns)),
            f"{r.p50_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.mean_ms:.3f}",
            f"{r.p50_ms / floor.p50_ms:.1f}x",
            "" if r.target_ms is None else f"<= {r.target_ms:g} ms",
            style="" if met else "red",
        )
    return table


def _token_verdicts(results: list[Latency]) -> list[str]:
    lines = []
    for r in results:
        if r.target_ms is not None:
            met = "met" if r.p50_ms <= r.target_ms else "NOT met"
            lines.append(f"target {met}: {r.path} p50 {r.p50_ms:.3f} ms (target <= {r.target_ms:g} ms)")
    return lines


# -- stock ----------------------------------------------------------------------------------------------------


@dataclass
class BatchRun:
    mode: str
    rows: int
    seconds: float
    minimum_s: float
    rate_limited: int  # 429s the simulator counted for the account
    requests: int  # API requests the simulator counted for the account
    done: int

    @property
    def ratio(self) -> float:
        return self.seconds / self.minimum_s if self.minimum_s > 0 else float("nan")


def theoretical_minimum_s(rows: int, bucket: float, drip: float) -> float:
    return max(0.0, rows * PUT_ONE_RELATION_COST - bucket) / drip


def _rows(count: int) -> list[tuple[int, int, int]]:
    return [(ITEMS[n % 5], SHOPS[n // 5 % 2], n) for n in range(count)]


def _paced(keeper: Keeper, connection_id: int, rows: list[tuple[int, int, int]]) -> tuple[float, int]:
    from lightkeeper import stock

    updates = [stock.StockUpdate(line, item, qoh, shop_id=shop) for line, (item, shop, qoh) in enumerate(rows, 1)]
    started = time.monotonic()
    with keeper.lightspeed(connection_id) as client:
        result = stock.send(client, updates)
    return time.monotonic() - started, result.done


def _naive(api_url: str, token: str, account_id: str, rows: list[tuple[int, int, int]]) -> tuple[float, int]:
    """No pacing: PUT after PUT; a 429 is slept out for its Retry-After, then the same PUT again."""
    done = 0
    started = time.monotonic()
    with httpx2.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        for item, shop, qoh in rows:
            body = {"ItemShops": {"ItemShop": {"shopID": shop, "qoh": qoh}}}
            for _attempt in range(100):
                response = http.put(f"/API/V3/Account/{account_id}/Item/{item}.json", json=body)
                if response.status_code != 429:
                    break
                time.sleep(float(response.headers.get("Retry-After", "1")))
            done += response.status_code == 200
    return time.monotonic() - started, done


def stock_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench stock", description="a stock batch against the bucket")
    parser.add_argument("--rows", type=int, default=300, help="rows in the batch (default 300)")
    parser.add_argument("--bucket", type=float, default=90, help="simulator bucket size (default 90)")
    parser.add_argument("--drip", type=float, default=1, help="simulator drip rate per second (default 1)")
    parser.add_argument("--api-latency-ms", type=int, default=0, help="simulator API latency (default 0)")
    parser.add_argument("--quick", action="store_true", help="100 rows, bucket 30, drip 10 (about 12 s each)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive comparison")
    args = parser.parse_args(argv)
    rows_n, bucket, drip = (100, 30.0, 10.0) if args.quick else (args.rows, args.bucket, args.drip)
    if rows_n < 1 or bucket <= 0 or drip <= 0:
        parser.error("--rows, --bucket and --drip must be positive")
    rows = _rows(rows_n)
    minimum = theoretical_minimum_s(rows_n, bucket, drip)
    console.print(f"[dim]{rows_n} rows, bucket {bucket:g}, drip {drip:g}/s: theoretical minimum {minimum:.1f} s[/]")

    runs: list[BatchRun] = []
    with _setup(None) as (keeper, control, server):
        control.configure(bucket_size=bucket, drip_rate=drip, api_latency_ms=args.api_latency_ms)
        paced_id, naive_id = seed_connections(keeper, control, 2)
        modes = [("paced (lightkeeper)", paced_id)] + ([] if args.no_naive else [("naive (retry on 429)", naive_id)])
        for mode, connection_id in modes:
            console.print(f"[dim]{mode}…[/]")
            grant = keeper.fresh_token(connection_id)
            if mode.startswith("paced"):
                seconds, done = _paced(keeper, connection_id, rows)
            else:
                seconds, done = _naive(server.url, grant.access_token, grant.account_id, rows)
            counters = control.stats()["per_account"][grant.account_id]
            runs.append(
                BatchRun(mode, rows_n, seconds, minimum, counters["rate_limited"], counters["api_requests"], done)
            )

    out = _output()
    table = Table(
        title=f"{rows_n} one-ItemShop PUTs (cost {PUT_ONE_RELATION_COST:g}), bucket {bucket:g}, drip {drip:g}/s, "
        f"API latency {args.api_latency_ms} ms",
        title_justify="left",
    )
    for name in ("mode", "rows done", "time s", "minimum s", "time / minimum", "429s", "requests"):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for run in runs:
        table.add_row(
            run.mode,
            f"{run.done}/{run.rows}",
            f"{run.seconds:.2f}",
            f"{run.minimum_s:.2f}",
            f"{run.ratio:.3f}",
            str(run.rate_limited),
            str(run.requests),
        )
    out.print(table)
    paced = runs[0]
    lines = [] if paced.done == rows_n else [f"FAIL the paced batch did {paced.done} of {rows_n} rows"]
    met = paced.ratio <= TARGET_STOCK_RATIO and paced.rate_limited == 0
    lines.append(
        f"target {'met' if met else 'NOT met'}: paced batch {paced.ratio:.3f}x the theoretical minimum "
        f"(target <= {TARGET_STOCK_RATIO:.2f}x) with {paced.rate_limited} 429s (target 0)"
    )
    for line in lines:
        out.print(line, markup=False)
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


def main(argv: Sequence[str]) -> int:
    """``tokens`` or ``stock`` (for running this module on its own)."""
    if not argv or argv[0] not in ("tokens", "stock"):
        print("usage: python -m bench.tokens_stock tokens|stock [options]", file=sys.stderr)
        return 2
    return tokens_main(argv[1:]) if argv[0] == "tokens" else stock_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["main", "stock_main", "theoretical_minimum_s", "tokens_main"]
