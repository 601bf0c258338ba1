"""Every CLI command, each module owning one group."""

from __future__ import annotations

import typer

from . import configure, connections, database, demo, events, keys, runs, schedule, serve, stock


def register(app: typer.Typer) -> None:
    for module in (configure, keys, database, connections, runs, events, schedule, stock, serve, demo):
        module.register(app)


__all__ = ["register"]
