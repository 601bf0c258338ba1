"""What every benchmark prints and keeps: a Rich table on stdout, a JSON file in ``bench-results/``, ratios, medians."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

#: Where ``write_json`` puts results (gitignored); ``BENCH_RESULTS_DIR`` moves it.
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR", "bench-results"))

T = TypeVar("T")

#: Progress notes go to stderr so a piped stdout holds only the tables.
progress = Console(stderr=True)


def output() -> Console:
    """stdout; piped to a file, wide enough that a table keeps one line a row."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def note(text: str) -> None:
    progress.print(f"[dim]{text}[/]")


def repeat(times: int, what: str, run: Callable[[], T]) -> list[T]:
    """``run()`` ``times`` times, saying which one is going (on stderr)."""
    samples = []
    for number in range(times):
        note(f"{what} ({number + 1}/{times})")
        samples.append(run())
    return samples


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


def ratio(value: float, base: float) -> float:
    """``value / base``, 0 when there is no base to compare with."""
    return value / base if base else 0.0


def times(value: float) -> str:
    return f"{value:.2f}x" if value else "-"


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    """A right-aligned table (the first column left-aligned: it names the row)."""
    result = Table(title=title, title_justify="left")
    for number, name in enumerate(columns):
        result.add_column(name, justify="left" if number == 0 else "right")
    for row in rows:
        result.add_row(*(str(cell) for cell in row))
    return result


def machine() -> dict[str, Any]:
    """What the numbers were measured on; a busy host makes them noisy, so its load is kept too."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m": round(load[0], 2),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """``bench-results/<name>.json`` with the payload and the machine it was measured on."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2, default=str) + "\n")
    note(f"wrote {path}")
    return path


def verdict(label: str, met: bool, detail: str) -> str:
    return f"{'PASS' if met else 'FAIL'} {label}: {detail}"


__all__ = [
    "RESULTS_DIR",
    "machine",
    "median",
    "note",
    "output",
    "progress",
    "ratio",
    "repeat",
    "table",
    "times",
    "verdict",
    "write_json",
]
