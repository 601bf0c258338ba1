"""``refresh`` (one run, now) and ``runs`` (the job history)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import context
from ..output import err, out, print_json, table, when
from .configure import JsonFlag

if TYPE_CHECKING:
    from ...keeper import Keeper
    from ...refresh import ProgressCallback
    from ...store import RunRecord
    from ...views import RunView


def refresh(
    all_: Annotated[bool, typer.Option("--all", help="Refresh every connected or failing connection.")] = False,
    connection: Annotated[int | None, typer.Option("--connection", help="Refresh this connection only.")] = None,
    due: Annotated[
        bool,
        typer.Option(
            "--due",
            help="With --all: only connections last refreshed more than REFRESH_DUE_AFTER seconds ago, as automatic "
            "runs do (every connection when it is 0).",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run a token refresh now and record it (trigger: manual)."""
    if all_ == (connection is not None):
        raise typer.BadParameter("give either --all or --connection ID")
    if due and not all_:
        raise typer.BadParameter("--due goes with --all")
    from ...views import REFRESH_FIELDS, RunView

    with context.keeper() as keeper:
        run = run_with_progress(keeper, connection, show=not as_json, due=due)
    if as_json:
        print_json(RunView.model_validate(run).document(include=REFRESH_FIELDS))
        return
    _print_run(run)


def run_with_progress(keeper: Keeper, connection: int | None, *, show: bool, due: bool = False) -> RunRecord:
    from ...store import Trigger

    total = 1 if connection is not None else keeper.refreshable_count(due=due)
    stop = threading.Event()
    with _progress(total, show=show) as advance, graceful_stop(stop.set):
        return keeper.refresh(trigger=Trigger.MANUAL, connection_id=connection, progress=advance, due=due, stop=stop)


#: What the first signal says will happen (``refresh``; ``worker`` says its own).
SAVING = "Refreshes in flight finish and are saved; nothing new starts"
#: What a second Ctrl-C (or SIGTERM) says as it quits without waiting.
QUIT_AT_ONCE = (
    "Quit at once. A refresh that was in flight may have been granted by Lightspeed and not saved: the next run "
    "presents the old refresh token again, which R-Series' grace window accepts while the lost pair is unused; "
    "an X-Series store has no grace window, so such a connection goes expired and its merchant must reconnect."
)


@contextmanager
def graceful_stop(stop: Callable[[], None], *, saving: str = SAVING) -> Iterator[None]:
    """SIGINT and SIGTERM stop gracefully (``stop()``, once): nothing new starts, refreshes in flight finish and
    are saved (``saving`` says so). A second one quits at once (exit 130), saying what may be left to the grace
    window. ``refresh`` and ``worker`` stop this way alike.

    Without this, the event loop's own Ctrl-C handling cancelled requests in flight: Lightspeed had rotated
    those refresh tokens, the pairs were lost, and the next run presented the old tokens again."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers; a caller elsewhere manages its own
        return
    signalled = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        if signalled.is_set():
            err.print(QUIT_AT_ONCE, markup=False)
            os._exit(130)
        signalled.set()
        stop()
        name = signal.Signals(signum).name
        err.print(f"{name}: stopping. {saving}. {name} again to quit at once.", markup=False)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _progress(total: int, *, show: bool) -> Iterator[ProgressCallback]:
    if not show:
        yield lambda _outcome: None
        return
    columns = (TextColumn("refreshing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("refresh", total=total)
        yield lambda _outcome: bar.advance(task)


def _print_run(run: RunRecord) -> None:
    colour = "green" if run.errors == 0 and run.expired == 0 else "yellow"
    out.print(
        f"[{colour}]Run {run.id} {run.status.value}[/]: {run.total} connections, {run.refreshed} refreshed, "
        f"{run.expired} expired, {run.errors} errors, {run.skipped} skipped"
    )
    if run.expired:
        out.print("Expired connections need their merchant to reconnect: see `lightkeeper status --status expired`.")


def runs(
    as_json: JsonFlag = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many runs, newest first.")] = 20,
) -> None:
    """Show the job history (scheduled and manual runs alike)."""
    from ...refresh import stale_after_s
    from ...views import RunView

    settings = context.settings(context.NONE)
    with context.store(settings) as store:
        stale_after = timedelta(seconds=stale_after_s(settings.run_heartbeat_s))
        store.runs.interrupt_stale(stale_after=stale_after)
        views = [RunView.model_validate(run) for run in store.runs.list(limit=limit)]
    if as_json:
        print_json([view.document() for view in views])
        return
    print_runs(views)


def print_runs(views: Sequence[RunView]) -> None:
    """The runs as a table: the same views and values as ``runs --json``, shortened for people."""
    rows = [view.document() for view in views]
    table(
        "Refresh runs",
        [
            "run_id",
            "trigger",
            "status",
            "started_at",
            "finished_at",
            "total",
            "refreshed",
            "expired",
            "errors",
            "skipped",
            "message",
        ],
        (
            [
                r["run_id"],
                r["trigger"],
                r["status"],
                when(r["started_at"]),
                when(r["finished_at"]),
                r["total"],
                r["refreshed"],
                r["expired"],
                r["errors"],
                r["skipped"],
                r["message"] or "",
            ]
            for r in rows
        ),
        empty="none yet (start one with `lightkeeper refresh --all`)",
    )


def register(app: typer.Typer) -> None:
    app.command("refresh")(refresh)
    app.command("runs")(runs)
