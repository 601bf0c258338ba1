"""``python -m bench NAME [options]`` runs one benchmark; ``python -m bench`` lists them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: name -> (module with ``main(argv) -> int``, what it measures)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "replicas": (
        "bench.replicas",
        "one refresh run over N connections on PostgreSQL, shared by 1, 2, 4 `lightkeeper worker` processes",
    ),
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
    module = importlib.import_module(BENCHMARKS[name][0])
    code: int = module.main(rest)
    return code


if __name__ == "__main__":
    sys.exit(main())
