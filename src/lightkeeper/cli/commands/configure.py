"""``check-config``, ``gen-key`` and ``gen-api-key``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ..output import out, print_json

if TYPE_CHECKING:
    from ...config import Settings
    from ...views import ConfigView, KeyRowsView

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
    counts = _key_counts(settings)
    view = ConfigView(
        ok=True,
        database_url=settings.redacted_database_url,
        providers=_providers_in_use(settings),
        lightspeed_oauth_url=settings.lightspeed_oauth_url,
        lightspeed_api_url=settings.lightspeed_api_url,
        redirect_uri=settings.lightspeed_redirect_uri,
        public_url=settings.public_url,
        encryption_key_id=cipher.primary_key_id,
        refresh_schedule=settings.refresh_schedule,
        refresh_lease_s=settings.refresh_lease_s,
        lightspeed_x_base_url=settings.lightspeed_x_base_url if settings.uses_x_series else None,
        lightspeed_x_connect_url=settings.lightspeed_x_connect_url if settings.uses_x_series else None,
        rows_per_key=None if counts is None else _per_key(counts[0], cipher.key_ids),
        verifiers_per_key=None if counts is None else _per_key(counts[1], cipher.key_ids),
    )
    summary = _with_x_redirect_uri(view.document(), settings)
    if as_json:
        print_json(summary)
        return
    out.print("[green]Configuration OK[/]")
    for key, value in summary.items():
        if key not in ("ok", "rows_per_key", "verifiers_per_key"):
            out.print(f"  {key}: {escape(str(value))}")
    _print_rows_per_key(view)


def _with_x_redirect_uri(summary: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``summary`` with X-Series' redirect URI right after R-Series' when X-Series is in use (it defaults to
    ``LIGHTSPEED_REDIRECT_URI``, so printing it shows which one X-Series' registration must match)."""
    if not settings.uses_x_series:
        return summary
    items = list(summary.items())
    at = [key for key, _ in items].index("redirect_uri") + 1
    return dict([*items[:at], ("x_redirect_uri", settings.x_redirect_uri), *items[at:]])


def _providers_in_use(settings: Settings) -> list[str]:
    from ...providers import in_use

    return in_use(settings)


def _key_counts(settings: Settings) -> tuple[dict[str, int], dict[str, int]] | None:
    """Connections, and PKCE verifiers, per key id in the database; None without a schema."""
    from sqlalchemy.exc import SQLAlchemyError

    from ...errors import LightkeeperError
    from ...store import Store, current_revision

    store = Store.from_url(settings.database_url)
    try:
        if current_revision(store.engine) is None:
            return None
        return store.connections.key_ids(), store.keys.verifier_key_ids()
    except (LightkeeperError, SQLAlchemyError):
        return None  # an unreachable database is not a configuration error of check-config's
    finally:
        store.close()


def _per_key(counts: dict[str, int], configured: tuple[str, ...]) -> list[KeyRowsView]:
    """Every configured key id (the primary first), then the ids in use that are not configured."""
    from ...views import KeyRowsView

    kids = [*configured, *sorted(set(counts) - set(configured))]
    return [KeyRowsView(key_id=kid, rows=counts.get(kid, 0), configured=kid in configured) for kid in kids]


def _print_rows_per_key(view: ConfigView) -> None:
    if view.rows_per_key is None:
        out.print("  rows per key id: (no lightkeeper database yet)")
        return
    verifiers = {row.key_id: row.rows for row in view.verifiers_per_key or []}
    connections = {row.key_id: row.rows for row in view.rows_per_key}
    configured = {row.key_id for row in view.rows_per_key if row.configured}
    for kid in [*connections, *(kid for kid in verifiers if kid not in connections)]:
        role = "primary" if kid == view.encryption_key_id else "old" if kid in configured else None
        out.print(_key_line(kid, connections.get(kid, 0), verifiers.get(kid, 0), role))


def _key_line(kid: str, rows: int, verifiers: int, role: str | None) -> str:
    """One key id's line: what is stored under it and what to do about it (the primary needs nothing)."""
    stored = f"  key {escape(kid)}: {rows} connection(s), "
    extra = f", {verifiers} PKCE verifier(s)" if verifiers else ""
    if role is None:
        return (
            f"{stored}[red]NOT configured[/]{extra}: these rows cannot be refreshed; add that key to "
            "TOKEN_ENCRYPTION_OLD_KEYS, then run `lightkeeper rotate-key`"
        )
    if role == "primary":
        return f"{stored}configured, primary{extra}"
    if rows or verifiers:
        return f"{stored}configured, old{extra}: [yellow]run `lightkeeper rotate-key`[/] to re-encrypt them"
    return f"{stored}configured, old: nothing is stored under it any more; remove it from TOKEN_ENCRYPTION_OLD_KEYS"


def gen_key() -> None:
    """Print a new random TOKEN_ENCRYPTION_KEY (32 bytes, base64)."""
    from ...crypto import generate_key

    typer.echo(generate_key())


def gen_api_key() -> None:
    """Print a new random API key (43 URL-safe characters): for LIGHTKEEPER_API_KEY, or as the KEY of a
    LIGHTKEEPER_API_KEYS entry (NAME:SCOPE[,SCOPE...]:KEY)."""
    from ...apikeys import generate_api_key

    typer.echo(generate_api_key())


def register(app: typer.Typer) -> None:
    app.command("check-config")(check_config)
    app.command("gen-key")(gen_key)
    app.command("gen-api-key")(gen_api_key)
