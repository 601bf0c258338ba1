"""Fixtures that run the installed ``lightkeeper`` command as a subprocess, as an operator (or a checker) would.

``cli`` runs one command with a clean environment pointed at the test simulator and a database of the test's
own; ``web`` runs ``lightkeeper serve`` so connect links can be completed over HTTP. After every test, the
``cli`` fixture checks invariant 4 on everything it saw: no token the simulator issued appears in any output
of any command, nor in the SQLite file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from lightkeeper import Keeper, load_settings
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.views import ConnectionView
from lightkeeper.web.browser import continue_to_lightspeed
from tests.conftest import CLIENT_ID, CLIENT_SECRET
from tests.helpers import TEST_KEY, connect
from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    pg_clones,
    pg_database_url,
    pg_empty_database_url,
    pg_template,
)

API_KEY = "acceptance-api-key-7c1e-5f08b2d94a61"  # at least 32 characters, or serve refuses it
COMMAND_TIMEOUT_S = 60.0
WEB_START_TIMEOUT_S = 30.0
WEB_STOP_TIMEOUT_S = 10.0

# What the simulator's tokens look like, for outputs whose tokens we cannot list (the demo's own simulator):
# refresh tokens are "def50" + 320 hex digits, access tokens are JWTs ({"alg"... . {"acct"... . signature).
TOKEN_SHAPES = (
    re.compile(rb"def50[0-9a-f]{64}"),
    re.compile(rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\."),
)


def lightkeeper_executable() -> str:
    """The console script installed next to this interpreter (the package may have no ``__main__``)."""
    found = shutil.which("lightkeeper", path=os.path.dirname(sys.executable))
    if found is None:
        pytest.fail(
            f"no `lightkeeper` console script next to {sys.executable}: run `pip install -e .` in the venv",
            pytrace=False,
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A failed command's whole story, for assertion messages."""
    command = " ".join(map(str, result.args[1:]))
    return f"`{command}` exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}", pytrace=False)
        time.sleep(interval)


def issued_tokens(server: SimulatorServer) -> set[str]:
    """Every access and refresh token the simulator has issued since its last reset (test-process state)."""
    state = server.state
    with state._lock:
        return set(state._refresh_tokens) | set(state._access_tokens)


def token_leaks(tokens: set[str], data: bytes) -> list[str]:
    """Which tokens occur in ``data`` (shortened, so a failure report does not repeat whole secrets)."""
    found = [f"{token[:12]}…" for token in tokens if token.encode() in data]
    found += [f"a token-shaped string ({shape.pattern[:8]!r}…)" for shape in TOKEN_SHAPES if shape.search(data)]
    return found


def sqlite_bytes(db_path: Path) -> bytes:
    """The database file and its write-ahead log / journal, as they are on disk."""
    parts = [db_path, *(db_path.with_name(db_path.name + suffix) for suffix in ("-wal", "-journal", "-shm"))]
    return b"".join(part.read_bytes() for part in parts if part.exists())


@dataclass
class Lightkeeper:
    """Runs ``lightkeeper`` in subprocesses with one environment; remembers every output for the leak check."""

    executable: str
    cwd: Path
    env: dict[str, str]
    port: int
    db_path: Path | None
    transcript: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _environment(self, env_extra: Mapping[str, str | None] | None, *, bare: bool) -> dict[str, str]:
        env = {key: self.env[key] for key in ("PATH", "HOME")} if bare else dict(self.env)
        for key, value in (env_extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def start(
        self,
        *args: str,
        env_extra: Mapping[str, str | None] | None = None,
        bare: bool = False,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
    ) -> subprocess.Popen[str]:
        """Start a command without waiting for it."""
        return subprocess.Popen(
            [self.executable, *args],
            cwd=self.cwd,
            env=self._environment(env_extra, bare=bare),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
        )

    def finish(
        self, process: subprocess.Popen[str], *, check: int | None = None, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            self.transcript += [stdout or "", stderr or ""]
            pytest.fail(f"{process.args!r} did not finish in {timeout} s:\n{stderr}")
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout or "", stderr or "")
        self.transcript += [result.stdout, result.stderr]
        if check is not None:
            assert result.returncode == check, describe(result)
        return result

    def __call__(
        self,
        *args: str,
        env_extra: Mapping[str, str | None] | None = None,
        check: int | None = None,
        bare: bool = False,
        timeout: float = COMMAND_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``lightkeeper *args``; with ``check``, assert that exit code."""
        return self.finish(self.start(*args, env_extra=env_extra, bare=bare), check=check, timeout=timeout)

    def many(
        self, *calls: Sequence[str], env_extra: Mapping[str, str | None] | None = None, bare: bool = False
    ) -> list[subprocess.CompletedProcess[str]]:
        """Run independent commands side by side (each start costs seconds of imports)."""
        processes = [self.start(*call, env_extra=env_extra, bare=bare) for call in calls]
        return [self.finish(process) for process in processes]

    def json(self, *args: str, env_extra: Mapping[str, str | None] | None = None) -> Any:
        """``lightkeeper *args --json``: exit 0 and exactly one JSON document on stdout."""
        return parse_json(self(*args, "--json", env_extra=env_extra, check=0))

    def keeper(self) -> Keeper:
        """The library on the same settings, in this process: for setting up state fast, never for asserting."""
        keeper = Keeper(load_settings(env=self.env))
        keeper.ensure_schema()
        return keeper

    def seed(self, *users: str) -> list[dict[str, Any]]:
        """Connect ``users`` through the real OAuth code exchange, in-process (no web server needed); each
        connection as ``status --json`` prints it."""
        with self.keeper() as keeper:
            return [ConnectionView.model_validate(connect(keeper, user)).document() for user in users]


def parse_json(result: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        pytest.fail(f"stdout is not one JSON document ({exc}):\n{describe(result)}", pytrace=False)


@pytest.fixture
def backend() -> str:
    """Which database the ``cli`` uses; tests parametrize this to also run on PostgreSQL."""
    return "sqlite"


@pytest.fixture
def lk_database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgresql":
        return str(request.getfixturevalue("pg_database_url"))
    return f"sqlite:///{tmp_path / 'lk.db'}"


@pytest.fixture
def cli(
    tmp_path: Path, lk_database_url: str, simulator_server: SimulatorServer, sim: SimulatorControl
) -> Iterator[Lightkeeper]:
    """``lightkeeper`` against the simulator; the SQLite file (not yet created) lives in ``tmp_path``."""
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LIGHTSPEED_CLIENT_ID": CLIENT_ID,
        "LIGHTSPEED_CLIENT_SECRET": CLIENT_SECRET,
        "TOKEN_ENCRYPTION_KEY": TEST_KEY,
        "DATABASE_URL": lk_database_url,
        "LIGHTSPEED_OAUTH_URL": simulator_server.url,
        "LIGHTSPEED_API_URL": simulator_server.url,
        "LIGHTSPEED_REDIRECT_URI": f"http://127.0.0.1:{port}/oauth/callback",
        "LIGHTKEEPER_API_KEY": API_KEY,
        "REFRESH_DELAY_MS": "0",
    }
    sim.register_redirect_uri(env["LIGHTSPEED_REDIRECT_URI"])  # the simulator refuses unregistered ones
    db_path = tmp_path / "lk.db" if lk_database_url.startswith("sqlite") else None
    harness = Lightkeeper(lightkeeper_executable(), tmp_path, env, port, db_path)
    yield harness
    # Invariant 4, checked after every test on everything the commands printed and wrote.
    tokens = issued_tokens(simulator_server)
    leaks = token_leaks(tokens, "\n".join(harness.transcript).encode())
    assert not leaks, f"plaintext tokens in command output: {leaks}"
    if db_path is not None and db_path.exists():
        leaks = token_leaks(tokens, sqlite_bytes(db_path))
        assert not leaks, f"plaintext tokens in the SQLite file: {leaks}"


@dataclass
class Web:
    """A running ``lightkeeper serve`` and a browser for it."""

    origin: str
    process: subprocess.Popen[str]
    browser: httpx2.Client

    def open(self, link: str) -> httpx2.Response:
        """What a merchant's browser ends on after following a link: its confirm page's Continue button, then
        Lightspeed's consent page (a link refused on GET, or any other URL, answers its own page)."""
        return continue_to_lightspeed(self.browser, link)

    def connect(self, link: str) -> httpx2.Response:
        page = self.open(link)
        assert page.status_code == 200, f"HTTP {page.status_code}: {page.text[:500]}"
        assert "Connected" in page.text, page.text[:500]
        assert str(page.url).startswith(f"{self.origin}/oauth/callback?"), page.url
        return page


@pytest.fixture
def web(cli: Lightkeeper, tmp_path: Path) -> Iterator[Web]:
    """``lightkeeper serve`` on the port of ``LIGHTSPEED_REDIRECT_URI``; stopped with SIGTERM afterwards."""
    out_path, err_path = tmp_path / "serve.out", tmp_path / "serve.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        process = cli.start("serve", "--host", "127.0.0.1", "--port", str(cli.port), stdout=out, stderr=err)
    browser = httpx2.Client(follow_redirects=True, timeout=10)

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"`lightkeeper serve` exited {process.returncode}:\n{err_path.read_text()}", pytrace=False)
        try:
            return browser.get(f"{cli.origin}/healthz").status_code == 200
        except httpx2.TransportError:
            return False

    try:
        wait_for(healthy, timeout=WEB_START_TIMEOUT_S, interval=0.1, what="`lightkeeper serve` to answer /healthz")
        yield Web(cli.origin, process, browser)
    finally:
        browser.close()
        stopped = True
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(WEB_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                stopped = False
                process.kill()
                process.wait()
        cli.transcript += [out_path.read_text(), err_path.read_text()]
    assert stopped, f"`lightkeeper serve` did not exit within {WEB_STOP_TIMEOUT_S} s of SIGTERM"
