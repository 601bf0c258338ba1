"""Run one command as a child process and account for it alone: CPU seconds, peak RSS, wall time.

CPU: ``os.wait4`` returns the child's own ``rusage``, not summed with other children. Peak RSS: *not*
``ru_maxrss``, which Linux carries over from the forking parent (the high-water mark of the parent's memory,
copied at fork and kept across exec): a bench process holding 50,000 simulator accounts would show up as
the child's peak. Instead ``VmHWM`` from ``/proc/<pid>/status``, the high-water mark of the memory the
program got after exec, read every 10 ms while it runs (it only grows, so the last reading is the peak up to
the last 10 ms). The simulator runs in the bench process, so its CPU and memory are never counted here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChildResult:
    returncode: int
    cpu_s: float  # user + system
    max_rss_mb: float
    wall_s: float
    stdout: str
    stderr: str

    def check(self, what: str) -> ChildResult:
        """Itself, or ``RuntimeError`` with the tail of its stderr when it failed."""
        if self.returncode != 0:
            tail = "\n".join(self.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"{what} exited {self.returncode}:\n{tail}")
        return self


def lightkeeper_command() -> list[str]:
    """The installed ``lightkeeper`` console script beside this interpreter."""
    return [shutil.which("lightkeeper", path=os.path.dirname(sys.executable)) or "lightkeeper"]


def base_env() -> dict[str, str]:
    """The minimum a child needs from ours: no stray settings from the shell leak into a measurement."""
    keep = ("PATH", "HOME", "PYTHONPATH", "LANG")
    return {name: os.environ[name] for name in keep if os.environ.get(name)}


def run_child(argv: Sequence[str], env: Mapping[str, str], *, timeout_s: float = 900.0) -> ChildResult:
    """Run ``argv`` to its end; its output goes to temporary files so a full pipe never stalls it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        status, usage, peak_kb = _wait(process, timeout_s)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return ChildResult(
            returncode=status,
            cpu_s=usage.ru_utime + usage.ru_stime,
            max_rss_mb=peak_kb / 1024,
            wall_s=wall,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def _wait(process: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, os.struct_rusage, int]:
    """The child's exit code, rusage and peak RSS in kB (its ``VmHWM``, polled until it exits)."""
    deadline, peak_kb = time.monotonic() + timeout_s, 0
    while True:
        peak_kb = max(peak_kb, high_water_kb(process.pid))
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
            return process.returncode, usage, peak_kb
        if time.monotonic() > deadline:
            process.send_signal(signal.SIGKILL)
            _pid, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage, peak_kb
        time.sleep(0.01)


def high_water_kb(pid: int) -> int:
    """``VmHWM`` of a live process in kB; 0 once it has exited (a zombie has no memory left to report)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def workdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"lk-bench-{prefix}-")


def file_url(directory: str | Path, name: str = "bench.db") -> str:
    return f"sqlite:///{Path(directory) / name}"


__all__ = ["ChildResult", "base_env", "file_url", "high_water_kb", "lightkeeper_command", "run_child", "workdir"]
