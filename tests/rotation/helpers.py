"""Keys and look-ups shared by the key rotation tests."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import update

from lightkeeper import Keeper
from lightkeeper.crypto import key_id, parse_key
from lightkeeper.store import ConnectionRecord, Store
from lightkeeper.store.schema import connections as connections_table
from tests.helpers import TEST_KEY, make_env

OLD_KEY = TEST_KEY  # what the rows are under before the rotation
NEW_KEY = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="  # test-only key, 32 bytes base64
STRAY_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"  # configured by mistake
OLD_KID = key_id(parse_key(OLD_KEY))
NEW_KID = key_id(parse_key(NEW_KEY))
#: How every process runs during a rotation: the new key encrypts, the old one still decrypts.
ROTATING = {"TOKEN_ENCRYPTION_KEY": NEW_KEY, "TOKEN_ENCRYPTION_OLD_KEYS": OLD_KEY}

Plaintexts = dict[int, tuple[str, str]]


def plaintexts(keeper: Keeper, records: list[ConnectionRecord]) -> Plaintexts:
    """Each connection's (access, refresh) token in plaintext, as ``keeper``'s keys decrypt them."""
    return {r.id: (keeper.vault.access_token(r), keeper.vault.refresh_token(r)) for r in records}


def kids(store: Store) -> dict[str, int]:
    """Connections per key id of their refresh token."""
    return store.connections.key_ids()


def set_status(store: Store, connection_id: int, status: str, **values: object) -> None:
    with store.engine.begin() as conn:
        stmt = update(connections_table).where(connections_table.c.id == connection_id)
        conn.execute(stmt.values(status=status, **values))


def cli_env(database_url: str, simulator_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``lightkeeper`` subprocess: keys rotating unless ``extra`` says otherwise."""
    env = make_env(database_url, simulator_url, **ROTATING) | extra
    return env | {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
