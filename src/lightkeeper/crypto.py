"""AES-256-GCM for tokens at rest: a key id in every ciphertext, the owner bound in as associated data.

A ciphertext reads ``lk1:<kid>:<base64url(nonce || ciphertext || tag)>``:

* ``lk1`` names the format, so a later format can live beside this one;
* ``kid`` (:func:`key_id`) names the key without revealing it, so several keys can be configured at once
  (``TOKEN_ENCRYPTION_KEY`` encrypts, ``TOKEN_ENCRYPTION_OLD_KEYS`` only decrypt) and rotation is possible;
* the associated data is a *context* such as ``lightspeed_connections:42:refresh_token``: a value copied into
  another row or another column fails authentication instead of decrypting as someone else's token.

Errors never carry a plaintext, a key or a ciphertext: they are shown to users and kept in run records.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ConfigError, DecryptError, UnknownKey
from .keys import KEY_BYTES, parse_key, split_keys

FORMAT = "lk1"
_NONCE_BYTES = 12  # the size GCM is specified for; random nonces are safe far beyond our volume
_TAG_BYTES = 16
_KID_CHARS = 8
_KID_DOMAIN = b"lightkeeper-key-id:"  # keeps the key id unrelated to any other hash of the key
_NOT_CONFIGURED = "(TOKEN_ENCRYPTION_KEY / TOKEN_ENCRYPTION_OLD_KEYS)"


# --- keys -------------------------------------------------------------------------------------------


def generate_key() -> str:
    """A new random key, as standard base64 (44 characters): a value for ``TOKEN_ENCRYPTION_KEY``."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    """A short public name for a key: the first 8 hex characters of a domain-separated SHA-256."""
    return hashlib.sha256(_KID_DOMAIN + key).hexdigest()[:_KID_CHARS]


def connection_context(connection_id: int, field: str) -> str:
    """The associated data binding a token to one column of one ``lightspeed_connections`` row."""
    return f"lightspeed_connections:{connection_id}:{field}"


def verifier_context(state_hash: str) -> str:
    """The associated data binding a PKCE verifier to its OAuth state (``lightkeeper_oauth_states`` row)."""
    return f"oauth_state:{state_hash}"


# --- the cipher -------------------------------------------------------------------------------------


class TokenCipher:
    """Encrypts with the primary key; decrypts with whichever configured key the ciphertext names."""

    def __init__(self, primary: bytes, old: Sequence[bytes] = ()) -> None:
        self._primary_kid = key_id(_checked_key(primary))
        self._aeads: dict[str, AESGCM] = {}
        self._key_digests: dict[str, bytes] = {}
        for key in (primary, *old):
            self._add(_checked_key(key))

    def _add(self, key: bytes) -> None:
        kid = key_id(key)
        digest = hashlib.sha256(key).digest()
        known = self._key_digests.get(kid)
        if known is None:
            self._aeads[kid] = AESGCM(key)
            self._key_digests[kid] = digest
        elif known != digest:
            # Two different keys with one id would make decryption pick the wrong one.
            raise ConfigError(f"two configured keys share the key id {kid}: generate a new key")

    @classmethod
    def from_texts(cls, primary: str, old: str = "") -> TokenCipher:
        """The cipher for ``TOKEN_ENCRYPTION_KEY`` and a comma-separated ``TOKEN_ENCRYPTION_OLD_KEYS``."""
        if not primary.strip():
            raise ConfigError("Missing Lightspeed credentials: TOKEN_ENCRYPTION_KEY")
        old_keys = [parse_key(text, name="TOKEN_ENCRYPTION_OLD_KEYS") for text in split_keys(old)]
        return cls(parse_key(primary), old_keys)

    @property
    def primary_key_id(self) -> str:
        """The id of the key new ciphertexts are made with."""
        return self._primary_kid

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of every key that can decrypt, the primary first."""
        return tuple(self._aeads)

    def __repr__(self) -> str:
        old = [kid for kid in self._aeads if kid != self._primary_kid]
        return f"TokenCipher(primary_key_id={self._primary_kid!r}, old_key_ids={old!r})"

    # --- generic secrets ---

    def encrypt_text(self, plaintext: str, *, context: str) -> str:
        """Encrypt ``plaintext`` with the primary key, bound to ``context``; a fresh nonce every call."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[self._primary_kid].encrypt(nonce, plaintext.encode("utf-8"), _aad(context))
        data = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{FORMAT}:{self._primary_kid}:{data}"

    def decrypt_text(self, token: str, *, context: str) -> str:
        """The plaintext of ``token``; :class:`DecryptError` if the key, the data or the context is wrong."""
        kid, blob = _split(token)
        aead = self._aeads.get(kid)
        if aead is None:
            raise UnknownKey(f"ciphertext was made with key {kid}, which is not configured {_NOT_CONFIGURED}")
        try:
            plain = aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _aad(context))
        except InvalidTag as exc:
            raise DecryptError(
                f"ciphertext does not authenticate with key {kid}: it was altered, "
                "or it belongs to another record or field"
            ) from exc
        return plain.decode("utf-8")

    # --- connection tokens ---

    def encrypt(self, plaintext: str, *, connection_id: int, field: str) -> str:
        """Encrypt a token of connection ``connection_id``, column ``field``."""
        return self.encrypt_text(plaintext, context=connection_context(connection_id, field))

    def decrypt(self, token: str, *, connection_id: int, field: str) -> str:
        """Decrypt a token of connection ``connection_id``, column ``field``."""
        return self.decrypt_text(token, context=connection_context(connection_id, field))

    def needs_rotation(self, token: str) -> bool:
        """Whether ``token`` was made with a key other than the primary (re-encrypt it to rotate).

        Raises :class:`DecryptError` when ``token`` is not a lightkeeper ciphertext at all.
        """
        return _split(token)[0] != self._primary_kid


def ciphertext_key_id(token: str) -> str | None:
    """The key id a ciphertext names (``lk1:<kid>:…``), without decrypting it; None when ``token`` is no
    lightkeeper ciphertext (decrypting it says why)."""
    parts = token.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == FORMAT else None


def _checked_key(key: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise ConfigError("TOKEN_ENCRYPTION_KEY must be 32 bytes, base64 or hex")
    return key


def _aad(context: str) -> bytes:
    return context.encode("utf-8")


def _split(token: str) -> tuple[str, bytes]:
    """``(kid, nonce || ciphertext || tag)`` of a token; :class:`DecryptError` when it is malformed."""
    parts = token.split(":")
    if len(parts) != 3 or parts[0] != FORMAT or not _is_kid(parts[1]):
        raise DecryptError(f"value is not a lightkeeper ciphertext (expected {FORMAT}:<key id>:<data>)")
    kid, data = parts[1], parts[2]
    if set(data) & set("+/="):  # our own alphabet is url-safe and unpadded
        raise DecryptError("ciphertext data is not unpadded base64url")
    try:
        blob = base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecryptError("ciphertext data is not valid base64url") from exc
    # The last character carries unused bits: a changed one can decode to the same bytes. Only the encoding we
    # write is accepted, so any change to the stored text is a DecryptError.
    if base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii") != data:
        raise DecryptError("ciphertext data is not valid base64url")
    if len(blob) < _NONCE_BYTES + _TAG_BYTES:
        raise DecryptError("ciphertext is too short to be genuine")
    return kid, blob


def _is_kid(text: str) -> bool:
    return len(text) == _KID_CHARS and set(text) <= set("0123456789abcdef")


__all__ = [
    "FORMAT",
    "KEY_BYTES",
    "TokenCipher",
    "ciphertext_key_id",
    "connection_context",
    "generate_key",
    "key_id",
    "parse_key",
    "split_keys",
    "verifier_context",
]
