"""Streamable HTTP with a bearer token: any local process could otherwise read the memory.

The token is generated on first use (``secrets.token_urlsafe``) and kept in the data directory
as ``http-token``, mode 0600, so the user's MCP client can be configured with it and nobody
else on the machine can read it. Every request needs ``Authorization: Bearer <token>``;
without it the answer is ``401`` with a JSON body, before anything reaches the MCP layer.
Serving without a token is allowed only on a loopback address.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from pathlib import Path
from typing import Any

from continuum_mcp.errors import InvalidInput

TOKEN_FILE = "http-token"
Scope = dict[str, Any]


def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / TOKEN_FILE


def http_token(data_dir: Path) -> str:
    """The server's bearer token: read from ``<data_dir>/http-token``, created (0600) if absent."""
    path = token_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # never leave it readable by others
        token = path.read_text(encoding="ascii").strip()
        if len(token) < 32:
            raise InvalidInput(f"{path} holds no usable token; delete it and a new one is made") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BearerAuth:
    """ASGI middleware: HTTP requests need the bearer token; lifespan events pass through."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self._expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "unauthorized", "message": "missing or wrong bearer token: send "
                           "'Authorization: Bearer <token>' with the token from the server's data directory "
                           f"({TOKEN_FILE})"}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="continuum-mcp"')]})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, scope: Scope) -> bool:
        got = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        return hmac.compare_digest(got, self._expected)


def check_no_auth(host: str) -> None:
    if not is_loopback(host):
        raise InvalidInput(f"serving without authentication is allowed only on a loopback host "
                           f"(127.0.0.1, ::1, localhost), not {host!r}; drop --no-auth to use the bearer token")
