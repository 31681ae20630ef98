"""What the model sees of the server: slim tool listings, precise argument errors, list changes.

Why a subclass: ``MCPServer.list_tools`` and ``call_tool`` are the SDK's public seams for what a
client is shown and how a call fails. Here the listing is slimmed once per tool (pydantic's
``title`` keys, null defaults and output-schema prose are the bulk of ``tools/list`` and tell
the model nothing), descriptions are dedented, and an argument the arguments model refuses is
reported as ``invalid_input: <field>: <reason> (got <type>)`` instead of pydantic's multi-line
dump. Output validation is untouched: it uses the pydantic models, not the published schema.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import Tool as MCPTool
from pydantic import ValidationError

from continuum_mcp._mcp.http import BearerAuth, check_no_auth, http_token, token_path
from continuum_mcp._mcp.stdio import answering_stdio

log = logging.getLogger(__name__)

_SUBSCHEMA_MAPS = ("properties", "$defs", "patternProperties")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not")


def slim_schema(schema: Any, *, prose: bool) -> Any:
    """A schema without auto titles and null defaults; ``prose=False`` also drops descriptions
    and defaults (an output schema is for validating results, its prose is not read)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or (key == "default" and (value is None or not prose)):
            continue
        if key == "description" and not prose:
            continue
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            value = {name: slim_schema(sub, prose=prose) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            value = [slim_schema(sub, prose=prose) for sub in value]
        elif key in _SUBSCHEMA_ONE:
            value = slim_schema(value, prose=prose)
        out[key] = value
    # `X | None` as one typed node: {"type": ["integer", "null"]} instead of an anyOf pair.
    arms = out.get("anyOf")
    if isinstance(arms, list) and len(arms) == 2 and {"type": "null"} in arms:
        other = next(a for a in arms if a != {"type": "null"})
        if isinstance(other.get("type"), str) and not set(other) & {"anyOf", "$ref"} and not set(other) & set(out):
            del out["anyOf"]
            out = {**other, **out, "type": [other["type"], "null"]}
    return out


def slim_tool(tool: MCPTool) -> MCPTool:
    return tool.model_copy(update={
        "description": inspect.cleandoc(tool.description or ""),
        "input_schema": slim_schema(tool.input_schema, prose=True),
        "output_schema": slim_schema(tool.output_schema, prose=False) if tool.output_schema else None,
    })


def describe(exc: ValidationError) -> str:
    """One line per refused argument: where, why, and what type was sent (never a coercion)."""
    parts = []
    for err in exc.errors()[:4]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        got = "" if err["type"] == "missing" else f" (got {type(err.get('input')).__name__} {_short(err.get('input'))})"
        parts.append(f"{where}: {err['msg']}{got}")
    more = f"; and {exc.error_count() - 4} more" if exc.error_count() > 4 else ""
    return "invalid_input: " + "; ".join(parts) + more + "; nothing was changed"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class ContinuumServer(MCPServer[Any]):
    """``MCPServer`` with the slim listing, precise argument errors and ``tools.listChanged``.

    ``app`` is the :class:`~continuum_mcp.app.Continuum` the tools call (set by ``build_server``)."""

    app: Any = None
    #: tool name -> the error a call gets while the tool is not shown (e.g. federation tools before joining)
    unavailable: dict[str, str] = {}
    #: called once, after the first tools/list (the server starts its model load then)
    on_first_list: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slim: dict[tuple[str, int], MCPTool] = {}
        # Handshake-era clients learn from this flag that tools/list may change (federation
        # tools appear on join). The SDK takes it only as an argument of this factory.
        low = self._lowlevel_server
        make = low.create_initialization_options

        def with_list_changed(notification_options: NotificationOptions | None = None, *a: Any, **k: Any) -> Any:
            return make(notification_options or NotificationOptions(tools_changed=True), *a, **k)

        low.create_initialization_options = with_list_changed  # type: ignore[method-assign]

    async def run_stdio_async(self) -> None:
        """Serve over stdin/stdout; an unreadable request gets a JSON-RPC error (:mod:`.stdio`)."""
        low = self._lowlevel_server  # as the SDK's own run_stdio_async, with the answering reader
        async with answering_stdio() as (read, write):
            await low.run(read, write, low.create_initialization_options())

    def http_app(self, *, token: str | None, host: str = "127.0.0.1", **options: Any) -> Any:
        """The streamable-HTTP ASGI app at ``/mcp``; every request needs ``token`` unless it is None."""
        app = self.streamable_http_app(host=host, **options)
        return app if token is None else BearerAuth(app, token)

    async def run_streamable_http_async(self, *, host: str = "127.0.0.1", port: int = 8000,  # type: ignore[override]
                                        require_auth: bool = True, **options: Any) -> None:
        """Streamable HTTP behind the bearer token of the data directory (``require_auth=False``:
        no token, allowed only on a loopback host)."""
        import uvicorn

        token = None
        if require_auth:
            data_dir = self.app.settings.data_dir
            token = http_token(data_dir)
            print(f"continuum-mcp: MCP at http://{host}:{port}/mcp; send 'Authorization: Bearer <token>' with the "
                  f"token in {token_path(data_dir)}", file=sys.stderr, flush=True)
        else:
            check_no_auth(host)
        config = uvicorn.Config(self.http_app(token=token, host=host, **options), host=host, port=port,
                                log_level="warning")
        await uvicorn.Server(config).serve()

    def has_tool(self, name: str) -> bool:
        return self._tool_manager.get_tool(name) is not None

    async def list_tools(self) -> list[MCPTool]:
        tools = await super().list_tools()
        out = []
        for tool in tools:
            key = (tool.name, id(self._tool_manager.get_tool(tool.name)))
            if key not in self._slim:
                self._slim[key] = slim_tool(tool)
            out.append(self._slim[key])
        hook, self.on_first_list = self.on_first_list, None
        if hook is not None:
            hook()
        return out

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None) -> Any:
        if name in self.unavailable and not self.has_tool(name):
            raise ToolError(self.unavailable[name])
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(describe(cause)) from cause
            if isinstance(cause, ToolError):  # ours, already "code: message"; drop the SDK's prefix
                raise cause from cause.__cause__
            raise


async def notify_tools_changed(ctx: Context[Any, Any]) -> None:
    """Tell the client that tools/list changed, in whichever protocol era it speaks."""
    try:  # handshake era: a notification on the session
        await ctx.session.send_tool_list_changed()
    except Exception as exc:  # noqa: BLE001 - a client that cannot take it just lists again later
        log.debug("tools/list_changed not sent on the session: %r", exc)
    try:  # 2026-07-28 era: subscriptions/listen streams
        await ctx.notify_tools_changed()
    except Exception as exc:  # noqa: BLE001
        log.debug("tools/list_changed not published: %r", exc)
