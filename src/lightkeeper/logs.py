"""Logging set-up: text for people, one JSON object a line for machines (``LOG_FORMAT=json``).

Nothing here redacts: our messages never carry a token. Access logs of the web server are off because
URLs of the connect flow carry one-time secrets (link tokens, OAuth codes); ``web`` logs paths only.

Messages do carry text from outside (user ids, account names, request paths). In text logs every control
character in a message is escaped, so a newline in a user id cannot forge a log line and an escape
sequence cannot repaint an operator's terminal; JSON logs get the same from ``json.dumps``.

Structured events: a record logged with ``extra={"event": "refresh", "fields": {...}}`` prints its fields
as ``key=value`` pairs after the message in text, and as keys of the object (beside ``event``) in JSON. The
callers check ``isEnabledFor`` first, so a disabled level costs no dict.
"""

from __future__ import annotations

import json
import logging
import sys
import unicodedata
from datetime import UTC, datetime

# Besides C0/C1 controls (category Cc): line and paragraph separators, which some viewers break lines on,
# and the bidirectional overrides and isolates, which reorder what a reader sees.
_ALSO_ESCAPED = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """``text`` with each control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    if text.isprintable():  # the common case, and fast
        return text
    return "".join(_escape_char(char) for char in text)


def _escape_char(char: str) -> str:
    if char not in _ALSO_ESCAPED and unicodedata.category(char) != "Cc":
        return char
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def event_fields(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields of a record (empty for a plain message)."""
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _pairs(fields: dict[str, object]) -> str:
    return "".join(f" {key}={_value(value)}" for key, value in fields.items())


def _value(value: object) -> str:
    text = "-" if value is None else str(value)
    # Quoted when it has room for confusion (spaces, quotes, "="), so pairs split unambiguously.
    if not text or any(char in text for char in ' "='):
        text = json.dumps(text, ensure_ascii=False)
    return escape_controls(text)


class TextFormatter(logging.Formatter):
    """The standard text format, with the message's control characters escaped (tracebacks keep theirs),
    and an event's fields as ``key=value`` pairs after the message."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        original = record.message
        record.message = escape_controls(original) + _pairs(event_fields(record))
        try:
            return super().formatMessage(record)
        finally:
            record.message = original  # other handlers (and pytest's caplog) see the record unchanged


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (event := getattr(record, "event", None)) is not None:
            entry["event"] = str(event)
        for key, value in event_fields(record).items():
            entry.setdefault(key, value)  # a field never hides the standard keys
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; useful only when debugging.
    for noisy in ("httpx2", "httpx", "httpcore", "httpcore2", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


__all__ = ["JsonFormatter", "TextFormatter", "configure", "escape_controls", "event_fields"]
