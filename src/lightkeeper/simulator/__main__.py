"""``python -m lightkeeper.simulator``: serve the simulator in the foreground."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lightkeeper.simulator.config import SimulatorConfig
from lightkeeper.simulator.server import DEFAULT_PORT, serve


def build_parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m lightkeeper.simulator", description="Run the Lightspeed R-Series simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--client-id", default=defaults.client_id)
    parser.add_argument("--client-secret", default=defaults.client_secret)
    parser.add_argument("--redirect-uri", default=None, help="registered redirect URI (default: accept the one sent)")
    parser.add_argument("--token-latency-ms", type=int, default=defaults.token_latency_ms)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = SimulatorConfig(
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uri=args.redirect_uri,
        token_latency_ms=args.token_latency_ms,
    )
    serve(config, args.host, args.port)


if __name__ == "__main__":
    main()
