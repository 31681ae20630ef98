"""The stdio transport, answering every request it cannot read.

The SDK's reader (``mcp.server.stdio``) hands a line it cannot validate to the server as an
exception, and the server drops it: the client waits for an answer forever. pydantic-core's JSON
parser refuses things Python's accepts, such as a lone surrogate escape (``"\\ud83d"``, which a
model can emit) or nesting deeper than its recursion limit, so a ``tools/call`` carrying either
went unanswered. Here the SDK's transport is kept (it owns fd 0/1) and its read stream is
filtered: such a line gets a JSON-RPC error with the request's id when Python can still read
it, or a parse error with id null when nobody can.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

log = logging.getLogger(__name__)


def _request_id(message: object) -> int | str | None:
    mid = message.get("id") if isinstance(message, dict) else None
    return mid if isinstance(mid, str) or (isinstance(mid, int) and not isinstance(mid, bool)) else None


def _has_lone_surrogate(value: object, depth: int = 0) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if depth > 1000:
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k, depth + 1) or _has_lone_surrogate(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v, depth + 1) for v in value)
    return False


def error_reply(exc: Exception) -> JSONRPCError | None:
    """The answer to a line the SDK could not turn into a message; None when none is due (a blank
    line, or a malformed *response* from the client, which must not be answered)."""
    errors = exc.errors() if isinstance(exc, ValidationError) else []
    first: dict[str, Any] = dict(errors[0]) if errors else {}
    raw = first.get("input")
    if first.get("type") == "json_invalid" and isinstance(raw, str):
        if not raw.strip():
            return None
        reason = str(first.get("msg", "invalid JSON"))
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            return JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=PARSE_ERROR, message=f"Parse error: {reason}"))
        if "recursion limit" in reason:
            reason = "the message is nested too deeply (JSON nesting beyond the parser's limit)"
        elif _has_lone_surrogate(message):
            reason = ("the message contains an unpaired UTF-16 surrogate escape such as \\ud83d; send text as valid "
                      "Unicode (surrogates only in pairs)")
        return JSONRPCError(jsonrpc="2.0", id=_request_id(message),
                            error=ErrorData(code=PARSE_ERROR, message=f"Parse error: {reason}; nothing was done"))
    if isinstance(raw, dict) and "method" not in raw and ("result" in raw or "error" in raw):
        return None
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in errors[:3]) or repr(exc)
    return JSONRPCError(jsonrpc="2.0", id=_request_id(raw),
                        error=ErrorData(code=INVALID_REQUEST, message=f"Invalid request: not a JSON-RPC 2.0 message ({detail})"))


@asynccontextmanager
async def answering_stdio() -> AsyncIterator[tuple[Any, Any]]:
    """``(read_stream, write_stream)`` for ``Server.run``, like ``stdio_server()`` but answering."""
    async with stdio_server() as (sdk_read, write):
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def pump() -> None:
            async with send, sdk_read:
                async for item in sdk_read:
                    if not isinstance(item, Exception):
                        await send.send(item)
                        continue
                    reply = error_reply(item)
                    log.info("unreadable message on stdin: %s", reply.error.message if reply else "ignored")
                    if reply is not None:
                        await write.send(SessionMessage(reply))

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                yield receive, write
            finally:
                tg.cancel_scope.cancel()
