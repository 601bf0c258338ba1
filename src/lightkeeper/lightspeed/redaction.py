"""Making provider and exception text safe to show: ``scrub`` hides secrets and token-like strings.

Error messages are shown to operators and written to run records. A provider may echo what we sent, and what
we send contains tokens, codes and our client secret, so every piece of provider text is scrubbed of the
values we sent (``redact``) and of anything that looks like a token before it goes into a message.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import quote, quote_plus

_MAX_TEXT = 200
# Shorter values cannot be real secrets, and scrubbing them would mangle ordinary words.
_MIN_REDACT_LEN = 4
_HIDDEN = "***"

# JWTs (our access tokens start with eyJ), and unbroken runs of token alphabet (refresh tokens, codes).
_JWT_LIKE = re.compile(r"eyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?")
_RUN = re.compile(r"[A-Za-z0-9_\-.~+=]{20,}")
# A run this long is a token; a shorter one (20+) only if it mixes letters and digits, as words rarely do.
_LONG_RUN = 32
# Our own form fields echoed back, e.g. "refresh_token=def50..." or '"client_secret": "..."'.
_ECHOED_FIELD = re.compile(
    r"(?i)\b(client_secret|refresh_token|access_token|code_verifier|code)\b(\"?\s*[=:]\s*\"?)[^\s&\",;]+"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\s]+")


def scrub(text: str, redact: Collection[str] = ()) -> str:
    """Provider or exception text made safe to show: secrets hidden, one line, at most ~200 characters."""
    for value in sorted(_redact_forms(redact), key=len, reverse=True):
        text = text.replace(value, _HIDDEN)
    text = _ECHOED_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{_HIDDEN}", text)
    text = _RUN.sub(_hide_token_like, _JWT_LIKE.sub(_HIDDEN, text))
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1].rstrip() + "…"


def _hide_token_like(match: re.Match[str]) -> str:
    run = match.group(0)
    mixed = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
    return _HIDDEN if len(run) >= _LONG_RUN or mixed else run


def _redact_forms(redact: Collection[str]) -> set[str]:
    """Each secret as sent and as it would look if echoed back form- or url-encoded."""
    forms: set[str] = set()
    for value in redact:
        if len(value) >= _MIN_REDACT_LEN:
            forms.update({value, quote_plus(value), quote(value, safe="")})
    return forms


__all__ = ["scrub"]
