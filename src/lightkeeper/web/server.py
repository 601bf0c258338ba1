"""Running an ASGI app with uvicorn, blocking (``serve``) or on a background thread (demo, tests)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (so a URL can be known before the app starts)."""
    # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets that say they are TCP (else +40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _config(app: Any, **kwargs: Any) -> uvicorn.Config:
    # access_log off: connect-flow URLs carry one-time secrets in their query strings.
    return uvicorn.Config(app, access_log=False, log_config=None, log_level="warning", **kwargs)


def run(app: Any, *, host: str, port: int, forwarded_allow_ips: str | None = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both gracefully). ``forwarded_allow_ips``: the proxies whose
    ``X-Forwarded-For`` is believed (uvicorn's default: ``$FORWARDED_ALLOW_IPS``, else loopback)."""
    uvicorn.Server(_config(app, host=host, port=port, forwarded_allow_ips=forwarded_allow_ips)).run()


class BackgroundServer:
    """Serves ``app`` on a daemon thread; ``url`` is known once entered."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        **options: Any,
    ):
        """``options``: more of uvicorn's settings, e.g. ``http="h11"``."""
        self._sock = sock or bind(host, port)
        self._server = uvicorn.Server(_config(app, **options))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        host_, port_ = self._sock.getsockname()[:2]
        self.url = f"http://{host_}:{port_}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the web server did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


__all__ = ["BackgroundServer", "bind", "run"]
