"""``serve`` (the web app) and ``simulate`` (the Lightspeed look-alike)."""

from __future__ import annotations

import logging
import threading
from typing import Annotated

import typer

from .. import context
from ..output import err, plain

log = logging.getLogger("lightkeeper.serve")

Host = Annotated[str, typer.Option(help="Interface to listen on.")]


def serve(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    scheduler: Annotated[bool, typer.Option(help="Also run the scheduler (like `worker`).")] = True,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Addresses of the reverse proxies whose X-Forwarded-For names the client (uvicorn's option; "
            "default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1).",
        ),
    ] = None,
) -> None:
    """Run the web app (connect flow, OAuth callback, health, metrics) and the scheduler."""
    from ... import web
    from ...scheduler import Worker

    _refuse_unsafe_dev_mode(host)
    with context.keeper(auto_create=True, daemon=True) as keeper:
        settings = keeper.settings
        err.print(plain(f"lightkeeper serving on http://{host}:{port} (public URL {settings.public_url})"))
        worker = Worker(keeper)
        thread = threading.Thread(target=worker.run_forever, name="scheduler", daemon=True)
        if scheduler:
            keeper.watch_scheduler(worker.liveness)  # /healthz reports the loop stalled if it stops iterating
            thread.start()
        keeper.start_notifier()  # webhook alerts, when NOTIFY_WEBHOOK_URL is set; stopped by keeper.close()
        try:
            # returns on SIGTERM / SIGINT
            web.run(web.create_app(keeper), host=host, port=port, forwarded_allow_ips=forwarded_allow_ips)
        finally:
            worker.request_stop()  # in-flight refreshes finish; unstarted claims are handed back
            if scheduler:
                thread.join()


def _refuse_unsafe_dev_mode(host: str) -> None:
    """Before anything starts: dev mode only on loopback (exit 2), and never silently."""
    from ...errors import ConfigError
    from ...web.auth import dev_mode_problem

    settings = context.settings(daemon=True)
    problem = dev_mode_problem(settings, host)
    if problem is not None:
        raise ConfigError(problem)
    if settings.lightkeeper_dev:
        log.warning(
            "LIGHTKEEPER_DEV=1: a development run; without LIGHTKEEPER_API_KEY the JSON API answers keyless "
            "requests from this machine. Never use it in production."
        )


def simulate(  # noqa: PLR0917 (Typer maps each parameter to an option)
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 9100,
    client_id: Annotated[str, typer.Option(help="The OAuth client it accepts.")] = "lightkeeper-demo",
    client_secret: Annotated[str, typer.Option(help="That client's secret.")] = "demo-secret",
    redirect_uri: Annotated[str | None, typer.Option(help="Registered redirect URI (default: any).")] = None,
    token_latency_ms: Annotated[int, typer.Option(help="Delay of every token request.")] = 0,
) -> None:
    """Run a Lightspeed R-Series look-alike (OAuth, rotation, Account, Items, rate limits, test knobs) and, under
    /x, an X-Series one (connect page, strict rotation, stores by domain_prefix, the fixed window)."""
    from ...simulator import SimulatorConfig
    from ...simulator import serve as serve_simulator

    config = SimulatorConfig(
        client_id=client_id, client_secret=client_secret, redirect_uri=redirect_uri, token_latency_ms=token_latency_ms
    )
    err.print(plain(f"Lightspeed simulator on http://{host}:{port} (client {client_id}); knobs under /_sim/"))
    serve_simulator(config, host, port)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("simulate")(simulate)
