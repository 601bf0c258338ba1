"""How the CLI prints: one JSON document on stdout with ``--json``, Rich tables for people otherwise.

Errors and progress go to stderr so that stdout stays parseable. Values come from outside (user ids from
the host app, account names from the merchant's Lightspeed, error texts): they are printed as plain
``Text``, never parsed as Rich markup, and their control characters are escaped, so a value can neither
crash a command, plant a terminal link, nor repaint the terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..logs import escape_controls

# Piped output is not squeezed into 80 columns: tables stay one row per record for grep and logs.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def plain(value: Any) -> Text:
    """``value`` as text that Rich prints literally (no markup) with control characters escaped."""
    return Text("" if value is None else escape_controls(str(value)))


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", plain(message)))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "none") -> None:
    rows = list(rows)
    if not rows:
        out.print(plain(f"{title}: {empty}"))
        return
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(plain(cell) for cell in row))
    out.print(grid)


def when(value: str | None) -> str:
    """A view's timestamp as tables show it: 2026-01-01T06:00:00Z → 2026-01-01 06:00:00Z; none → "-"."""
    if not value:
        return "-"
    return value[:19].replace("T", " ") + "Z"


__all__ = ["err", "error", "out", "plain", "print_json", "table", "when"]
