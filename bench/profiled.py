"""Run a Python script under cProfile in every thread (CPU time, not wall), and save one merged profile.

``python -m cProfile`` sees the main thread only, but a refresh run does its work in a thread pool; here
each thread started while the script runs gets its own profiler, and all of them are merged at the end.
``--memory`` instead traces allocations (tracemalloc) and prints, at the end, the peak and the lines that
still hold the most memory: what grows with the number of connections shows there.

    python -m bench.profiled OUT.prof SCRIPT [ARGS...]
    python -m bench.profiled --memory SCRIPT [ARGS...]
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import sys
import threading
import time
import tracemalloc
from collections.abc import Sequence

_profiles: list[cProfile.Profile] = []
_original_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    profile = cProfile.Profile(time.thread_time)
    _profiles.append(profile)
    profile.enable()
    try:
        _original_run(self)
    finally:
        profile.disable()


def trace_memory(script: str, top: int = 15) -> int:
    """Run ``script`` with tracemalloc on; print its peak and the ``top`` lines holding the most at the end."""
    tracemalloc.start(8)
    code = _run(script)
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    print(f"traced: {current / 2**20:.1f} MiB held at the end, {peak / 2**20:.1f} MiB at the peak", file=sys.stderr)
    for stat in snapshot.statistics("traceback")[:top]:
        print(f"{stat.size / 2**20:8.2f} MiB in {stat.count:7} blocks", file=sys.stderr)
        for line in stat.traceback.format(limit=4):
            print(f"    {line}", file=sys.stderr)
    return code


def _run(script: str) -> int:
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "--memory":
        sys.argv = args[1:]
        return trace_memory(args[1])
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out, script = args[0], args[1]
    sys.argv = [script, *args[2:]]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    main_profile = cProfile.Profile(time.thread_time)
    _profiles.append(main_profile)
    main_profile.enable()
    try:
        code = _run(script)
    finally:
        main_profile.disable()
        stats = pstats.Stats(main_profile)
        for profile in _profiles[1:]:
            stats.add(profile)
        stats.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
