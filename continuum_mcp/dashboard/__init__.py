"""The local web dashboard: browse, search, edit and delete memories; see what each federation
contribution sent, the privacy budget over time, credits and the released patterns received.

An adapter like the MCP server and the CLI: every route is one :class:`continuum_mcp.app.Continuum`
call, every failure a JSON ``{code, message}`` with the error class's ``http_status``. Loopback
only, a random token in the URL checked on every request (state-changing requests must carry it
in a header, so another site cannot forge them), a strict content security policy, no network.
"""

from continuum_mcp.dashboard._guard import TOKEN_HEADER, TokenGuard, check_loopback, new_token
from continuum_mcp.dashboard._routes import build_app
from continuum_mcp.dashboard._server import Dashboard

__all__ = ["TOKEN_HEADER", "Dashboard", "TokenGuard", "build_app", "check_loopback", "new_token"]
