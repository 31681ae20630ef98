"""Who may talk to the dashboard: loopback addresses, the right Host, and the token.

Why each check: loopback keeps the memory off the network; the Host check stops a DNS-rebinding
page from reaching the port under its own name; the token (compared in constant time) is what a
local process or another browser tab does not have; state-changing methods take it only from a
header, which a cross-site form cannot set and a cross-site script cannot send without a CORS
preflight that this server never grants. Missing token: 401; wrong token or host: 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from continuum_mcp.errors import ContinuumError, Forbidden, InvalidInput, Unauthenticated
from continuum_mcp.federation.protocol import ErrorBody

TOKEN_HEADER = "X-Continuum-Token"
TOKEN_QUERY = "token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_NAMES = frozenset({"localhost"})


def new_token() -> str:
    """A fresh random token (256 bits), printed once in the URL."""
    return secrets.token_urlsafe(32)


def check_loopback(host: str) -> str:
    """``host`` if it is a loopback address or ``localhost``; InvalidInput otherwise."""
    name = host.strip().strip("[]")
    if name.lower() in LOOPBACK_NAMES:
        return name.lower()
    try:
        if ipaddress.ip_address(name).is_loopback:
            return name
    except ValueError:
        pass
    raise InvalidInput(f"the dashboard serves loopback only (127.0.0.1, ::1 or localhost), not {host!r}: it shows "
                       "every memory; reach it from elsewhere through an SSH tunnel")


def error_response(exc: ContinuumError) -> JSONResponse:
    """The one error shape of every adapter over HTTP: ``{code, message}`` with the class's status."""
    return JSONResponse(ErrorBody(code=exc.code, message=exc.message).model_dump(), status_code=exc.http_status,
                        headers={"Cache-Control": "no-store"})


def _host_name(header: str) -> str:
    """The name part of a Host header (``[::1]:8080`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class TokenGuard:
    """ASGI middleware: every HTTP request passes the checks above or gets a JSON error."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self._token = app, token.encode()

    def _refusal(self, request: Request) -> ContinuumError | None:
        try:
            check_loopback(_host_name(request.headers.get("host", "")))
        except InvalidInput:
            return Forbidden("this dashboard answers only to a loopback Host header")
        given = request.headers.get(TOKEN_HEADER)
        if given is None and request.method in SAFE_METHODS:
            given = request.query_params.get(TOKEN_QUERY)
        if not given:
            where = "the URL" if request.method in SAFE_METHODS else f"the {TOKEN_HEADER} header"
            return Unauthenticated(f"the dashboard token is missing: give it in {where} (it was printed at start)")
        if not hmac.compare_digest(given.encode(), self._token):
            return Forbidden("wrong dashboard token: use the URL printed when the dashboard started")
        origin = request.headers.get("origin")
        if request.method not in SAFE_METHODS and origin is not None and origin != f"http://{request.headers['host']}":
            return Forbidden("cross-origin requests are refused")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(Request(scope))
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await error_response(refusal)(scope, receive, send)
