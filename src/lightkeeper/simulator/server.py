"""Run the simulator: in a background thread for tests (``SimulatorServer``) or blocking for the CLI."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from lightkeeper.simulator.app import create_app
from lightkeeper.simulator.config import SimulatorConfig
from lightkeeper.simulator.control import SimulatorControl
from lightkeeper.simulator.state import SimulatorState

DEFAULT_PORT = 8900
# Bounds how long shutdown waits for in-flight requests (e.g. ones held by a "timeout" fault).
_GRACEFUL_SHUTDOWN_S = 5
_START_TIMEOUT_S = 10.0


class SimulatorServer:
    """A real HTTP simulator on loopback, started by ``with SimulatorServer() as sim:``.

    The socket is bound before the thread starts, so ``port=0`` yields a free port and ``url`` is
    known (and connectable) as soon as ``__enter__`` returns. ``state`` is the live model: tests may
    read it directly, or drive the knobs over HTTP with ``control()``.
    """

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = SimulatorState(config)
        self.app = create_app(state=self.state)
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def control(self, timeout: float = 10.0) -> SimulatorControl:
        """A knob client for this server (close it, or use it as a context manager)."""
        return SimulatorControl(self.url, timeout=timeout)

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("simulator server already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
        # TCP, and without it Nagle + delayed ACK add ~40 ms to every response.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"lightspeed-sim-{self.port}", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        self._wait_started(server, thread)

    def _wait_started(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Lightspeed simulator did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop serving; held ("timeout" fault) requests are released first so this is quick."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is None:
            return
        self.state.wake_sleepers()
        server.should_exit = True
        if thread is not None:
            thread.join(timeout=_GRACEFUL_SHUTDOWN_S + 5)
        if sock is not None:
            sock.close()


def serve(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve the simulator in the foreground until interrupted (``lightkeeper simulate``)."""
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )


__all__ = ["DEFAULT_PORT", "SimulatorServer", "serve"]
