"""The image's HEALTHCHECK: asks the process the container runs (PID 1) whether it is well.

``serve`` answers ``/healthz`` on its ``--port`` (200 when the database and the scheduler loop are fine, 503
naming what is not); a ``worker`` with ``--metrics-port N`` answers ``/metrics`` there. Any other command (or a
worker without a fixed metrics port) is healthy while it runs. Stdlib only: the image has no curl.
"""

import sys
import urllib.request


def _option(args: list[str], name: str, default: str | None) -> str | None:
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def main() -> int:
    with open("/proc/1/cmdline", "rb") as handle:
        args = [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    if "serve" in args:
        url = f"http://127.0.0.1:{_option(args, '--port', '8000')}/healthz"
    elif "worker" in args and _option(args, "--metrics-port", "0") not in ("0", None):
        url = f"http://127.0.0.1:{_option(args, '--metrics-port', None)}/metrics"
    else:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except Exception as exc:  # 503 included: say why, for `podman inspect` / `docker inspect`
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
