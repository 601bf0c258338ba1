"""The ``lightkeeper`` command line."""

from __future__ import annotations

from .app import app, main, run

__all__ = ["app", "main", "run"]
