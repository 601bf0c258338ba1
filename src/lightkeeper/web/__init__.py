"""The HTTP side of lightkeeper: FastAPI app and the uvicorn runners."""

from __future__ import annotations

from .app import create_app
from .server import BackgroundServer, bind, run

__all__ = ["BackgroundServer", "bind", "create_app", "run"]
