"""``lightkeeper rotate-key`` and ``check-config`` as an operator runs them, on SQLite and PostgreSQL; a rotation
killed mid-way and run again."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.acceptance.conftest import lightkeeper_executable, wait_for
from tests.helpers import query
from tests.seeding import seed_connections

from .conftest import COMMAND_TIMEOUT_S, KeeperFactory, RunCli
from .helpers import NEW_KEY, NEW_KID, OLD_KID, ROTATING, cli_env, kids, plaintexts


def test_a_rotation_killed_mid_way_resumes_and_loses_nothing(
    make_keeper: KeeperFactory,
    sim: SimulatorControl,
    run_cli: RunCli,
    database_url: str,
    simulator_server: SimulatorServer,
    cli_home: Path,
) -> None:
    old = make_keeper()
    seed_connections(old, sim, 24, user_prefix="kill")
    before = plaintexts(old, old.connections())
    env = cli_env(database_url, simulator_server.url, cli_home)
    # Batches of 2 with a rest between them: the kill lands with most of the work still to do.
    command = [lightkeeper_executable(), "rotate-key", "--batch-size", "2", "--pause", "0.3"]
    rotation = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    watcher = make_keeper(**ROTATING)

    def some_rotated() -> bool:
        assert rotation.poll() is None, f"the rotation ended before it could be killed: {rotation.communicate()}"
        return kids(watcher.store).get(NEW_KID, 0) >= 6

    try:
        wait_for(some_rotated, timeout=COMMAND_TIMEOUT_S, interval=0.02, what="six rows re-encrypted")
    finally:
        rotation.send_signal(signal.SIGKILL)
        rotation.communicate()
    done = kids(watcher.store).get(NEW_KID, 0)
    assert 6 <= done < 24 and kids(watcher.store).get(OLD_KID, 0) == 24 - done

    result = run_cli("rotate-key", "--batch-size", "5", "--json", check=0)
    summary = json.loads(result.stdout)
    assert summary["complete"] is True and summary["problems"] == []
    assert (summary["reencrypted"], summary["already_current"]) == (24 - done, done)
    only_new = make_keeper(TOKEN_ENCRYPTION_KEY=NEW_KEY)
    assert kids(only_new.store) == {NEW_KID: 24}
    assert plaintexts(only_new, only_new.connections()) == before
    run = only_new.refresh(trigger="manual")
    assert (run.refreshed, run.errors, run.expired) == (24, 0, 0)
    assert sim.reuse() == 0 and sim.stats()["invalid_grant"] == 0
    _no_plaintext(before, result.stdout + result.stderr)


def test_check_config_counts_rows_under_each_old_key_before_and_after(
    make_keeper: KeeperFactory, sim: SimulatorControl, run_cli: RunCli
) -> None:
    old = make_keeper()
    seed_connections(old, sim, 3, user_prefix="count")
    old.start_connect(query(old.create_link("user-signing-in").url)["session"])  # one PKCE verifier

    document = json.loads(run_cli("check-config", "--json", check=0).stdout)
    assert document["encryption_key_id"] == NEW_KID
    assert document["rows_per_key"] == [
        {"key_id": NEW_KID, "rows": 0, "configured": True},
        {"key_id": OLD_KID, "rows": 3, "configured": True},
    ]
    assert {"key_id": OLD_KID, "rows": 1, "configured": True} in document["verifiers_per_key"]
    text = run_cli("check-config", check=0).stdout
    assert f"key {NEW_KID}: 0 connection(s), configured, primary" in text
    assert f"key {OLD_KID}: 3 connection(s), configured, old, 1 PKCE verifier(s): run `lightkeeper rotate-key`" in text

    rotated = run_cli("rotate-key", check=0)
    assert f"Key {NEW_KID}: 3 connection(s) and 1 PKCE verifier(s) re-encrypted, 0 already under it." in rotated.stdout
    assert "Every stored secret is under the primary key" in rotated.stdout
    assert "rotate-key: 4 of 4 handled" in rotated.stderr  # piped: a plain progress line, not a bar

    document = json.loads(run_cli("check-config", "--json", check=0).stdout)
    assert document["rows_per_key"] == [
        {"key_id": NEW_KID, "rows": 3, "configured": True},
        {"key_id": OLD_KID, "rows": 0, "configured": True},
    ]
    assert document["verifiers_per_key"] == [
        {"key_id": NEW_KID, "rows": 1, "configured": True},
        {"key_id": OLD_KID, "rows": 0, "configured": True},
    ]
    text = run_cli("check-config", check=0).stdout
    assert f"key {NEW_KID}: 3 connection(s), configured, primary, 1 PKCE verifier(s)" in text
    assert f"key {OLD_KID}: 0 connection(s), configured, old: nothing is stored under it any more" in text


def test_a_missing_old_key_is_reported_as_a_key_problem_with_exit_2(
    make_keeper: KeeperFactory, sim: SimulatorControl, run_cli: RunCli
) -> None:
    old = make_keeper()
    seed_connections(old, sim, 2, user_prefix="missing")
    before = plaintexts(old, old.connections())
    no_old_key = {"TOKEN_ENCRYPTION_KEY": NEW_KEY, "TOKEN_ENCRYPTION_OLD_KEYS": ""}

    text = run_cli("rotate-key", "--wait", "0", check=2, **no_old_key)
    document = json.loads(run_cli("rotate-key", "--wait", "0", "--json", check=2, **no_old_key).stdout)

    expected = f"2 row(s) are under key id {OLD_KID}, which is not configured; add that key to TOKEN_ENCRYPTION_OLD"
    assert expected in text.stdout and "Traceback" not in text.stderr
    for wrong_word in ("corrupt", "tamper", "authenticate", "altered"):
        assert wrong_word not in (text.stdout + text.stderr).lower()
    assert document["complete"] is False and document["unknown_keys"] == {OLD_KID: 2}
    assert (document["reencrypted"], document["tampered"]) == (0, 0)
    assert kids(old.store) == {OLD_KID: 2}
    config = run_cli("check-config", check=0, **no_old_key).stdout
    assert f"key {OLD_KID}: 2 connection(s), NOT configured" in config
    _no_plaintext(before, text.stdout + text.stderr)


def _no_plaintext(tokens: dict[int, tuple[str, str]], output: str) -> None:
    leaked = [cid for cid, pair in tokens.items() if any(token in output for token in pair)]
    assert leaked == [], f"plaintext tokens of connections {leaked} in the output"
