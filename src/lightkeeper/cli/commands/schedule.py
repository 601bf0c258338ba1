"""``worker``, ``schedule show|set|pause|resume|use-pg-cron|use-embedded`` and ``db install-sql``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from .. import context
from ..output import err, out, plain, print_json, when
from .configure import JsonFlag
from .database import db
from .runs import graceful_stop

if TYPE_CHECKING:
    from ...scheduler.schedule import ScheduleService, ScheduleState

schedule_app = typer.Typer(help="The refresh job's schedule (the guide's cron.job).", no_args_is_help=True)


def worker(
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (0: any free port).")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface of the metrics server.")] = "127.0.0.1",
) -> None:
    """Run the scheduler only: ticks, queued requests, shared runs. SIGTERM stops it gracefully; a second
    SIGTERM (or Ctrl-C) quits at once (exit 130)."""
    from ...scheduler import Worker

    with context.keeper(auto_create=True, daemon=True) as keeper:
        running = Worker(keeper)
        keeper.watch_scheduler(running.liveness)
        # As ``refresh --all`` stops: the first signal lets refreshes in flight finish, a second quits at once.
        with graceful_stop(running.request_stop, saving=HANDING_BACK), _metrics_server(metrics_host, metrics_port):
            err.print(f"lightkeeper worker {keeper.owner} running; Ctrl-C or SIGTERM stops it")
            keeper.start_notifier()  # webhook alerts, when NOTIFY_WEBHOOK_URL is set
            running.run_forever()
            keeper.stop_notifier()  # may finish a webhook attempt: a second signal meanwhile still quits at once


#: What a worker's first signal says will happen (``graceful_stop``).
HANDING_BACK = (
    "Refreshes in flight finish and are saved; nothing new starts, and the rest of a run is left to the other "
    "workers (or the next one to start)"
)


@contextmanager
def _metrics_server(host: str, port: int | None) -> Iterator[None]:
    """``/metrics`` of this process on ``host:port`` while the worker runs (nothing without a port)."""
    if port is None:
        yield
        return
    from ...errors import ConfigError
    from ...metrics import serve_metrics

    try:
        url, stop = serve_metrics(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    err.print(plain(f"metrics on {url}"))
    try:
        yield
    finally:
        stop()


@contextmanager
def _schedule() -> Iterator[ScheduleService]:
    """The schedule service on the database alone: these commands need no credentials or key."""
    from ...clock import utcnow
    from ...scheduler.schedule import ScheduleService

    settings = context.settings(context.NONE)
    with context.store(settings) as store:
        yield ScheduleService(store, clock=utcnow, default_schedule=settings.refresh_schedule)


def _print(state: ScheduleState, as_json: bool) -> None:
    from ...views import ScheduleView

    view = ScheduleView.model_validate(state)
    document = view.document()
    if as_json:
        print_json(document)
        return
    active = "active" if view.active else "paused"
    out.print(f"{view.job_name}: '{view.schedule}' (UTC), {active}, ticked by {view.owner}", markup=False)
    out.print(f"next run: {when(document['next_run_at'])}", markup=False)
    if view.note:
        out.print(view.note, markup=False)


@schedule_app.command("show")
def show(as_json: JsonFlag = False) -> None:
    """Job name, cron expression, active, who ticks it, next run."""
    with _schedule() as schedule:
        _print(schedule.show(), as_json)


@schedule_app.command("set")
def set_(
    cron: Annotated[str, typer.Argument(help="5-field cron, UTC, e.g. '0 */3 * * *'.")], as_json: JsonFlag = False
) -> None:
    """Change the schedule (running workers pick it up within a poll interval)."""
    with _schedule() as schedule:
        _print(schedule.set(cron), as_json)


@schedule_app.command("pause")
def pause(as_json: JsonFlag = False) -> None:
    """Stop ticking until `schedule resume` (the guide's cron.unschedule)."""
    with _schedule() as schedule:
        _print(schedule.pause(), as_json)


@schedule_app.command("resume")
def resume(as_json: JsonFlag = False) -> None:
    """Tick again from the next scheduled time."""
    with _schedule() as schedule:
        _print(schedule.resume(), as_json)


@schedule_app.command("use-pg-cron")
def use_pg_cron(as_json: JsonFlag = False) -> None:
    """Let pg_cron tick the job with SELECT refresh_lightspeed_tokens(); (PostgreSQL with pg_cron)."""
    with _schedule() as schedule:
        _print(schedule.use_pg_cron(), as_json)


@schedule_app.command("use-embedded")
def use_embedded(as_json: JsonFlag = False) -> None:
    """Take the job back from pg_cron: lightkeeper's own schedulers tick it."""
    with _schedule() as schedule:
        _print(schedule.use_embedded(), as_json)


@db.command("install-sql")
def install_sql() -> None:
    """Create refresh_lightspeed_tokens() in PostgreSQL (SELECT it to queue a run)."""
    from ...store import pgcron

    with context.store(context.settings(context.NONE)) as store:
        pgcron.install_function(store.engine)
    out.print("Installed refresh_lightspeed_tokens(); `SELECT refresh_lightspeed_tokens();` queues a run.")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.add_typer(schedule_app, name="schedule")
