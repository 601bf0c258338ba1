"""``python -m bench NAME [options]`` runs one benchmark; ``python -m bench all`` runs every one in turn;
``python -m bench`` lists them."""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Sequence

#: name -> (module with ``main(argv) -> int``, or ``module:function``, what it measures)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "replicas": (
        "bench.replicas",
        "one refresh run over N connections on PostgreSQL, shared by 1, 2, 4 `lightkeeper worker` processes",
    ),
    "tokens": ("bench.tokens_stock:tokens_main", "fresh_token p50/p99 in-process and over HTTP vs the floor"),
    "stock": ("bench.tokens_stock:stock_main", "a stock batch against the leaky bucket, paced vs naive"),
    "guide": ("bench.guide", "lightkeeper beside the seed guide's loop (authlib): spacing, concurrency curve, CPU"),
    "cpu": ("bench.cpu", "CPU per refresh and refreshes/s at concurrency 64 of a `lightkeeper refresh --all`"),
    "scale": ("bench.scale", "peak RSS and time per connection of a run at two sizes, SQLite and PostgreSQL"),
    "fleet": ("bench.fleet", "refresh policies simulated for 10k-1M connections over 7 days (no network)"),
    "proxy": (
        "bench.proxy",
        "the API proxy: added latency, requests/s of one `serve`, two `serve` processes pacing one account",
    ),
}

#: What ``all`` runs, in order, with its arguments: default sizes, except ``stock``, whose defaults alone take
#: about 12 minutes (300 rows drained at 1 request/s, twice); ``--quick`` keeps its comparison at 100 rows.
ALL: list[tuple[str, list[str]]] = [
    ("fleet", []),
    ("guide", []),
    ("cpu", []),
    ("scale", []),
    ("replicas", []),
    ("tokens", []),
    ("stock", ["--quick"]),
    ("proxy", []),
]


def usage() -> str:
    lines = ["usage: python -m bench NAME [options]   (NAME --help for its options)", "", "benchmarks:"]
    lines += [f"  {name:<10} {about}" for name, (_module, about) in BENCHMARKS.items()]
    lines += [f"  {'all':<10} every one above in turn at its default size (stock with --quick)"]
    return "\n".join(lines)


def run_one(name: str, argv: Sequence[str]) -> int:
    module_name, _, function = BENCHMARKS[name][0].partition(":")
    module = importlib.import_module(module_name)
    code: int = getattr(module, function or "main")(list(argv))
    return code


def run_all() -> int:
    """Each benchmark in turn; one that fails is reported and the rest still run."""
    results: list[tuple[str, int, float]] = []
    for name, argv in ALL:
        print(f"\n=== {name} {' '.join(argv)}".rstrip(), flush=True)
        started = time.monotonic()
        try:
            code = run_one(name, argv)
        except Exception:
            traceback.print_exc()
            code = 1
        results.append((name, code, time.monotonic() - started))
    print("\n=== summary")
    for name, code, seconds in results:
        print(f"  {name:<10} {'ok' if code == 0 else f'exit {code}':<8} {seconds:7.1f} s")
    print(f"  {'total':<10} {'':<8} {sum(s for _n, _c, s in results):7.1f} s")
    return max((code for _n, code, _s in results), default=0)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "list"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name == "all":
        return run_all()
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_one(name, rest)


if __name__ == "__main__":
    sys.exit(main())
