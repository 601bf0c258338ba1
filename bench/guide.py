"""lightkeeper beside the seed guide's design (``bench.guide_loop``), measured in the same run.

Both run as child processes against the simulator in this process, over rows seeded the same way:

* **200 ms spacing**, 150 ms token latency: the guide sleeps 200 ms after each refresh (so it manages
  1 / (latency + 200 ms + work)); lightkeeper spaces request *starts* 200 ms apart across the deployment
  (``REFRESH_DELAY_MS=200``), so ≈ 5/s, the spacing bound.
* **no spacing**, 150 ms latency: lightkeeper at ``REFRESH_CONCURRENCY`` 1, 4, 16, 64 with ``REFRESH_DELAY_MS=0``,
  against the guide's loop without its sleep (the guide has no concurrency: its number is one point).
* **CPU per refresh**, 0 ms latency: (CPU of a run over N rows - CPU of the same command over an empty
  table) / N, from each child's own rusage; the simulator's CPU is in this process and never counted.

Speeds come from each run's own start and end (lightkeeper's run record, the loop's timestamps), so start-up is
left out. Medians of ``--repeats`` runs; each ratio is lightkeeper / the baseline of the same run.

    python -m bench guide [--repeats 3] [--latency-ms 150] [--spacing-connections 25] [--cpu-connections 600]
                          [--concurrency 1,4,16,64] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from lightkeeper.store import sqlite_path

from . import report
from .child import run_child
from .paired import Paired, paired
from .stage import RunResult, Stage, lightkeeper_run, stage

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@dataclass
class Options:
    repeats: int = 3
    latency_ms: int = 150
    spacing_connections: int = 25
    baseline_connections: int = 40  # the loop without sleep: ~6 s at 150 ms
    cpu_connections: int = 600
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16, 64])

    def curve_connections(self, concurrency: int) -> int:
        """Enough rows that each point runs a few seconds at its expected speed."""
        return min(20 * concurrency + 20, 1000)


@dataclass
class Point:
    """One measured quantity: the samples of each side, their medians, and lightkeeper / baseline."""

    name: str
    unit: str
    baseline: list[float]
    lightkeeper: list[float]
    reuse: int = 0  # lightkeeper's runs: refresh tokens presented twice (must be 0)
    note: str = ""
    per_run: dict[str, list[float]] = field(default_factory=dict)  # the same runs, refreshed / the run's own span

    @property
    def ratio(self) -> float:
        return report.ratio(report.median(self.lightkeeper), report.median(self.baseline))


# -- the two sides --------------------------------------------------------------------------------------------


def baseline_run(stage_: Stage, database_url: str, sleep_ms: float) -> dict[str, float]:
    """One run of the guide's loop: its counts, rate (start-up excluded) and the child's CPU seconds."""
    env = stage_.env(database_url) | {"PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "bench.guide_loop", str(sqlite_path(database_url)), "--sleep-ms", str(sleep_ms)]
    child = run_child(argv, env).check("the guide's loop")
    result = json.loads(child.stdout)
    loop_s = float(result["finished"]) - float(result["started"])
    if result["errors"] or result["expired"]:
        raise RuntimeError(f"the guide's loop failed: {result['errors']} errors, {result['expired']} expired")
    return {"refreshed": result["refreshed"], "rate": result["refreshed"] / loop_s, "cpu_s": child.cpu_s}


# -- the three measurements -----------------------------------------------------------------------------------


def with_pace(stage_: Stage, run: Callable[[], T]) -> tuple[T, float]:
    """``run()``, and the pace Lightspeed saw: refresh requests per second from the first arrival to the last."""
    seen = len(stage_.server.state.refresh_times())
    result = run()
    arrivals = stage_.server.state.refresh_times()[seen:]
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    return result, (len(arrivals) - 1) / span if span > 0 else 0.0


def spacing(stage_: Stage, options: Options) -> Point:
    """Measured as the simulator sees it: with few rows, a run's set-up would weigh on a per-run rate."""
    n = options.spacing_connections
    stage_.latency(options.latency_ms)
    base_db, lk_db = stage_.seeded(stage_.sqlite_url(), n), stage_.seeded(stage_.sqlite_url(), n)
    base = report.repeat(
        options.repeats, "guide, 200 ms sleep", lambda: with_pace(stage_, lambda: baseline_run(stage_, base_db, 200))
    )
    runs = report.repeat(
        options.repeats,
        "lightkeeper, REFRESH_DELAY_MS=200",
        lambda: with_pace(stage_, lambda: lightkeeper_run(stage_, lk_db, n)),
    )
    return Point(
        name=f"200 ms spacing, {options.latency_ms} ms latency, {n} connections",
        unit="refreshes/s",
        baseline=[pace for _b, pace in base],
        lightkeeper=[pace for _r, pace in runs],
        reuse=sum(r.reuse for r, _pace in runs),
        note="pace of requests at the simulator; REFRESH_DELAY_MS=200, REFRESH_CONCURRENCY=4 (default)",
        per_run={"guide": [b["rate"] for b, _pace in base], "lightkeeper": [r.rate for r, _pace in runs]},
    )


def curve(stage_: Stage, options: Options) -> list[Point]:
    stage_.latency(options.latency_ms)
    base_db = stage_.seeded(stage_.sqlite_url(), options.baseline_connections)
    base = [
        b["rate"] for b in report.repeat(options.repeats, "guide, no sleep", lambda: baseline_run(stage_, base_db, 0))
    ]
    return [curve_point(stage_, options, c, base) for c in options.concurrency]


def curve_point(stage_: Stage, options: Options, concurrency: int, base: list[float]) -> Point:
    n = options.curve_connections(concurrency)
    lk_db = stage_.seeded(stage_.sqlite_url(), n)
    settings = {"REFRESH_DELAY_MS": "0", "REFRESH_CONCURRENCY": str(concurrency)}
    runs = report.repeat(
        options.repeats,
        f"lightkeeper, concurrency {concurrency}",
        lambda: lightkeeper_run(stage_, lk_db, n, **settings),
    )
    return Point(
        name=f"no spacing, {options.latency_ms} ms latency, concurrency {concurrency} ({n} connections)",
        unit="refreshes/s",
        baseline=base,
        lightkeeper=[r.rate for r in runs],
        reuse=sum(r.reuse for r in runs),
        note=f"guide: its loop without the sleep ({options.baseline_connections} connections), no concurrency",
    )


@dataclass
class CpuPairs:
    """CPU per refresh of the guide's loop and of lightkeeper, each from its own empty/full pairs."""

    guide: Paired[dict[str, float]]
    lightkeeper: Paired[RunResult]
    lightkeeper_rows: str  # the full table lightkeeper ran over (``bench cpu --profile`` runs it once more)


def cpu_pairs(stage_: Stage, n: int, repeats: int) -> CpuPairs:
    """The one CPU-per-refresh measurement, shared by ``guide`` and ``cpu``: 0 ms latency, no spacing."""
    stage_.latency(0)
    base_db, lk_db = stage_.seeded(stage_.sqlite_url(), n), stage_.seeded(stage_.sqlite_url(), n)
    base_empty, lk_empty = stage_.seeded(stage_.sqlite_url(), 0), stage_.seeded(stage_.sqlite_url(), 0)
    settings = {"REFRESH_DELAY_MS": "0"}
    base = paired(
        repeats,
        "guide",
        n,
        empty=lambda: baseline_run(stage_, base_empty, 0),
        full=lambda: baseline_run(stage_, base_db, 0),
        cpu_s=lambda run: float(run["cpu_s"]),
    )
    ours = paired(
        repeats,
        "lightkeeper",
        n,
        empty=lambda: lightkeeper_run(stage_, lk_empty, 0, **settings),
        full=lambda: lightkeeper_run(stage_, lk_db, n, **settings),
        cpu_s=lambda run: run.child.cpu_s,
    )
    return CpuPairs(base, ours, lk_db)


def cpu(stage_: Stage, options: Options) -> Point:
    n = options.cpu_connections
    pairs = cpu_pairs(stage_, n, options.repeats)
    base, ours = pairs.guide, pairs.lightkeeper
    return Point(
        name=f"CPU per refresh, 0 ms latency, {n} connections",
        unit="ms",
        baseline=base.per_refresh_ms,
        lightkeeper=ours.per_refresh_ms,
        reuse=sum(r.reuse for r in ours.busy),
        note=f"start-up CPU subtracted: guide {base.startup_s:.2f} s, lightkeeper {ours.startup_s:.2f} s; "
        "REFRESH_DELAY_MS=0",
    )


# -- output ---------------------------------------------------------------------------------------------------


def render(points: Sequence[Point]) -> None:
    rows = [
        (
            p.name,
            p.unit,
            f"{report.median(p.baseline):.2f}",
            f"{report.median(p.lightkeeper):.2f}",
            report.times(p.ratio),
            p.reuse,
            p.note,
        )
        for p in points
    ]
    columns = ("measurement", "unit", "guide", "lightkeeper", "lightkeeper / guide", "reuse", "how")
    report.output().print(report.table("lightkeeper beside the guide's design (medians)", columns, rows))


def parse(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench guide", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement, medians shown (default 3)")
    parser.add_argument("--latency-ms", type=int, default=150, help="simulator token latency (default 150)")
    parser.add_argument("--spacing-connections", type=int, default=25, help="rows of the 200 ms runs (default 25)")
    parser.add_argument("--cpu-connections", type=int, default=600, help="rows of the CPU runs (default 600)")
    parser.add_argument("--concurrency", default="1,4,16,64", help="REFRESH_CONCURRENCY values (default 1,4,16,64)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 repeat, fewer rows")
    args = parser.parse_args(argv)
    options = Options(
        repeats=1 if args.quick else max(1, args.repeats),
        latency_ms=args.latency_ms,
        spacing_connections=10 if args.quick else args.spacing_connections,
        baseline_connections=15 if args.quick else 40,
        cpu_connections=200 if args.quick else args.cpu_connections,
        concurrency=[int(part) for part in args.concurrency.split(",") if part.strip()],
    )
    if min(options.concurrency, default=0) < 1 or max(options.concurrency) > 64:
        parser.error("--concurrency takes numbers from 1 to 64, e.g. 1,4,16,64")
    return options


def main(argv: Sequence[str]) -> int:
    options = parse(argv)
    with stage("guide") as stage_:
        points = [spacing(stage_, options), *curve(stage_, options), cpu(stage_, options)]
    render(points)
    report.write_json("guide", {"options": asdict(options), "points": [asdict(p) | {"ratio": p.ratio} for p in points]})
    return 1 if any(p.reuse for p in points) else 0


__all__ = ["Options", "Point", "baseline_run", "main"]
