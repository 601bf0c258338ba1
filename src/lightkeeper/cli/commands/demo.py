"""``demo``: the whole main job on a fresh machine, no configuration needed.

Starts the Lightspeed simulator and the web app on loopback, connects three merchants through the real
OAuth flow (link → consent → callback), runs a refresh with a progress bar, prints the connection table
and the run history. With ``--serve`` it keeps both running so a person can click through.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..output import out
from .connections import print_connections
from .runs import print_runs, run_with_progress

if TYPE_CHECKING:
    import httpx2

    from ...keeper import Keeper

DEMO_CLIENT = ("lightkeeper-demo", "demo-secret")


def demo(
    merchants: Annotated[int, typer.Option(min=1, max=50, help="How many merchants to connect.")] = 3,
    directory: Annotated[Path, typer.Option(help="Where the demo's SQLite file goes.")] = Path(".lightkeeper-demo"),
    serve: Annotated[bool, typer.Option("--serve", help="Keep the web app running afterwards.")] = False,
    port: Annotated[int, typer.Option(help="Web port with --serve (0: any free port).")] = 8000,
) -> None:
    """Run the main job end to end against the built-in Lightspeed simulator."""
    from ...config import REQUIRE_ALL, load_settings
    from ...keeper import Keeper
    from ...simulator import SimulatorConfig, SimulatorServer
    from ...web import BackgroundServer, bind, create_app

    directory = directory.resolve()
    db_file = _fresh_directory(directory)
    with SimulatorServer(SimulatorConfig(client_id=DEMO_CLIENT[0], client_secret=DEMO_CLIENT[1])) as simulator:
        sock = bind("127.0.0.1", port if serve else 0)
        web_origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
        env = _demo_env(simulator.url, web_origin, db_file)
        simulator.state.register_redirect_uri(env["LIGHTSPEED_REDIRECT_URI"])  # as a real client registers it
        _write_env_file(directory, env)
        settings = load_settings(env=env, require=REQUIRE_ALL)
        with Keeper(settings) as keeper:
            keeper.ensure_schema()
            with BackgroundServer(create_app(keeper), sock=sock):
                _walkthrough(keeper, merchants)
                _explain(directory, db_file)
                if serve:
                    _serve_forever(keeper, settings.public_url)


def _fresh_directory(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory / "demo.db"


def _demo_env(simulator_url: str, web_origin: str, db_file: Path) -> dict[str, str]:
    from ...crypto import generate_key

    return {
        "LIGHTSPEED_CLIENT_ID": DEMO_CLIENT[0],
        "LIGHTSPEED_CLIENT_SECRET": DEMO_CLIENT[1],
        "TOKEN_ENCRYPTION_KEY": generate_key(),
        "DATABASE_URL": f"sqlite:///{db_file}",
        "LIGHTSPEED_OAUTH_URL": simulator_url,
        "LIGHTSPEED_API_URL": simulator_url,
        "LIGHTSPEED_REDIRECT_URI": f"{web_origin}/oauth/callback",
        "REFRESH_DELAY_MS": "200",
    }


def _write_env_file(directory: Path, env: dict[str, str]) -> None:
    """Lets a person inspect the demo database afterwards (it holds the demo's throwaway key)."""
    path = directory / "demo.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    path.chmod(0o600)


def _walkthrough(keeper: Keeper, merchants: int) -> None:
    import httpx2

    from ...views import ConnectionView, RunView

    out.print(f"[bold]1. Connecting {merchants} merchants through the OAuth flow[/] (simulated Lightspeed)")
    with httpx2.Client(follow_redirects=True, timeout=10) as browser:
        for number in range(1, merchants + 1):
            _connect_one(keeper, browser, f"merchant-{number}")
    out.print("\n[bold]2. Refreshing every connection[/] (the job `refresh-lightspeed-tokens-every-6h` does this)")
    run = run_with_progress(keeper, None, show=True)
    out.print(f"run {run.id} {run.status.value}: {run.refreshed} refreshed, {run.errors} errors\n")
    print_connections([ConnectionView.model_validate(record) for record in keeper.connections()])
    print_runs([RunView.model_validate(record) for record in keeper.run_history()])


def _connect_one(keeper: Keeper, browser: httpx2.Client, user_id: str) -> None:
    from ...web.browser import continue_to_lightspeed

    link = keeper.create_link(user_id)
    # link → confirm page → Continue → Lightspeed consent (auto-approved) → our /oauth/callback
    page = continue_to_lightspeed(browser, link.url)
    if page.status_code != 200 or "Connected" not in page.text:
        raise typer.Exit(_fail(f"connecting {user_id} failed: HTTP {page.status_code}"))
    record = keeper.connections(user_id=user_id)[0]
    # The account name comes from the merchant's Lightspeed: printed as text, never as markup.
    name, account = escape(record.account_name or ""), escape(record.account_id)
    out.print(f"  {escape(user_id)}: connected [cyan]{name}[/] (account {account})")


def _fail(message: str) -> int:
    out.print(f"[red]{message}[/]")
    return 1


def _explain(directory: Path, db_file: Path) -> None:
    out.print(f"\nThe demo's SQLite file: [cyan]{db_file}[/] (tokens in it are AES-256-GCM ciphertext).")
    out.print(f"Inspect it:  [cyan]env $(cat {directory / 'demo.env'}) lightkeeper status[/]  (or `runs`)")
    out.print(
        "Against real Lightspeed: register an app at Lightspeed, set LIGHTSPEED_CLIENT_ID, "
        "LIGHTSPEED_CLIENT_SECRET, LIGHTSPEED_REDIRECT_URI and TOKEN_ENCRYPTION_KEY (`lightkeeper gen-key`), "
        "then `lightkeeper check-config` and `lightkeeper serve`. See README.md."
    )


def _serve_forever(keeper: Keeper, public_url: str) -> None:
    link = keeper.create_link("merchant-browser")
    out.print(f"\nServing on {public_url}. Connect one more store in a browser:\n  {link.url}")
    out.print("Press Ctrl-C to stop.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        out.print("stopped")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
