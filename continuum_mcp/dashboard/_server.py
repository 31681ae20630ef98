"""Run the dashboard: uvicorn on a loopback socket, in this thread (the CLI) or a background one (tests).

Why a socket bound here: port 0 picks a free port, and the URL (with its token) is known before
the first request.
"""

from __future__ import annotations

import threading

import uvicorn

from continuum_mcp._http import bind, start_in_thread
from continuum_mcp.app import Continuum
from continuum_mcp.dashboard._guard import TOKEN_QUERY, check_loopback, new_token
from continuum_mcp.dashboard._routes import build_app


class Dashboard:
    """The dashboard of ``app`` on ``host:port`` (loopback only; port 0 = any free port)."""

    def __init__(self, app: Continuum, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None) -> None:
        self.host = check_loopback(host)
        self.token = token or new_token()
        self.asgi = build_app(app, self.token)
        self._sock = bind(self.host, port)  # InvalidInput naming the address when it cannot be served
        self.port = int(self._sock.getsockname()[1])
        cfg = uvicorn.Config(self.asgi, log_level="warning", access_log=False, lifespan="off",
                             timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(cfg)
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The page's address with the token: print it once, to the user who started it."""
        return f"{self.origin}/?{TOKEN_QUERY}={self.token}"

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (uvicorn handles both)."""
        self._server.run(sockets=[self._sock])

    def start(self) -> None:
        """Serve in a background thread; returns once the port accepts connections."""
        self._thread = start_in_thread(self._server, self._sock, name="dashboard-http")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()


__all__ = ["Dashboard"]
