"""``check-config`` and ``gen-key``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..output import out, print_json

if TYPE_CHECKING:
    from ...config import Settings
    from ...views import KeyRowsView

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def check_config(as_json: JsonFlag = False) -> None:
    """Check every setting; name each missing or malformed one (exit 2)."""
    from ...config import REQUIRE_ALL, load_settings
    from ...crypto import TokenCipher
    from ...views import ConfigView

    settings = load_settings(require=REQUIRE_ALL)
    cipher = TokenCipher.from_texts(
        settings.token_encryption_key.get_secret_value(), settings.token_encryption_old_keys.get_secret_value()
    )
    view = ConfigView(
        ok=True,
        database_url=settings.redacted_database_url,
        lightspeed_oauth_url=settings.lightspeed_oauth_url,
        lightspeed_api_url=settings.lightspeed_api_url,
        redirect_uri=settings.lightspeed_redirect_uri,
        public_url=settings.public_url,
        encryption_key_id=cipher.primary_key_id,
        refresh_schedule=settings.refresh_schedule,
        refresh_lease_s=settings.refresh_lease_s,
        rows_per_key=_rows_per_key(settings, cipher.key_ids),
    )
    summary = view.document()
    if as_json:
        print_json(summary)
        return
    out.print("[green]Configuration OK[/]")
    for key, value in summary.items():
        if key not in ("ok", "rows_per_key"):
            out.print(f"  {key}: {escape(str(value))}")
    _print_rows_per_key(view.rows_per_key)


def _rows_per_key(settings: Settings, configured: tuple[str, ...]) -> list[KeyRowsView] | None:
    """Connections per key id in the database, and whether each key is configured; None without a schema."""
    from sqlalchemy.exc import SQLAlchemyError

    from ...errors import LightkeeperError
    from ...store import Store, current_revision
    from ...views import KeyRowsView

    store = Store.from_url(settings.database_url)
    try:
        if current_revision(store.engine) is None:
            return None
        counts = store.connections.key_ids()
    except (LightkeeperError, SQLAlchemyError):
        return None  # an unreachable database is not a configuration error of check-config's
    finally:
        store.close()
    kids = [*configured, *sorted(set(counts) - set(configured))]
    return [KeyRowsView(key_id=kid, rows=counts.get(kid, 0), configured=kid in configured) for kid in kids]


def _print_rows_per_key(rows: list[KeyRowsView] | None) -> None:
    if rows is None:
        out.print("  rows per key id: (no lightkeeper database yet)")
        return
    for row in rows:
        state = "configured" if row.configured else "[red]NOT configured[/]: these rows cannot be refreshed"
        out.print(f"  key {escape(row.key_id)}: {row.rows} connection(s), {state}")


def gen_key() -> None:
    """Print a new random TOKEN_ENCRYPTION_KEY (32 bytes, base64)."""
    from ...crypto import generate_key

    typer.echo(generate_key())


def register(app: typer.Typer) -> None:
    app.command("check-config")(check_config)
    app.command("gen-key")(gen_key)
