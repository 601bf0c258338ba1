"""``status`` (the seed guide's connection query) and ``connect-link``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from .. import context
from ..output import out, plain, print_json, table, when
from .configure import JsonFlag

if TYPE_CHECKING:
    from ...views import ConnectionView


def status(
    as_json: JsonFlag = False,
    user: Annotated[str | None, typer.Option(help="Only this host-app user.")] = None,
    state: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
) -> None:
    """Show every connection: status, token expiry, last refresh, last error."""
    from ...views import ConnectionView

    with context.store(context.settings(context.NONE)) as store:
        views = [ConnectionView.model_validate(record) for record in store.connections.iter(user_id=user, status=state)]
    if as_json:
        print_json([view.document() for view in views])
        return
    print_connections(views)


def print_connections(views: Sequence[ConnectionView]) -> None:
    """The connections as a table: the same views and values as ``status --json``, shortened for people."""
    rows = [view.document() for view in views]
    table(
        "Lightspeed connections",
        ["id", "user_id", "provider", "status", "account", "token_expires_at", "last_token_refresh_at", "last_error"],
        (
            [
                r["id"],
                r["user_id"],
                r["provider"],
                r["status"],
                f"{r['account_name'] or '-'} ({r['account_id']})",
                when(r["token_expires_at"]),
                when(r["last_token_refresh_at"]),
                r["last_error"] or "",
            ]
            for r in rows
        ),
        empty="none yet (hand a merchant a link from `lightkeeper connect-link --user USER`)",
    )


def connect_link(
    user: Annotated[str, typer.Option("--user", help="The host app's user id.")],
    label: Annotated[
        str | None, typer.Option(help="Whose store, as the link's confirm page says it (default: the user id).")
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(help="r-series or x-series (default: the only one configured, else r-series)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a one-time URL (valid 1 hour) that connects USER's Lightspeed account."""
    from ...views import ConnectLinkView

    with context.keeper(context.NONE) as keeper:
        link = ConnectLinkView.model_validate(keeper.create_link(user, label=label, provider=provider))
    document = link.document()
    if as_json:
        print_json(document)
        return
    out.print(plain(f"One-time connect link for {user}, valid until {when(document['expires_at'])}:"))
    typer.echo(link.url)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("connect-link")(connect_link)
