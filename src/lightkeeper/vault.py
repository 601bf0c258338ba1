"""Sealing token pairs into a connection row and opening them again.

The only place where plaintext tokens and ciphertexts meet; each value is bound to its row id and
field, so a ciphertext copied to another row or column does not decrypt.
"""

from __future__ import annotations

from .crypto import TokenCipher
from .errors import ConnectionExpired
from .lightspeed import TokenSet
from .store import ConnectionRecord, NewTokens

ACCESS = "access_token"
REFRESH = "refresh_token"


class TokenVault:
    def __init__(self, cipher: TokenCipher) -> None:
        self._cipher = cipher

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of every configured key (the primary first)."""
        return self._cipher.key_ids

    def seal(self, connection_id: int, tokens: TokenSet) -> NewTokens:
        access, refresh = self.seal_pair(connection_id, tokens)
        return NewTokens(access_token=access, refresh_token=refresh, expires_at=tokens.expires_at)

    def seal_pair(self, connection_id: int, tokens: TokenSet) -> tuple[str, str]:
        encrypt = self._cipher.encrypt
        return (
            encrypt(tokens.access_token, connection_id=connection_id, field=ACCESS),
            encrypt(tokens.refresh_token, connection_id=connection_id, field=REFRESH),
        )

    def refresh_token(self, record: ConnectionRecord) -> str:
        return self._open(record, REFRESH, record.refresh_token)

    def access_token(self, record: ConnectionRecord) -> str:
        return self._open(record, ACCESS, record.access_token)

    def _open(self, record: ConnectionRecord, field: str, ciphertext: str | None) -> str:
        if ciphertext is None:
            raise ConnectionExpired(f"connection {record.id} has no stored tokens: the merchant must reconnect")
        return self._cipher.decrypt(ciphertext, connection_id=record.id, field=field)


__all__ = ["TokenVault"]
