"""``check-config`` and ``gen-key``."""

from __future__ import annotations

from typing import Annotated

import typer

from ..output import out, print_json

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def check_config(as_json: JsonFlag = False) -> None:
    """Check every setting; name each missing or malformed one (exit 2)."""
    from ...config import REQUIRE_ALL, load_settings
    from ...crypto import TokenCipher

    settings = load_settings(require=REQUIRE_ALL)
    cipher = TokenCipher.from_settings(settings)
    summary = {
        "ok": True,
        "database_url": settings.redacted_database_url,
        "lightspeed_oauth_url": settings.lightspeed_oauth_url,
        "lightspeed_api_url": settings.lightspeed_api_url,
        "redirect_uri": settings.lightspeed_redirect_uri,
        "public_url": settings.public_url,
        "encryption_key_id": cipher.primary_key_id,
        "refresh_schedule": settings.refresh_schedule,
    }
    if as_json:
        print_json(summary)
        return
    out.print("[green]Configuration OK[/]")
    for key, value in summary.items():
        if key != "ok":
            out.print(f"  {key}: {value}")


def gen_key() -> None:
    """Print a new random TOKEN_ENCRYPTION_KEY (32 bytes, base64)."""
    from ...crypto import generate_key

    typer.echo(generate_key())


def register(app: typer.Typer) -> None:
    app.command("check-config")(check_config)
    app.command("gen-key")(gen_key)
