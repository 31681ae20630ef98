"""The MCP adapter: tools, resources and prompts over :class:`continuum_mcp.app.Continuum` (mcp 2.x).

It only translates: each tool calls one ``Continuum`` method in a worker thread (so the event
loop keeps answering; ``tools/list`` never waits for the model) and turns the core's typed errors
into MCP tool errors (``code: message``). Arguments are strictly typed at the boundary
(:mod:`._mcp.args`) and checked again by the core. Nothing of the federation or privacy stack is
imported unless this instance is a member of a federation (:mod:`._mcp.federation_tools`).

Public face: :func:`build_server`, :func:`run_stdio`, :func:`build_http_app`, :func:`run_http`,
:func:`http_token`.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver.exceptions import ToolError

from continuum_mcp import __version__
from continuum_mcp._mcp.federation_tools import show_member_tools
from continuum_mcp._mcp.http import check_no_auth, http_token, token_path
from continuum_mcp._mcp.memory_tools import register_memory_tools
from continuum_mcp._mcp.prompts import register_prompts
from continuum_mcp._mcp.surface import ContinuumServer
from continuum_mcp.app import Continuum
from continuum_mcp.config import Settings
from continuum_mcp.errors import ContinuumError, DiskFull, StoreReadOnly

if TYPE_CHECKING:
    from embeddings import Embedder

log = logging.getLogger(__name__)
T = TypeVar("T")
MODEL_LOAD_DELAY = 0.05  # seconds after the first tools/list answer; a request needing the model loads it at once
MODEL_LOAD_FALLBACK = 5.0  # seconds after start, for a client that never lists tools

INSTRUCTIONS = """\
Long-term memory for this user, stored privately on their machine.
- Call `recall` at the start of a task or when the user refers to something from before
  (preferences, people, projects, decisions) instead of asking them again. If it answers
  no_good_match, nothing relevant is stored: say so.
- Call `remember` when the user states a durable fact, preference, decision or instruction worth
  keeping across conversations. One self-contained statement per memory; add a few tags.
  Tag anything sensitive the user does not want shared as `private`. Read the `hint` it returns:
  an `updated` status names the earlier memory the new one replaces; confirm with the user.
- Use `update_memory` to correct a memory and `forget` when the user asks to delete one.
- `federation_join` joins a federation that shares anonymised patterns; use the federation tools
  only when the user asks, and show `federation_contribute`'s dry run before contributing.
"""


def _storage_error(exc: OSError) -> ContinuumError | None:
    """A full disk or a read-only file system outside SQLite (e.g. saving the vector index)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"the disk holding the memory store is full ({exc.strerror}); nothing was written. "
                        "Free some space and try again.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreReadOnly(f"the memory store cannot be written ({exc.strerror}: {exc.filename}); memories can "
                             "still be read. Make the data directory writable to store new ones.")
    return None


async def _in_thread(call: Callable[[], T]) -> T:
    """Blocking core work off the event loop; a typed core error becomes an MCP tool error."""
    try:
        return await anyio.to_thread.run_sync(call)
    except ContinuumError as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from exc
    except OSError as exc:
        typed = _storage_error(exc)
        if typed is None:
            raise
        raise ToolError(f"{typed.code}: {typed.message}") from exc


def _warm_up(app: Continuum) -> None:
    """Open the store, resume auto-sync; off the handshake's path (a failure reaches each tool call)."""
    try:
        app.store  # noqa: B018 - opening is the point
        app.resume_auto_sync()
    except ContinuumError as exc:
        log.warning("memory store not ready: %s", exc.message)


def _start_model(app: Continuum) -> None:
    """Begin loading the embedding model in the background (idempotent)."""
    try:
        start = getattr(app.store.embedder, "start", None)
    except ContinuumError:
        return
    if start is not None:
        start()


def build_server(settings: Settings, embedder: Embedder | None = None) -> ContinuumServer:
    """An MCP server over the memory in ``settings.data_dir``.

    The handshake competes with nothing of ours: the store opens in a worker thread, and the
    model (seconds of imports that hold the interpreter) starts loading once the client has its
    first ``tools/list`` answer, or after ``MODEL_LOAD_FALLBACK`` seconds if it never asks.
    A tool that needs the model before then starts the load itself and waits."""
    app = Continuum(settings, embedder, load_delay=None)

    def run(call: Callable[[Continuum], T]) -> Any:
        return _in_thread(lambda: call(app))

    def start_model_soon(delay: float) -> None:
        timer = threading.Timer(delay, _start_model, args=(app,))
        timer.daemon = True
        timer.start()

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[Continuum]:
        threading.Thread(target=_warm_up, args=(app,), name="store-open", daemon=True).start()
        start_model_soon(MODEL_LOAD_FALLBACK)
        try:
            yield app
        finally:
            await anyio.to_thread.run_sync(app.close)

    mcp = ContinuumServer(name="continuum-mcp", title="Continuum memory", version=__version__,
                          instructions=INSTRUCTIONS, lifespan=lifespan, log_level="WARNING")
    mcp.app = app
    mcp.on_first_list = lambda: start_model_soon(MODEL_LOAD_DELAY)
    register_memory_tools(mcp, run, settings)
    show_member_tools(mcp, run, member=app.joined)
    register_prompts(mcp, run)
    return mcp


def run_stdio(mcp: ContinuumServer) -> None:
    """Serve over stdio (what ``mcp.run("stdio")`` does): unreadable requests get a JSON-RPC error."""
    mcp.run("stdio")


def build_http_app(mcp: ContinuumServer, *, token: str | None, host: str = "127.0.0.1") -> Any:
    """The streamable-HTTP ASGI app at ``/mcp``; every request needs ``token`` unless it is None."""
    return mcp.http_app(token=token, host=host)


def run_http(mcp: ContinuumServer, *, host: str = "127.0.0.1", port: int = 8765, require_auth: bool = True) -> None:
    """Serve streamable HTTP. With ``require_auth`` (the default) requests need the bearer token of
    :func:`http_token`; without it only a loopback ``host`` is allowed (else :class:`InvalidInput`)."""
    if not require_auth:
        check_no_auth(host)  # before the server starts, so the CLI can report it as one line
    mcp.run("streamable-http", host=host, port=port, require_auth=require_auth)


__all__ = ["INSTRUCTIONS", "MODEL_LOAD_DELAY", "MODEL_LOAD_FALLBACK", "ContinuumServer", "build_http_app", "build_server", "http_token",
           "run_http", "run_stdio", "token_path"]
