"""Serving an ASGI app with uvicorn on a socket we bind ourselves (the coordinator, the dashboard).

Why bind here: port 0 picks a free port, and the URL is known before the first request; and a
background start must wait until the server accepts connections, or a caller's first request races it.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from continuum_mcp.errors import InvalidInput


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (IPv6 when the host is one). A port in use, an
    address not on this machine or a port below 1024 without the right is ``InvalidInput`` naming
    the address: the user's ``--host``/``--port`` cannot be served, which is a one-line error, not a
    traceback."""
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot listen on {host}:{port} ({reason}); pick another --port "
                           "(0 picks a free one)") from None
    return sock


def start_in_thread(server: uvicorn.Server, sock: socket.socket, *, name: str, timeout: float = 15.0) -> threading.Thread:
    """Run ``server`` on ``sock`` in a daemon thread; return once it accepts connections."""
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {name} server did not start")
        time.sleep(0.01)
    return thread


__all__ = ["bind", "start_in_thread"]
