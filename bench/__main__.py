"""``python -m bench NAME [options]`` runs one benchmark; ``python -m bench`` lists them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: name -> (module with ``main(argv) -> int``, or ``module:function``, what it measures)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "replicas": (
        "bench.replicas",
        "one refresh run over N connections on PostgreSQL, shared by 1, 2, 4 `lightkeeper worker` processes",
    ),
    "tokens": ("bench.tokens_stock:tokens_main", "fresh_token p50/p99 in-process and over HTTP vs the floor"),
    "stock": ("bench.tokens_stock:stock_main", "a stock batch against the leaky bucket, paced vs naive"),
}


def usage() -> str:
    lines = ["usage: python -m bench NAME [options]   (NAME --help for its options)", "", "benchmarks:"]
    lines += [f"  {name:<10} {about}" for name, (_module, about) in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "list"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, function = BENCHMARKS[name][0].partition(":")
    module = importlib.import_module(module_name)
    code: int = getattr(module, function or "main")(rest)
    return code


if __name__ == "__main__":
    sys.exit(main())
