"""Text from outside (user ids, account names, paths) can neither forge a log line nor drive the terminal."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from rich.console import Console

from lightkeeper.cli import output
from lightkeeper.logs import JsonFormatter, TextFormatter, escape_controls


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain user-42", "plain user-42"),
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00 del\x7f c1\x85", "nul\\x00 del\\x7f c1\\x85"),
        ("line\u2028sep\u202eevil", "line\\u2028sep\\u202eevil"),
        ("café ☕ 東京", "café ☕ 東京"),
    ],
)
def test_control_characters_are_written_as_escapes(text: str, shown: str) -> None:
    assert escape_controls(text) == shown


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("lightkeeper.test", logging.INFO, __file__, 1, message, args, None)


def test_text_logs_escape_the_message_and_keep_one_line() -> None:
    record = _record("connected for user %s", "evil\n2026-01-01 ERROR forged")
    line = TextFormatter("%(levelname)s %(message)s").format(record)
    assert line == "INFO connected for user evil\\n2026-01-01 ERROR forged"
    assert record.getMessage() == "connected for user evil\n2026-01-01 ERROR forged"  # other handlers: unchanged


def test_text_logs_keep_a_tracebacks_own_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed for %s", ("a\nb",), sys.exc_info())
    text = TextFormatter("%(message)s").format(record)
    assert text.startswith("failed for a\\nb\nTraceback")


def test_json_logs_are_one_line_too() -> None:
    assert "\n" not in JsonFormatter().format(_record("user %s", "a\nb"))


def test_cli_tables_and_errors_print_markup_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    console = Console(file=screen, width=200, highlight=False, soft_wrap=True, force_terminal=True)
    monkeypatch.setattr(output, "out", console)
    monkeypatch.setattr(output, "err", console)

    output.table("t", ["user_id"], [["[/] [link=https://evil.example]click[/link]"], ["\x1b]8;;x\x1b\\"]])
    output.error("no connection [bold]x[/bold]\n")

    printed = screen.getvalue()
    assert "[/] [link=https://evil.example]click[/link]" in printed
    assert "\x1b]8;" not in printed  # no terminal hyperlink, planted or made by Rich
    assert "\\x1b]8;;x\\x1b\\" in printed
    assert "no connection [bold]x[/bold]\\n" in printed
