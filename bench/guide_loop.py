"""The seed guide's refresh function, re-created as a Python user would write it: the baseline.

The guide (``docs/SETUP_GUIDE.md``) describes one edge function that fetches all connected accounts, then for
each one refreshes its tokens, encrypts and stores the new pair (AES-256-GCM), marks a dead refresh token
``expired`` and other failures ``error``, and waits 200 ms before the next ("Rate Limiting: 200ms delay
between refresh requests"). Here that is: one process, the connected rows read into a list up front, one
authlib ``OAuth2Client`` (httpx-based, what a Python user would pick) reused for every refresh, AES-GCM with
``cryptography``, one autocommitted ``UPDATE`` per row through ``sqlite3`` (the pragmas lightkeeper uses),
``time.sleep``. Nothing of lightkeeper is imported, so its CPU is the baseline's own.

The rows are the ones ``bench.bulk`` seeds, so the ciphertext format is lightkeeper's (``lk1:<kid>:<data>``,
bound to the row); the guide's own format would differ only in the envelope, not in the AES-GCM work.

    python -m bench.guide_loop DATABASE_FILE [--sleep-ms 200]

Reads ``LIGHTSPEED_OAUTH_URL``, ``LIGHTSPEED_CLIENT_ID``, ``LIGHTSPEED_CLIENT_SECRET`` and
``TOKEN_ENCRYPTION_KEY`` from the environment; prints one JSON object: the counts and the loop's own
``started``/``finished`` (epoch seconds), so start-up can be left out.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx2
from authlib.integrations.httpx_client import OAuth2Client, OAuthError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PRAGMAS = ("journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL")  # as lightkeeper's engine


class Sealer:
    """AES-256-GCM in lightkeeper's envelope: ``lk1:<key id>:base64url(nonce || ciphertext || tag)``."""

    def __init__(self, key_text: str) -> None:
        key = base64.b64decode(key_text)
        self.kid = hashlib.sha256(b"lightkeeper-key-id:" + key).hexdigest()[:8]
        self.aead = AESGCM(key)

    def seal(self, plaintext: str, row_id: int, field: str) -> str:
        nonce = os.urandom(12)
        blob = nonce + self.aead.encrypt(nonce, plaintext.encode(), _aad(row_id, field))
        return f"lk1:{self.kid}:{base64.urlsafe_b64encode(blob).rstrip(b'=').decode()}"

    def open(self, sealed: str, row_id: int, field: str) -> str:
        data = sealed.split(":")[2]
        blob = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        return self.aead.decrypt(blob[:12], blob[12:], _aad(row_id, field)).decode()


def _aad(row_id: int, field: str) -> bytes:
    return f"lightspeed_connections:{row_id}:{field}".encode()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # lightkeeper keeps naive UTC in SQLite


def save_tokens(db: sqlite3.Connection, sealer: Sealer, row_id: int, token: dict[str, object]) -> None:
    now = _now()
    db.execute(
        "UPDATE lightspeed_connections SET access_token = ?, refresh_token = ?, token_expires_at = ?, "
        "last_token_refresh_at = ?, status = 'connected', last_error = NULL, updated_at = ? WHERE id = ?",
        (
            sealer.seal(str(token["access_token"]), row_id, "access_token"),
            sealer.seal(str(token["refresh_token"]), row_id, "refresh_token"),
            str(now + timedelta(seconds=int(str(token["expires_in"])))),
            str(now),
            str(now),
            row_id,
        ),
    )


def mark(db: sqlite3.Connection, row_id: int, status: str, error: str) -> None:
    db.execute(
        "UPDATE lightspeed_connections SET status = ?, last_error = ?, updated_at = ? WHERE id = ?",
        (status, error, str(_now()), row_id),
    )


def refresh_all(
    db: sqlite3.Connection, client: OAuth2Client, sealer: Sealer, url: str, sleep_s: float
) -> dict[str, int]:
    """The guide's loop: every connected row, one after the other, a pause after each."""
    counts = {"refreshed": 0, "expired": 0, "errors": 0}
    rows = db.execute("SELECT id, refresh_token FROM lightspeed_connections WHERE status = 'connected'").fetchall()
    for row_id, sealed in rows:
        try:
            token = client.refresh_token(url, refresh_token=sealer.open(sealed, row_id, "refresh_token"))
            save_tokens(db, sealer, row_id, token)
            counts["refreshed"] += 1
        except OAuthError as exc:
            expired = exc.error == "invalid_grant"
            mark(db, row_id, "expired" if expired else "error", str(exc.error))
            counts["expired" if expired else "errors"] += 1
        except httpx2.HTTPError as exc:
            mark(db, row_id, "error", type(exc).__name__)
            counts["errors"] += 1
        time.sleep(sleep_s)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guide_loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("database", help="the SQLite file lightkeeper's schema was seeded into")
    parser.add_argument("--sleep-ms", type=float, default=200.0, help="pause after each refresh (default 200)")
    args = parser.parse_args(argv)
    url = os.environ["LIGHTSPEED_OAUTH_URL"].rstrip("/") + "/auth/oauth/token"
    sealer = Sealer(os.environ["TOKEN_ENCRYPTION_KEY"])
    db = sqlite3.connect(args.database, isolation_level=None)  # autocommit: one transaction per UPDATE
    for pragma in _PRAGMAS:
        db.execute(f"PRAGMA {pragma}")
    client = OAuth2Client(
        os.environ["LIGHTSPEED_CLIENT_ID"],
        os.environ["LIGHTSPEED_CLIENT_SECRET"],
        token_endpoint=url,
        token_endpoint_auth_method="client_secret_post",  # Lightspeed documents the form fields
        timeout=30.0,
    )
    with client:
        started = time.time()
        counts = refresh_all(db, client, sealer, url, args.sleep_ms / 1000)
        finished = time.time()
    db.close()
    print(json.dumps({**counts, "started": started, "finished": finished}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
