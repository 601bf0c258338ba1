"""``rotate-key``: every stored secret re-encrypted under ``TOKEN_ENCRYPTION_KEY``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import context
from ..output import err, out, plain, print_json
from .configure import JsonFlag

if TYPE_CHECKING:
    from ...rotation import ProgressCallback, RotationSummary

#: Exit code when something was left under another key (run again once the reason is fixed).
LEFT_BEHIND = 2


def rotate_key(
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows read per batch.")] = 100,
    wait: Annotated[
        float, typer.Option("--wait", min=0, help="Seconds to keep trying rows a refresh holds, at the end.")
    ] = 30.0,
    pause: Annotated[
        float, typer.Option("--pause", min=0, help="Seconds to rest between batches, to spare a busy database.")
    ] = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Re-encrypt every stored secret under TOKEN_ENCRYPTION_KEY (old keys in TOKEN_ENCRYPTION_OLD_KEYS still
    decrypt). Safe while workers run, and to run again: an interrupted rotation resumes. Exit 2 if anything
    was left under another key."""
    from ...views import RotationView

    with context.keeper() as keeper, _progress(show=not as_json) as progress:
        summary = keeper.rotate_keys(
            batch_size=batch_size,
            progress=progress,
            wait=timedelta(seconds=wait),
            pause=timedelta(seconds=pause),
        )
    if as_json:
        print_json(RotationView.model_validate(summary).document())
    else:
        _print_summary(summary)
    if not summary.complete:
        raise typer.Exit(LEFT_BEHIND)


@contextmanager
def _progress(*, show: bool) -> Iterator[ProgressCallback | None]:
    """A bar on a terminal, a line per batch otherwise (logs keep them), nothing with ``--json``."""
    if not show:
        yield None
        return
    if not err.is_terminal:
        yield lambda done, total: err.print(plain(f"rotate-key: {done} of {total} handled"))
        return
    columns = (TextColumn("re-encrypting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("rotate", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _print_summary(summary: RotationSummary) -> None:
    out.print(
        plain(
            f"Key {summary.primary_key_id}: {summary.reencrypted} connection(s) and {summary.verifiers} PKCE "
            f"verifier(s) re-encrypted, {summary.already_current} already under it."
        )
    )
    if summary.complete:
        out.print(
            "[green]Every stored secret is under the primary key.[/] Once every process runs with this "
            "TOKEN_ENCRYPTION_KEY, the old keys can be removed from TOKEN_ENCRYPTION_OLD_KEYS."
        )
        return
    for problem in summary.problems:
        out.print(plain(f"left: {problem}."), style="yellow")


def register(app: typer.Typer) -> None:
    app.command("rotate-key")(rotate_key)
