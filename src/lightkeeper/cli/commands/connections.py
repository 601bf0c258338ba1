"""``status`` (the seed guide's connection query) and ``connect-link``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .. import context
from ..output import out, plain, print_json, table, when
from .configure import JsonFlag


def status(
    as_json: JsonFlag = False,
    user: Annotated[str | None, typer.Option(help="Only this host-app user.")] = None,
    state: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
) -> None:
    """Show every connection: status, token expiry, last refresh, last error."""
    with context.store(context.settings(context.NONE)) as store:
        rows = [record.public() for record in store.connections.iter(user_id=user, status=state)]
    if as_json:
        print_json(rows)
        return
    print_connections(rows)


def print_connections(rows: list[dict[str, Any]]) -> None:
    table(
        "Lightspeed connections",
        ["id", "user_id", "status", "account", "token_expires_at", "last_token_refresh_at", "last_error"],
        (
            [
                r["id"],
                r["user_id"],
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
    as_json: JsonFlag = False,
) -> None:
    """Print a one-time URL (valid 1 hour) that connects USER's Lightspeed account."""
    with context.keeper(context.NONE) as keeper:
        link = keeper.connect.create_link(user, label=label)
    if as_json:
        print_json({"url": link.url, "expires_at": link.expires_at.isoformat()})
        return
    out.print(plain(f"One-time connect link for {user}, valid until {when(link.expires_at.isoformat())}:"))
    typer.echo(link.url)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("connect-link")(connect_link)
