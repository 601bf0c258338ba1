"""Key rotation: every stored secret re-encrypted under ``TOKEN_ENCRYPTION_KEY`` while the old keys
(``TOKEN_ENCRYPTION_OLD_KEYS``) still decrypt it, so that the old keys can then be dropped.

* Connection tokens, of every status (expired included; a disconnected row holds none), are read in batches by
  id. Each row is re-encrypted under its own lease and written fenced on that lease and its ``token_version``,
  so a worker refreshing at the same time loses nothing: either it holds the lease (the row is tried again
  after the others), or it saved first (the row is then already under the primary key: a refresh seals with it).
* PKCE verifiers of OAuth states are swapped compare-and-set on the old ciphertext (no lease: a state is
  written once and only ever marked used after that).
* Resumable after a crash without any bookkeeping: a rerun finds exactly what is still under another key.
* A row under a key that is not configured is a key problem, never "corrupted"; a row that does not
  authenticate with its (configured) key was altered or copied from another row. Both are counted and left as
  they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum

from .crypto import TokenCipher, ciphertext_key_id, verifier_context
from .errors import ConfigError, DecryptError
from .store import ConnectionRecord, Lease, Store, StoredVerifier
from .vault import ACCESS, REFRESH

#: Called after every batch with (rows handled so far, rows to handle in all).
ProgressCallback = Callable[[int, int], None]

#: A row needs milliseconds (two decrypts, two encrypts, one write); a rotation killed mid-row frees it soon.
LEASE = timedelta(seconds=10)
#: How long to keep trying rows a refresh holds. Longer than ``LEASE``, so a row left leased by a killed
#: rotation is always finished by the next one; a refresh holds its row for one request.
WAIT = timedelta(seconds=30)
_POLL_S = 0.25


class _Outcome(Enum):
    ROTATED = "rotated"
    CURRENT = "current"  # already under the primary key (a refresh re-sealed it meanwhile): nothing to do
    LEASED = "leased"  # someone else holds the row: try again later
    UNKNOWN_KEY = "unknown_key"
    TAMPERED = "tampered"


@dataclass
class RotationSummary:
    """What a rotation did and what it had to leave; ``complete`` when every secret is under the primary key."""

    primary_key_id: str
    #: Secrets under another key when the rotation began (connections and verifiers): the progress total.
    total: int = 0
    reencrypted: int = 0
    verifiers: int = 0
    #: Secrets under the primary key at the end that this rotation did not have to re-encrypt.
    already_current: int = 0
    left_leased: int = 0
    unknown_keys: dict[str, int] = field(default_factory=dict)
    tampered: int = 0
    #: The connections among ``tampered`` (a tampered verifier has no id people know).
    tampered_connections: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.left_leased == 0 and not self.unknown_keys and self.tampered == 0

    @property
    def problems(self) -> list[str]:
        """One sentence for each kind of row left behind, never a secret."""
        found = [
            f"{n} row(s) are under key id {kid}, which is not configured; add that key to "
            "TOKEN_ENCRYPTION_OLD_KEYS and run rotate-key again"
            for kid, n in sorted(self.unknown_keys.items())
        ]
        if self.tampered:
            found.append(_tampered_sentence(self.tampered, self.tampered_connections))
        if self.left_leased:
            found.append(
                f"{self.left_leased} connection(s) were held by a refresh for longer than the wait; "
                "run rotate-key again"
            )
        return found


def _tampered_sentence(count: int, connection_ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in connection_ids[:10]) + (", …" if len(connection_ids) > 10 else "")
    where = f" (connection(s) {shown})" if connection_ids else ""
    return (
        f"{count} stored secret(s) do not authenticate with their key{where}: altered, or copied from another "
        "row; left untouched"
    )


class _Tally:
    """The summary being built, and the progress reported from it."""

    def __init__(self, summary: RotationSummary, progress: ProgressCallback | None) -> None:
        self.summary, self._progress, self._handled = summary, progress, 0
        self._reported: int | None = None

    def count(self, outcome: _Outcome, *, kid: str | None = None, connection_id: int | None = None) -> None:
        summary, self._handled = self.summary, self._handled + 1
        if outcome is _Outcome.ROTATED:
            if connection_id is None:
                summary.verifiers += 1
            else:
                summary.reencrypted += 1
        elif outcome is _Outcome.UNKNOWN_KEY and kid is not None:
            summary.unknown_keys[kid] = summary.unknown_keys.get(kid, 0) + 1
        elif outcome is _Outcome.TAMPERED:
            summary.tampered += 1
            if connection_id is not None:
                summary.tampered_connections.append(connection_id)

    def report(self) -> None:
        """Tell ``progress`` where we are, unless nothing moved since it was last told (waiting on held rows)."""
        if self._progress is not None and self._reported != self._handled:
            self._reported = self._handled
            self._progress(self._handled, max(self.summary.total, self._handled))


class KeyRotation:
    """Moves every stored secret to the primary key; ``run`` may be repeated (and resumed) at any time."""

    def __init__(
        self,
        store: Store,
        cipher: TokenCipher,
        *,
        owner: str,
        lease: timedelta = LEASE,
        wait: timedelta = WAIT,
        pause: timedelta = timedelta(0),
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.cipher, self.owner = store, cipher, owner
        self.lease, self.wait, self.pause = lease, wait, pause
        self._sleep, self._monotonic = sleep, monotonic
        self._primary = cipher.primary_key_id
        self._configured = frozenset(cipher.key_ids)

    def run(self, *, batch_size: int = 100, progress: ProgressCallback | None = None) -> RotationSummary:
        """Re-encrypt in batches of ``batch_size``; rows a refresh holds are tried again at the end for up to
        ``wait``. ``progress`` is called after every batch."""
        if batch_size < 1:
            raise ConfigError("the batch size must be at least 1")
        tally = _Tally(RotationSummary(self._primary, total=self._census()[0]), progress)
        tally.report()
        held = self._connections(batch_size, tally)
        self._verifiers(batch_size, tally)
        self._retry(held, tally)
        summary = tally.summary
        # Counted at the end: a refresh running alongside re-seals rows under the primary key before we reach them.
        summary.already_current = max(0, self._census()[1] - summary.reencrypted - summary.verifiers)
        return summary

    def _census(self) -> tuple[int, int]:
        """(secrets under another key, secrets under the primary key), connections and verifiers together."""
        stale = self.store.keys.count_connections_under_other_key(self._primary)
        with_tokens = sum(self.store.connections.key_ids().values())
        verifiers = self.store.keys.verifier_key_ids()
        current_verifiers = verifiers.get(self._primary, 0)
        return stale + sum(verifiers.values()) - current_verifiers, max(0, with_tokens - stale) + current_verifiers

    # -- connections ---------------------------------------------------------------------------------------
    def _connections(self, batch_size: int, tally: _Tally) -> list[ConnectionRecord]:
        """Every batch once (keyset pagination by id); the rows someone else held, to try again."""
        held: list[ConnectionRecord] = []
        after_id = 0
        scan = self.store.keys.connections_under_other_key
        while batch := scan(self._primary, after_id=after_id, limit=batch_size):
            held += [record for record in batch if not self._connection(record, tally)]
            after_id = batch[-1].id
            self._between_batches(len(batch) == batch_size, tally)
        return held

    def _retry(self, held: list[ConnectionRecord], tally: _Tally) -> None:
        deadline = self._monotonic() + self.wait.total_seconds()
        while held:
            held = [record for record in held if not self._connection(record, tally)]
            tally.report()
            if not held or self._monotonic() >= deadline:
                break
            self._sleep(_POLL_S)
        tally.summary.left_leased = len(held)

    def _connection(self, record: ConnectionRecord, tally: _Tally) -> bool:
        """Handle one connection; False when someone else holds its lease."""
        if (kid := self._unknown_kid(record)) is not None:  # nothing to do: no need to hold the row
            tally.count(_Outcome.UNKNOWN_KEY, kid=kid, connection_id=record.id)
            return True
        lease = self.store.connections.acquire(record.id, owner=self.owner, lease=self.lease)
        if lease is None:
            return False
        outcome = self._under_lease(lease)
        if outcome is _Outcome.LEASED:
            return False
        tally.count(outcome, kid=self._unknown_kid(lease.record), connection_id=record.id)
        return True

    def _under_lease(self, lease: Lease) -> _Outcome:
        record = lease.record
        try:
            outcome, pair = self._resealed(record)
            if pair is None:
                self.store.connections.release(record.id, lease.token)
                return outcome
            written = self.store.connections.reencrypt(
                record.id,
                lease_token=lease.token,
                version=record.token_version,
                access_token=pair[0],
                refresh_token=pair[1],
            )
        except BaseException:
            self.store.connections.release(record.id, lease.token)
            raise
        # Not written: our lease ran out and a refresh took the row over; its next look decides.
        return _Outcome.ROTATED if written else _Outcome.LEASED

    def _resealed(self, record: ConnectionRecord) -> tuple[_Outcome, tuple[str | None, str | None] | None]:
        """The row's tokens under the primary key, or why there is nothing to write."""
        if not any(token is not None and ciphertext_key_id(token) != self._primary for token in _tokens(record)):
            return _Outcome.CURRENT, None
        if self._unknown_kid(record) is not None:
            return _Outcome.UNKNOWN_KEY, None
        try:  # every key id is configured by now: a failure here is the data's, not the configuration's
            pair = (
                self._reseal(record, ACCESS, record.access_token),
                self._reseal(record, REFRESH, record.refresh_token),
            )
        except DecryptError:
            return _Outcome.TAMPERED, None
        return _Outcome.ROTATED, pair

    def _reseal(self, record: ConnectionRecord, field_name: str, token: str | None) -> str | None:
        if token is None:
            return None
        plain = self.cipher.decrypt(token, connection_id=record.id, field=field_name)
        return self.cipher.encrypt(plain, connection_id=record.id, field=field_name)

    def _unknown_kid(self, record: ConnectionRecord) -> str | None:
        return self._first_unknown(_tokens(record))

    def _first_unknown(self, ciphertexts: Iterable[str | None]) -> str | None:
        """The first key id named that is not configured (a value that is no ciphertext names none)."""
        kids = (ciphertext_key_id(text) for text in ciphertexts if text is not None)
        return next((kid for kid in kids if kid is not None and kid not in self._configured), None)

    # -- PKCE verifiers --------------------------------------------------------------------------------------
    def _verifiers(self, batch_size: int, tally: _Tally) -> None:
        after = ""
        scan = self.store.keys.verifiers_under_other_key
        while batch := scan(self._primary, after=after, limit=batch_size):
            for stored in batch:
                tally.count(self._verifier(stored), kid=self._first_unknown([stored.code_verifier]))
            after = batch[-1].state_hash
            self._between_batches(len(batch) == batch_size, tally)

    def _verifier(self, stored: StoredVerifier) -> _Outcome:
        if self._first_unknown([stored.code_verifier]) is not None:
            return _Outcome.UNKNOWN_KEY
        context = verifier_context(stored.state_hash)
        try:
            plain = self.cipher.decrypt_text(stored.code_verifier, context=context)
        except DecryptError:
            return _Outcome.TAMPERED
        fresh = self.cipher.encrypt_text(plain, context=context)
        swapped = self.store.sessions.rewrap_verifier(stored.state_hash, old=stored.code_verifier, new=fresh)
        return _Outcome.ROTATED if swapped else _Outcome.CURRENT  # not swapped: another rotation was first

    def _between_batches(self, more: bool, tally: _Tally) -> None:
        tally.report()
        if more and self.pause > timedelta(0):
            self._sleep(self.pause.total_seconds())


def _tokens(record: ConnectionRecord) -> tuple[str | None, str | None]:
    return record.access_token, record.refresh_token


__all__ = ["LEASE", "WAIT", "KeyRotation", "ProgressCallback", "RotationSummary"]
