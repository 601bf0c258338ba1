"""A corrupt SQLite file, another application's SQLite file, and malformed ``DATABASE_URL`` values given to the
CLI: one sentence on stderr, a non-zero exit, no traceback, and the file left exactly as it was (bytes and
modification time)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from lightkeeper.cli.app import run
from tests.faults.support import process_env
from tests.replicas.test_replicas import lightkeeper_executable

COMMANDS = [["status"], ["runs"], ["refresh", "--all"]]


def foreign_file(path: Path) -> Path:
    """Some other application's database: tables of its own, rows, no lightkeeper schema."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [("milk",), ("eggs",)])
    conn.close()
    return path


def corrupt_file(path: Path) -> Path:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4080))
    return path


def snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    """Bytes, modification time and the directory's files (no -wal/-journal left). The mode is not compared:
    lightkeeper makes every SQLite file it opens readable by its owner only, by design (store/engine.py)."""
    siblings = sorted(p.name for p in path.parent.iterdir())
    return path.read_bytes(), path.stat().st_mtime_ns, siblings


@pytest.mark.parametrize("make", [foreign_file, corrupt_file], ids=["foreign", "corrupt"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_database_file_that_is_not_ours_is_refused_untouched(
    make: object, command: list[str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = make(data / "other.db")  # type: ignore[operator]
    path.chmod(0o644)
    before = snapshot(path)
    env = process_env(tmp_path, f"sqlite:///{path}", "http://127.0.0.1:1")
    result = subprocess.run(
        [lightkeeper_executable(), *command], env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert snapshot(path) == before, "the file (or its directory) was changed"
    if make is foreign_file:  # never advice that would create our tables in someone else's database
        assert "another application's database" in lines[0] and "db upgrade" not in lines[0], lines[0]


MALFORMED = [
    "not a url",
    "sqlite",
    "mysql://user@host/db",
    "postgresql://user@host:notaport/db",
    "postgresql://[::1/db",
    "://nothing",
    "http://example.com/db",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_database_url_is_one_sentence(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name, value in process_env(tmp_path, "sqlite:///unused.db", "http://127.0.0.1:1").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)

    code = run(["runs"])

    captured = capsys.readouterr()
    assert code != 0
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err, captured.err
    assert "DATABASE_URL" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"], "nothing was created"
