"""Issue 8 from outside: short leases are refused by every command, ``check-config`` counts rows per key id."""

from __future__ import annotations

import pytest

from lightkeeper.crypto import key_id, parse_key
from tests.acceptance.conftest import Lightkeeper
from tests.helpers import TEST_KEY

OTHER_KEY = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
SHORT_LEASE = {"REFRESH_LEASE_S": "60", "HTTP_TIMEOUT_S": "20", "REFRESH_MAX_RETRY_AFTER_S": "30"}


@pytest.mark.parametrize("command", [("check-config",), ("refresh", "--all"), ("worker",), ("serve",), ("status",)])
def test_every_command_refuses_a_lease_shorter_than_one_refresh(cli: Lightkeeper, command: tuple[str, ...]) -> None:
    result = cli(*command, env_extra=SHORT_LEASE, check=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for number in ("60 s", "20 s", "30 s", "70 s"):  # the lease, both parts of the worst case, and its sum
        assert number in lines[0], lines[0]


def test_check_config_counts_connections_per_key_id(cli: Lightkeeper) -> None:
    cli.seed("user-a", "user-b")
    kid = key_id(parse_key(TEST_KEY))
    summary = cli.json("check-config")
    assert summary["rows_per_key"] == [{"key_id": kid, "rows": 2, "configured": True}]
    assert f"key {kid}: 2 connection(s), configured" in cli("check-config", check=0).stdout

    rotated = {"TOKEN_ENCRYPTION_KEY": OTHER_KEY}  # the old key dropped: its rows cannot be refreshed
    summary = cli.json("check-config", env_extra=rotated)
    assert {"key_id": kid, "rows": 2, "configured": False} in summary["rows_per_key"]
    assert f"key {kid}: 2 connection(s), NOT configured" in cli("check-config", env_extra=rotated, check=0).stdout
