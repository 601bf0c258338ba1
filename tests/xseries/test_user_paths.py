"""What an operator and a host app see of X-Series, from outside: the real ``lightkeeper`` command in a subprocess,
the real app over HTTP, on SQLite and PostgreSQL wherever the store is involved.

``connect-link --provider x-series`` prints a link that leads to X-Series' consent page and connects a store; the
API's connect sessions default to the only configured provider, else R-Series; ``status`` (table and ``--json``)
and the dashboard name each row's provider; a store whose merchant removed the add-on says so among the causes;
``update-stock`` and the stock route refuse an X-Series store (exit 2, 400 ``stock_unsupported``, nothing sent);
``check-config`` passes an X-Series-only deployment and prints X-Series' redirect URI, and refuses a redirect URI
that does not point at ``/oauth/callback``; the confirm page's ``form-action`` names both consent origins; the
simulator's help names both look-alikes.
"""

from __future__ import annotations

import json
import re
import subprocess
from urllib.parse import urlencode

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.web.browser import continue_to_lightspeed
from tests.acceptance.conftest import lightkeeper_executable
from tests.faults.support import Cli
from tests.helpers import query
from tests.seeding import seed_connections
from tests.xseries.conftest import ServeX, StartCli, XApp
from tests.xseries.support import NO_R_SERIES, R_SERIES, X_SERIES, seed_x_connections

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

STOCK_PATH = "/api/connections/{connection_id}/stock"


def finished(cli: Cli) -> tuple[int, str, list[str]]:
    """A subprocess's exit code, its stdout, and its stderr's non-blank lines (no traceback anywhere)."""
    code = cli.wait()
    stdout, stderr = cli.out.read_text(), cli.log.read_text()
    assert "Traceback" not in stdout + stderr, cli.story()
    return code, stdout, [line for line in stderr.splitlines() if line.strip()]


def callback_of(app: XApp) -> str:
    return f"{app.url}/oauth/callback"


def authorize_location(app: XApp, link: str) -> str:
    """Where a merchant's browser is sent after the link's confirm page: the provider's consent page."""
    with httpx2.Client(timeout=10) as browser:
        to_lightspeed = continue_to_lightspeed(browser, link)
    assert to_lightspeed.status_code == 303, to_lightspeed.text
    return str(to_lightspeed.headers["location"])


def x_traffic(sim: SimulatorControl) -> tuple[int, int]:
    stats = sim.x_stats()
    return int(stats["x_token_requests"]), int(stats["x_api_requests"])


def table_line(stdout: str, user_id: str) -> str:
    [line] = [line for line in stdout.splitlines() if f" {user_id} " in line]
    return line


def dashboard_row(page: str, connection_id: int) -> str:
    found = re.search(rf'<tr data-connection-id="{connection_id}">(.*?)</tr>', page, re.DOTALL)
    assert found, f"connection {connection_id} is not listed on the dashboard"
    return found.group(1)


# -- connect links --------------------------------------------------------------------------------------------


def test_connect_link_for_x_series_prints_a_link_that_connects_a_store(
    serve_x: ServeX, start_cli: StartCli, sim: SimulatorControl
) -> None:
    with serve_x(both=True) as app, httpx2.Client(timeout=10) as browser:
        cli = start_cli(
            "link", "connect-link", "--user", "merchant-7", "--provider", "x-series",
            LIGHTSPEED_REDIRECT_URI=callback_of(app),
        )  # fmt: skip
        code, stdout, _ = finished(cli)
        assert code == 0, cli.story()
        link = stdout.strip().splitlines()[-1]
        assert link.startswith(f"{app.url}/connect-lightspeed/start?session="), stdout

        to_lightspeed = continue_to_lightspeed(browser, link)
        assert to_lightspeed.status_code == 303, to_lightspeed.text
        authorize = to_lightspeed.headers["location"]
        assert authorize.startswith(f"{app.simulator_url}/x/connect?"), authorize  # X-Series' consent page
        back = browser.get(authorize)
        assert back.status_code == 302, back.text
        page = app.callback(browser, urlencode(query(back.headers["location"])))
        assert page.status_code == 200 and "Connected" in page.text, page.text[:300]

        [record] = app.keeper.connections(user_id="merchant-7")
        assert (record.provider, record.status.value) == (X_SERIES, "connected")
        assert record.account_id == query(back.headers["location"])["domain_prefix"]


def test_connect_sessions_default_to_r_series_when_both_are_configured(serve_x: ServeX) -> None:
    with serve_x(both=True) as app:
        default = authorize_location(app, app.link("merchant-1", provider=None))
        chosen = authorize_location(app, app.link("merchant-2", provider="x-series"))
    assert default.startswith(f"{app.simulator_url}/auth/oauth/authorize?"), default
    assert chosen.startswith(f"{app.simulator_url}/x/connect?"), chosen


def test_connect_sessions_default_to_x_series_when_only_it_is_configured(serve_x: ServeX) -> None:
    with serve_x() as app:
        default = authorize_location(app, app.link("merchant-1", provider=None))
    assert default.startswith(f"{app.simulator_url}/x/connect?"), default


# -- status, the dashboard, and a store whose merchant removed the add-on ------------------------------------


def test_status_and_status_json_name_each_rows_provider(
    serve_x: ServeX, start_cli: StartCli, sim: SimulatorControl
) -> None:
    with serve_x(both=True) as app:
        [r_id] = seed_connections(app.keeper, sim, 1, user_prefix="r")
        [x_id] = seed_x_connections(app.keeper, sim, 1, user_prefix="x")
    table, as_json = start_cli("status", "status"), start_cli("status-json", "status", "--json")

    code, stdout, _ = finished(as_json)
    assert code == 0, as_json.story()
    providers = {row["id"]: row["provider"] for row in json.loads(stdout)}
    assert providers == {r_id: R_SERIES, x_id: X_SERIES}

    code, stdout, _ = finished(table)
    assert code == 0, table.story()
    assert " provider " in stdout, stdout
    assert f" {X_SERIES} " in table_line(stdout, "x-1") and f" {R_SERIES} " in table_line(stdout, "r-1"), stdout


def test_a_store_whose_merchant_removed_the_add_on_says_so_and_the_dashboard_names_its_provider(
    serve_x: ServeX, sim: SimulatorControl
) -> None:
    with serve_x(both=True) as app:
        keeper = app.keeper
        [r_id] = seed_connections(keeper, sim, 1, user_prefix="r")
        [x_id] = seed_x_connections(keeper, sim, 1, user_prefix="x")
        for connection_id in (r_id, x_id):
            sim.revoke_account(keeper.connection(connection_id).account_id)  # the merchant removed the app
            assert keeper.refresh(connection_id=connection_id).expired == 1

        x_error, r_error = keeper.connection(x_id).last_error or "", keeper.connection(r_id).last_error or ""
        assert "invalid_grant" in x_error and "the merchant removed access" in x_error, x_error
        assert "rotation was lost" in x_error, x_error  # the other possible cause, still named
        assert "rotation" not in r_error, r_error  # R-Series' grace window: no lost rotation to suspect

        page = app.client.get("/dashboard")
        assert page.status_code == 200, page.text[:300]
    assert f'data-provider="{X_SERIES}"' in dashboard_row(page.text, x_id)
    assert f'data-provider="{R_SERIES}"' in dashboard_row(page.text, r_id)
    assert "the merchant removed access" in dashboard_row(page.text, x_id)


# -- update-stock ---------------------------------------------------------------------------------------------


def test_update_stock_refuses_an_x_series_store_from_the_cli_and_the_api(
    serve_x: ServeX, start_cli: StartCli, sim: SimulatorControl
) -> None:
    with serve_x(both=True) as app:
        [x_id] = seed_x_connections(app.keeper, sim, 1)
        before = x_traffic(sim)
        cli = start_cli("stock", "update-stock", "--connection", str(x_id), "--item", "1", "--shop", "1", "--qoh", "3")

        answer = app.client.post(
            f"/api/connections/{x_id}/stock", json={"updates": [{"item_id": 1, "shop_id": 1, "qoh": 3}]}
        )
        assert answer.status_code == 400 and answer.json()["code"] == "stock_unsupported", answer.text
        assert "/lightspeed/api/2.1/products/" in answer.json()["message"], answer.text  # points at the proxy
        documented = app.client.get("/openapi.json").json()["paths"][STOCK_PATH]["post"]["responses"]
        assert "400" in documented and "stock_unsupported" in documented["400"]["description"], documented

        code, stdout, errors = finished(cli)
    assert code == 2, cli.story()
    assert stdout == "" and len(errors) == 1, cli.story()  # one message, and no log noise around it
    assert errors[0].startswith(f"error: connection {x_id} is an X-Series store"), errors
    assert f"/api/connections/{x_id}/lightspeed/api/2.1/products/" in errors[0], errors
    assert x_traffic(sim) == before and app.transport.sent == []  # nothing was sent, by either


# -- check-config ---------------------------------------------------------------------------------------------


def test_check_config_passes_an_x_series_only_deployment_and_prints_its_redirect_uri(start_cli: StartCli) -> None:
    x_only = NO_R_SERIES | {"LIGHTSPEED_X_REDIRECT_URI": "http://127.0.0.1:2/oauth/callback"}
    text = start_cli("check", "check-config", **x_only)
    as_json = start_cli("check-json", "check-config", "--json", **x_only)
    defaulted = start_cli("check-default", "check-config", "--json")  # both; X-Series' URI defaults to R's

    code, stdout, _ = finished(as_json)
    assert code == 0, as_json.story()
    document = json.loads(stdout)
    assert document["providers"] == [X_SERIES], document
    assert document["x_redirect_uri"] == "http://127.0.0.1:2/oauth/callback", document

    code, stdout, _ = finished(text)
    assert code == 0, text.story()
    assert "Configuration OK" in stdout and "x_redirect_uri: http://127.0.0.1:2/oauth/callback" in stdout, stdout

    code, stdout, _ = finished(defaulted)
    assert code == 0, defaulted.story()
    document = json.loads(stdout)
    assert document["x_redirect_uri"] == document["redirect_uri"] == "http://127.0.0.1:1/oauth/callback"


@sqlite_only
def test_a_redirect_uri_off_the_callback_route_is_refused_in_one_sentence(start_cli: StartCli) -> None:
    bad = {
        "LIGHTSPEED_X_REDIRECT_URI": "http://127.0.0.1:2/lightspeed/callback",
        "LIGHTSPEED_REDIRECT_URI": "https://app.example.com/oauth/callback/r-series",
    }
    started = {name: start_cli(name, "check-config", **{name: value}) for name, value in bad.items()}
    for name, cli in started.items():
        code, stdout, errors = finished(cli)
        assert code == 2 and stdout == "", cli.story()
        assert errors == [
            f"error: Invalid settings: {name} (must have the path /oauth/callback, the route that receives "
            "Lightspeed's answer)"
        ], cli.story()


# -- the confirm page's policy, and the simulator -------------------------------------------------------------


def test_the_confirm_page_may_post_to_both_consent_origins(serve_x: ServeX, simulator_server: SimulatorServer) -> None:
    r_origin = simulator_server.url  # http://127.0.0.1:PORT
    x_origin = r_origin.replace("://127.0.0.1:", "://localhost:")
    assert x_origin != r_origin
    with serve_x(both=True, LIGHTSPEED_X_CONNECT_URL=f"{x_origin}/x/connect") as app:
        for provider in (R_SERIES, X_SERIES):
            page = httpx2.get(app.link(f"merchant-{provider}", provider=provider), timeout=10)
            assert page.status_code == 200, page.text[:300]
            policy = dict(
                directive.strip().split(" ", 1) for directive in page.headers["content-security-policy"].split(";")
            )
            assert policy["form-action"].split() == ["'self'", r_origin, x_origin], policy
        assert authorize_location(app, app.link("merchant-x")).startswith(f"{x_origin}/x/connect?")


def test_simulate_help_names_both_look_alikes() -> None:
    result = subprocess.run(
        [lightkeeper_executable(), "simulate", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "TERM": "dumb"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = " ".join(result.stdout.split())
    assert "R-Series look-alike" in summary and "X-Series" in summary, summary
