"""``lightkeeper events`` and ``lightkeeper events retry ID`` in-process (``cli.app.run``), and the webhook
settings' one-sentence errors."""

from __future__ import annotations

import json

import pytest

from lightkeeper import ConfigError, Keeper
from lightkeeper.cli.app import run
from lightkeeper.config import REQUIRE_NONE, load_settings
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.helpers import connect, make_env
from tests.integration.conftest import KeeperFactory
from tests.notify.conftest import SECRET, Receiver


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, simulator_server: SimulatorServer, receiver: Receiver
) -> dict[str, str]:
    values = make_env(database_url, simulator_server.url, NOTIFY_WEBHOOK_URL=receiver.url, NOTIFY_WEBHOOK_SECRET=SECRET)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def expired_event(notifying: KeeperFactory, sim: SimulatorControl) -> tuple[Keeper, str]:
    keeper = notifying()
    record = connect(keeper, "merchant-1")
    sim.revoke_account(record.account_id)
    keeper.refresh()
    [event] = keeper.events()
    return keeper, event.id


def test_events_lists_the_outbox_as_json_and_as_a_table(
    env: dict[str, str], notifying: KeeperFactory, sim: SimulatorControl, capsys: pytest.CaptureFixture[str]
) -> None:
    _, event_id = expired_event(notifying, sim)

    assert run(["events", "--json", "--status", "pending"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["type"], listed["status"], listed["attempts"]) == (
        event_id,
        "connection.expired",
        "pending",
        0,
    )
    assert "body" not in listed and listed["created_at"].endswith("Z")
    assert run(["events", "--json", "--status", "dead"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(["events"]) == 0
    assert event_id in capsys.readouterr().out


def test_events_retry_sends_one_event_now_and_says_how_it_went(
    env: dict[str, str],
    notifying: KeeperFactory,
    sim: SimulatorControl,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, event_id = expired_event(notifying, sim)
    receiver.fail_next(1)

    assert run(["events", "retry", event_id]) == 1
    assert "not delivered (attempt 1): the receiver answered HTTP 500; now pending" in capsys.readouterr().out
    assert run(["events", "retry", event_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["attempts"], shown["last_error"]) == ("delivered", 2, None)
    assert [r.attempt for r in receiver.requests] == [1, 2]

    assert run(["events", "retry", "evt_unknown"]) == 1
    assert "there is no event evt_unknown" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"NOTIFY_WEBHOOK_URL": "https://app.example/hooks"}, "NOTIFY_WEBHOOK_SECRET (must be set when"),
        ({"NOTIFY_WEBHOOK_SECRET": "short"}, "NOTIFY_WEBHOOK_SECRET (must be at least 16 characters)"),
        ({"NOTIFY_WEBHOOK_URL": "http://app.example/h", "NOTIFY_WEBHOOK_SECRET": SECRET}, "NOTIFY_WEBHOOK_URL (must"),
        ({"NOTIFY_RETRY_BASE_S": "60", "NOTIFY_RETRY_CAP_S": "5"}, "NOTIFY_RETRY_CAP_S (must be at least"),
        ({"NOTIFY_GIVE_UP_S": "0"}, "NOTIFY_GIVE_UP_S (must be an integer >= 1)"),
    ],
)
def test_webhook_settings_are_checked_in_one_sentence(extra: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env=extra, require=REQUIRE_NONE)
    assert says in str(refused.value) and SECRET not in str(refused.value) and "short" not in str(refused.value)


def test_webhook_settings_have_the_issues_defaults_and_allow_loopback_http() -> None:
    settings = load_settings(
        env={"NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/hooks", "NOTIFY_WEBHOOK_SECRET": SECRET}, require=REQUIRE_NONE
    )
    assert (settings.notify_error_after_s, settings.notify_give_up_s) == (86400, 3 * 86400)
    assert (settings.notify_retry_base_s, settings.notify_retry_cap_s) == (5, 3600)
