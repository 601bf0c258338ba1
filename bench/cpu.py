"""CPU per refresh and refreshes/s of one ``lightkeeper refresh --all`` process: the numbers to optimise against.

* **CPU per refresh**: a ``lightkeeper refresh --all`` child over N connections on SQLite, 0 ms token latency,
  ``REFRESH_DELAY_MS=0`` and the default concurrency; its CPU (user + system, from its own rusage) minus the
  CPU of the same command over an empty table (start-up: imports, settings, schema check), divided by N.
  Target ≤ 1 ms. The guide's loop (``bench.guide_loop``, authlib) is measured the same way beside it.
* **refreshes/s at concurrency 64**: the same command with ``REFRESH_CONCURRENCY=64`` against a 150 ms
  simulator; refreshed / (the run record's ``finished_at - started_at``), so start-up is excluded. The
  child's wall time minus the empty-table run's is shown as a cross-check. Target ≥ 300/s.

The simulator answers in this process, so its CPU is never in the child's. ``--profile`` also runs the CPU
case under cProfile and prints where the child's time went.

    python -m bench cpu [--connections 600] [--rate-connections 600] [--repeats 5] [--profile] [--quick]
"""

from __future__ import annotations

import argparse
import pstats
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import report
from .child import lightkeeper_command, run_child
from .guide import ROOT, cpu_pairs
from .stage import Stage, lightkeeper_run, stage

TARGET_CPU_MS = 1.0
TARGET_RATE = 300.0


@dataclass
class Options:
    connections: int = 600
    rate_connections: int = 600
    latency_ms: int = 150
    concurrency: int = 64
    repeats: int = 5
    profile: bool = False


@dataclass
class Result:
    cpu_ms: list[float]  # lightkeeper, per refresh, start-up subtracted
    startup_cpu_s: float
    guide_cpu_ms: list[float]
    rate: list[float]  # concurrency 64, 150 ms, from the run record
    rate_by_wall: list[float]  # the same runs, child wall minus the empty-table run's wall
    startup_wall_s: float
    peak_rss_mb: float
    reuse: int

    def verdicts(self) -> list[str]:
        cpu_ms, rate = report.median(self.cpu_ms), report.median(self.rate)
        return [
            report.verdict(
                "CPU per refresh", cpu_ms <= TARGET_CPU_MS, f"{cpu_ms:.2f} ms (target <= {TARGET_CPU_MS} ms)"
            ),
            report.verdict(
                "refreshes/s at concurrency 64", rate >= TARGET_RATE, f"{rate:.0f}/s (target >= {TARGET_RATE:.0f}/s)"
            ),
            report.verdict("reuse", self.reuse == 0, f"{self.reuse} refresh tokens presented twice (must be 0)"),
        ]


def measure(stage_: Stage, options: Options) -> Result:
    n, fast = options.connections, {"REFRESH_DELAY_MS": "0"}
    pairs = cpu_pairs(stage_, n, options.repeats)
    ours, guide, rows = pairs.lightkeeper, pairs.guide, pairs.lightkeeper_rows
    if options.profile:
        profile(stage_, rows, fast)
    idle_wall = report.median(r.child.wall_s for r in ours.idle)
    stage_.latency(options.latency_ms)
    m = options.rate_connections
    wide = fast | {"REFRESH_CONCURRENCY": str(options.concurrency)}
    rows_m = stage_.seeded(stage_.sqlite_url(), m)
    fleet = report.repeat(
        options.repeats,
        f"{m} rows, concurrency {options.concurrency}",
        lambda: lightkeeper_run(stage_, rows_m, m, **wide),
    )
    runs = ours.busy + fleet
    return Result(
        cpu_ms=ours.per_refresh_ms,
        startup_cpu_s=ours.startup_s,
        guide_cpu_ms=guide.per_refresh_ms,
        rate=[r.rate for r in fleet],
        rate_by_wall=[_rate(m, r.child.wall_s - idle_wall) for r in fleet],
        startup_wall_s=idle_wall,
        peak_rss_mb=max(r.child.max_rss_mb for r in runs),
        reuse=sum(r.reuse for r in runs),
    )


def profile(stage_: Stage, database_url: str, settings: dict[str, str], top: int = 30) -> None:
    """The CPU case once more under cProfile in every thread (slower than unprofiled): where the time went."""
    out = stage_.directory / "refresh.prof"
    argv = [sys.executable, "-m", "bench.profiled", str(out), *lightkeeper_command(), "refresh", "--all", "--json"]
    run_child(argv, stage_.env(database_url, **settings) | {"PYTHONPATH": str(ROOT)}).check("the profiled run")
    stats = pstats.Stats(str(out), stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats("lightkeeper/", top)


def render(options: Options, result: Result) -> None:
    n, m, c = options.connections, options.rate_connections, options.concurrency
    rows: list[tuple[Any, ...]] = [
        (f"CPU per refresh, {n} rows, 0 ms, default concurrency", "ms", _spread(result.cpu_ms), f"<= {TARGET_CPU_MS}"),
        (f"  the guide's loop (authlib), {n} rows, 0 ms", "ms", _spread(result.guide_cpu_ms), "reference"),
        ("  start-up CPU (empty table), subtracted", "s", f"{result.startup_cpu_s:.2f}", ""),
        (
            f"refreshes/s, {m} rows, {options.latency_ms} ms, concurrency {c} (run record)",
            "1/s",
            _spread(result.rate, 0),
            f">= {TARGET_RATE:.0f}",
        ),
        ("  the same runs, child wall minus empty-table wall", "1/s", _spread(result.rate_by_wall, 0), ""),
        ("peak RSS of any run", "MB", f"{result.peak_rss_mb:.0f}", ""),
        ("reuse (refresh tokens presented twice)", "", result.reuse, "0"),
    ]
    title = f"lightkeeper refresh --all, SQLite, {options.repeats} repeat(s): median [min-max]"
    out = report.output()
    out.print(report.table(title, ("measurement", "unit", "value", "target"), rows))
    for line in result.verdicts():
        out.print(line, markup=False)


def _rate(count: int, seconds: float) -> float:
    """0 (shown as a dash) when a noisy start-up makes the difference meaningless."""
    return count / seconds if seconds > 0.1 else 0.0


def _spread(values: Sequence[float], digits: int = 2) -> str:
    if not any(values):
        return "-"
    return f"{report.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def parse(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=600, help="rows of the CPU runs (default 600)")
    parser.add_argument(
        "--rate-connections", type=int, default=600, help="rows of the concurrency-64 runs (default 600)"
    )
    parser.add_argument("--latency-ms", type=int, default=150, help="token latency of the rate runs (default 150)")
    parser.add_argument("--concurrency", type=int, default=64, help="REFRESH_CONCURRENCY of the rate runs (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--profile", action="store_true", help="also profile the CPU case and print the top functions")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 repeat, 200 rows")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.rate_connections < 1 or not 1 <= args.concurrency <= 64:
        parser.error("--connections and --rate-connections must be >= 1, --concurrency from 1 to 64")
    return Options(
        connections=200 if args.quick else args.connections,
        rate_connections=200 if args.quick else args.rate_connections,
        latency_ms=args.latency_ms,
        concurrency=args.concurrency,
        repeats=1 if args.quick else max(1, args.repeats),
        profile=args.profile,
    )


def main(argv: Sequence[str]) -> int:
    options = parse(argv)
    with stage("cpu") as stage_:
        result = measure(stage_, options)
    render(options, result)
    verdicts = result.verdicts()
    report.write_json("cpu", {"options": asdict(options), "result": asdict(result), "verdicts": verdicts})
    return 1 if result.reuse else 0  # a slow number is a finding to report, a reused token is a bug


__all__ = ["Options", "Result", "main", "measure"]
