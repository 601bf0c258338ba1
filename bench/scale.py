"""Memory and time stay flat with size: one ``lightkeeper refresh --all`` over a small and a large table.

For each database (SQLite, PostgreSQL) and each size, a fresh database is bulk-seeded (``bench.bulk``: real
``TokenCipher`` ciphertexts bound to their rows, inserted in chunks, the simulator's accounts made in one
call), then one ``lightkeeper refresh --all`` child runs over it: 0 ms token latency, ``REFRESH_DELAY_MS=0``,
so the run is as fast as the code allows and any cost that grows with the table shows. The two sizes' runs
alternate (``compare``). Measured: the child's peak RSS (``VmHWM``) and time per connection (the run record's
``finished_at - started_at`` / N), medians.

Limits (issue 12): peak RSS ≤ 150 MB; the large size's peak RSS at most 10% above the small one's, its time
per connection at most 15% above (one-sided: being cheaper per connection at size is not a failure).

    python -m bench scale [--sizes 2000,5000] [--large] [--databases sqlite,postgresql] [--repeats 3]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from . import report
from .replicas import fresh_database
from .stage import RunResult, Stage, lightkeeper_run, stage

RSS_LIMIT_MB = 150.0
RSS_GROWTH = 0.10
TIME_GROWTH = 0.15
DATABASES = ("sqlite", "postgresql")


@dataclass
class Options:
    sizes: list[int] = field(default_factory=lambda: [2000, 5000])
    databases: list[str] = field(default_factory=lambda: list(DATABASES))
    repeats: int = 3
    concurrency: int = 4


@dataclass
class Size:
    database: str
    connections: int
    peak_rss_mb: list[float]
    ms_per_connection: list[float]
    cpu_s: list[float]
    reuse: int

    @property
    def rss(self) -> float:
        return report.median(self.peak_rss_mb)

    @property
    def per_connection(self) -> float:
        return report.median(self.ms_per_connection)


@dataclass
class Comparison:
    small: Size
    large: Size

    @property
    def rss_ratio(self) -> float:
        return report.ratio(self.large.rss, self.small.rss)

    @property
    def time_ratio(self) -> float:
        return report.ratio(self.large.per_connection, self.small.per_connection)

    def verdicts(self) -> list[str]:
        db, small, large = self.small.database, self.small.connections, self.large.connections
        peak = max(self.small.rss, self.large.rss)
        return [
            report.verdict(f"{db} peak RSS", peak <= RSS_LIMIT_MB, f"{peak:.0f} MB (limit {RSS_LIMIT_MB:.0f} MB)"),
            report.verdict(
                f"{db} RSS {large} vs {small}",
                self.rss_ratio <= 1 + RSS_GROWTH,
                f"{self.rss_ratio:.3f}x (limit {1 + RSS_GROWTH:.2f}x)",
            ),
            report.verdict(
                f"{db} time per connection {large} vs {small}",
                self.time_ratio <= 1 + TIME_GROWTH,
                f"{self.time_ratio:.3f}x (limit {1 + TIME_GROWTH:.2f}x)",
            ),
        ]


@contextmanager
def database(stage_: Stage, kind: str) -> Iterator[str]:
    """A fresh, empty database of ``kind``, dropped afterwards (a SQLite file goes with the stage)."""
    if kind == "sqlite":
        yield stage_.sqlite_url()
        return
    with fresh_database() as url:
        yield url


def compare(stage_: Stage, options: Options, kind: str) -> Comparison:
    """Both sizes seeded first, then their runs in alternation (small, large, small, large …).

    This machine's CPU speed drifts by up to half from one minute to the next (see ``bench.paired``): all the
    small runs first and all the large ones minutes later compared two speeds of the machine, not two sizes.
    """
    small, large = min(options.sizes), max(options.sizes)
    settings = {"REFRESH_DELAY_MS": "0", "REFRESH_CONCURRENCY": str(options.concurrency)}
    with database(stage_, kind) as small_url, database(stage_, kind) as large_url:
        for url, connections in ((small_url, small), (large_url, large)):
            report.note(f"{kind}: seeding {connections} connections")
            stage_.seeded(url, connections)
        pairs = report.repeat(
            options.repeats,
            f"{kind}: {small}, then {large} connections",
            lambda: (
                lightkeeper_run(stage_, small_url, small, **settings),
                lightkeeper_run(stage_, large_url, large, **settings),
            ),
        )
    return Comparison(_size(kind, small, [pair[0] for pair in pairs]), _size(kind, large, [pair[1] for pair in pairs]))


def _size(kind: str, connections: int, runs: list[RunResult]) -> Size:
    return Size(
        database=kind,
        connections=connections,
        peak_rss_mb=[r.child.max_rss_mb for r in runs],
        ms_per_connection=[r.run_s / connections * 1000 for r in runs],
        cpu_s=[r.child.cpu_s for r in runs],
        reuse=sum(r.reuse for r in runs),
    )


def measure(stage_: Stage, options: Options) -> list[Comparison]:
    stage_.latency(0)
    return [compare(stage_, options, kind) for kind in options.databases]


def render(options: Options, comparisons: Sequence[Comparison]) -> list[str]:
    rows = []
    for c in comparisons:
        for size in (c.small, c.large):
            rows.append(
                (
                    size.database,
                    size.connections,
                    f"{size.rss:.0f}",
                    f"{size.per_connection:.3f}",
                    f"{report.median(size.cpu_s):.1f}",
                    size.reuse,
                )
            )
        rows.append(
            (f"{c.small.database}: large / small", "", report.times(c.rss_ratio), report.times(c.time_ratio), "", "")
        )
    title = (
        f"lightkeeper refresh --all at two sizes, 0 ms latency, REFRESH_DELAY_MS=0, "
        f"REFRESH_CONCURRENCY={options.concurrency}, median of {options.repeats}"
    )
    columns = ("database", "connections", "peak RSS MB", "ms / connection", "child CPU s", "reuse")
    out = report.output()
    out.print(report.table(title, columns, rows))
    lines = [line for c in comparisons for line in c.verdicts()]
    for line in lines:
        out.print(line, markup=False)
    return lines


def parse(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,5000", help="the two sizes (default 2000,5000)")
    parser.add_argument("--large", action="store_true", help="sizes 5000,50000 (about 10 minutes)")
    parser.add_argument("--databases", default=",".join(DATABASES), help="sqlite, postgresql or both (default)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size, median (default 3)")
    parser.add_argument("--concurrency", type=int, default=4, help="REFRESH_CONCURRENCY (default 4)")
    args = parser.parse_args(argv)
    sizes = [5000, 50000] if args.large else [int(part) for part in args.sizes.split(",") if part.strip()]
    databases = [part.strip() for part in args.databases.split(",") if part.strip()]
    if len(sizes) != 2 or min(sizes) < 1:
        parser.error("--sizes takes two numbers >= 1, e.g. 2000,5000")
    if not databases or set(databases) - set(DATABASES):
        parser.error("--databases takes sqlite, postgresql or both")
    # Three runs even at 50,000: one run can land on a slow minute of this machine's CPU (see bench/paired.py).
    return Options(sizes=sizes, databases=databases, repeats=max(1, args.repeats), concurrency=args.concurrency)


def main(argv: Sequence[str]) -> int:
    options = parse(argv)
    with stage("scale") as stage_:
        comparisons = measure(stage_, options)
    lines = render(options, comparisons)
    payload = {
        "options": asdict(options),
        "limits": {"rss_mb": RSS_LIMIT_MB, "rss_growth": RSS_GROWTH, "time_growth": TIME_GROWTH},
        "comparisons": [asdict(c) | {"rss_ratio": c.rss_ratio, "time_ratio": c.time_ratio} for c in comparisons],
        "verdicts": lines,
    }
    report.write_json("scale", payload)
    return 1 if any(c.small.reuse or c.large.reuse for c in comparisons) else 0


__all__ = ["Comparison", "Options", "Size", "main", "measure"]
