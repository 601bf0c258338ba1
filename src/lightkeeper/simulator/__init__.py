"""A Lightspeed R-Series simulator: OAuth (code + rotating refresh tokens), a tiny API, fault knobs; and beside
it, on the same server under ``/x``, an X-Series (formerly Vend) one (``xseries_routes.py``).

It stands apart from the rest of lightkeeper (imports nothing from it) so it can exercise the real
client code over real HTTP, in tests and in demos (``lightkeeper simulate``).
"""

from __future__ import annotations

from lightkeeper.simulator.app import create_app
from lightkeeper.simulator.config import SimulatorConfig
from lightkeeper.simulator.control import SimulatorControl
from lightkeeper.simulator.server import SimulatorServer, serve

__all__ = ["SimulatorConfig", "SimulatorControl", "SimulatorServer", "create_app", "serve"]
