"""PKCE (RFC 7636, S256) and OAuth ``state`` values, drawn from ``secrets``."""

from __future__ import annotations

import base64
import hashlib
import secrets

# 48 random bytes encode to exactly 64 url-safe characters, inside RFC 7636's 43..128 range.
_VERIFIER_BYTES = 48
_STATE_BYTES = 32


def new_pkce() -> tuple[str, str]:
    """A fresh ``(code_verifier, code_challenge)`` pair for ``code_challenge_method=S256``."""
    verifier = secrets.token_urlsafe(_VERIFIER_BYTES)
    return verifier, s256_challenge(verifier)


def s256_challenge(verifier: str) -> str:
    """The S256 challenge of a verifier: base64url of its SHA-256, without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An unguessable OAuth ``state`` value (32 random bytes, url-safe)."""
    return secrets.token_urlsafe(_STATE_BYTES)


__all__ = ["new_pkce", "new_state", "s256_challenge"]
