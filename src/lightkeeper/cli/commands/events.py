"""``events`` (the webhook outbox and each event's delivery) and ``events retry ID`` (send one again now)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from .. import context
from ..output import out, plain, print_json, table, when
from .configure import JsonFlag

if TYPE_CHECKING:
    from ...views import EventView

events_app = typer.Typer(
    help="Webhook events to the host app (NOTIFY_WEBHOOK_URL) and their delivery.", invoke_without_command=True
)

EventState = Literal["pending", "delivered", "dead"]


@events_app.callback()
def events(
    ctx: typer.Context,
    status: Annotated[EventState | None, typer.Option(help="Only events in this delivery state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many events, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List recent webhook events and their delivery state, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from ...views import EventView

    settings = context.settings(context.NONE)
    with context.store(settings) as store:  # the database alone: listing needs no credentials
        views = [EventView.model_validate(record) for record in store.events.list(limit=limit, status=status)]
    if as_json:
        print_json([view.document() for view in views])
        return
    print_events(views)


@events_app.command("retry")
def retry(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="The event's id (evt_…).")],
    as_json: JsonFlag = False,
) -> None:
    """Send one event again now, whatever its state, and say how it went."""
    from ...views import EventView

    with context.keeper() as keeper:
        view = EventView.model_validate(keeper.retry_event(event_id))
    if as_json:
        print_json(view.document())
        return
    if view.status == "delivered" and view.last_error is None:  # a failed resend keeps `delivered`, with its error
        out.print(plain(f"Event {view.id} delivered (attempt {view.attempts})."))
        return
    out.print(plain(f"Event {view.id} not delivered (attempt {view.attempts}): {view.last_error}; now {view.status}."))
    raise typer.Exit(1)


def print_events(views: Sequence[EventView]) -> None:
    """The events as a table: the same views and values as ``events --json``, shortened for people."""
    rows = [view.document() for view in views]
    table(
        "Webhook events",
        ["id", "type", "connection", "status", "attempts", "created_at", "next_attempt_at", "last_error"],
        (
            [
                r["id"],
                r["type"],
                r["connection_id"],
                r["status"],
                r["attempts"],
                when(r["created_at"]),
                when(r["next_attempt_at"]),
                r["last_error"] or "",
            ]
            for r in rows
        ),
        empty="none yet (a connection that expires, errors or recovers writes one)",
    )


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
