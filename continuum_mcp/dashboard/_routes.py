"""The dashboard's routes: the page at ``/`` and a JSON API under ``/api/``, each one Continuum call.

Why so thin: the dashboard is an adapter. Handlers parse the query or body into a pydantic model
(a type error is ``invalid_input``, 400), run the core call in a worker thread (the core is
synchronous and thread-safe), and return the result model as JSON. Range checks, limits and
every privacy figure are the core's.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, get_origin

import pydantic_core
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from continuum_mcp.app import Continuum
from continuum_mcp.dashboard._guard import TOKEN_QUERY, TokenGuard, error_response
from continuum_mcp.errors import ContinuumError, InvalidInput, NotFound, TooLarge
from continuum_mcp.memory.models import Filters, SearchMode

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
STATIC = ("index.html", "app.css", "app.js")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PageQuery(_Input):
    offset: int = 0
    limit: int = 20
    tag: list[str] = []


class RecallQuery(_Input):
    q: str
    k: int = 5
    mode: SearchMode = "hybrid"
    min_score: float | None = None
    tag: list[str] = []


class HistoryQuery(_Input):
    offset: int = 0
    limit: int = 50


class RememberBody(_Input):
    text: str
    tags: list[str] = []
    metadata: dict[str, Any] | None = None


class UpdateBody(_Input):
    text: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None


def _invalid(exc: ValidationError, where: str) -> InvalidInput:
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ())) or where}: {e.get('msg', 'invalid')}"
             for e in exc.errors()[:5]]
    return InvalidInput(f"bad {where}: " + "; ".join(parts))


def parse_query(request: Request, model: type[_Input]) -> Any:
    """The query string (less the token) as ``model``; repeated keys fill list fields."""
    qp = request.query_params
    data: dict[str, Any] = {}
    for key in qp:
        if key == TOKEN_QUERY:
            continue
        field = model.model_fields.get(key)
        data[key] = qp.getlist(key) if field is not None and get_origin(field.annotation) is list else qp[key]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, "query") from None


async def parse_body(request: Request, model: type[_Input]) -> Any:
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise TooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(f"request body over {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise _invalid(exc, "body") from None


def json_response(result: Any, status_code: int = 200) -> Response:
    """A result model (or a list of them) as JSON; an infinite epsilon becomes null."""
    return Response(pydantic_core.to_json(result, inf_nan_mode="null"), status_code=status_code,
                    media_type="application/json", headers={"Cache-Control": "no-store"})


Handler = Callable[[Request], Awaitable[Response]]


def _page(static: dict[str, str]) -> Handler:
    """The page with its script and style inline under a per-response nonce (a strict CSP)."""
    async def page(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        html = (static["index.html"].replace("{{nonce}}", nonce).replace("{{css}}", static["app.css"])
                .replace("{{js}}", static["app.js"]))
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return HTMLResponse(html, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store",
                                           "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"})
    return page


def build_app(app: Continuum, token: str) -> Starlette:
    """The dashboard over ``app``, guarded by ``token``."""

    async def call(fn: Callable[[], Any], status_code: int = 200) -> Response:
        try:
            result = await run_in_threadpool(fn)
        except ContinuumError:
            raise
        except Exception as exc:  # a bug: one line in the log (a traceback could quote memory text)
            logger.error("dashboard call failed: %s", type(exc).__name__)
            logger.debug("traceback", exc_info=exc)
            raise ContinuumError("unexpected failure (a bug: please report it; run with -v for details)") from None
        return json_response(result, status_code)

    async def stats(request: Request) -> Response:
        return await call(app.stats)

    async def list_memories(request: Request) -> Response:
        q: PageQuery = parse_query(request, PageQuery)
        return await call(lambda: app.list(Filters(tags_any=q.tag), offset=q.offset, limit=q.limit))

    async def remember(request: Request) -> Response:
        b: RememberBody = await parse_body(request, RememberBody)
        return await call(lambda: app.remember(b.text, tags=b.tags, metadata=b.metadata, source="dashboard"), 201)

    async def update(request: Request) -> Response:
        b: UpdateBody = await parse_body(request, UpdateBody)
        mid = int(request.path_params["memory_id"])
        return await call(lambda: app.update(mid, text=b.text, tags=b.tags, metadata=b.metadata))

    async def forget(request: Request) -> Response:
        return await call(lambda: app.forget([int(request.path_params["memory_id"])]))

    async def recall(request: Request) -> Response:
        q: RecallQuery = parse_query(request, RecallQuery)
        return await call(lambda: app.recall(q.q, k=q.k, mode=q.mode, min_score=q.min_score,
                                             filters=Filters(tags_any=q.tag)))

    async def federation(request: Request) -> Response:
        return await call(app.federation_status)

    async def credits(request: Request) -> Response:
        return await call(app.credits)

    async def contributions(request: Request) -> Response:
        q: HistoryQuery = parse_query(request, HistoryQuery)
        return await call(lambda: app.contribution_history(offset=q.offset, limit=q.limit))

    async def privacy(request: Request) -> Response:
        return await call(app.privacy_history)

    async def patterns(request: Request) -> Response:
        return await call(app.received_patterns)

    static = {name: resources.files(__package__).joinpath("static", name).read_text("utf-8") for name in STATIC}
    routes = [
        Route("/", _page(static), methods=["GET"]),
        Route("/api/stats", stats, methods=["GET"]),
        Route("/api/memories", list_memories, methods=["GET"]),
        Route("/api/memories", remember, methods=["POST"]),
        Route("/api/memories/{memory_id:int}", update, methods=["PATCH"]),
        Route("/api/memories/{memory_id:int}", forget, methods=["DELETE"]),
        Route("/api/recall", recall, methods=["GET"]),
        Route("/api/federation", federation, methods=["GET"]),
        Route("/api/credits", credits, methods=["GET"]),
        Route("/api/contributions", contributions, methods=["GET"]),
        Route("/api/privacy", privacy, methods=["GET"]),
        Route("/api/patterns", patterns, methods=["GET"]),
    ]

    async def typed_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ContinuumError)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_response(NotFound(f"no dashboard route {request.method} {request.url.path}"))
        resp = error_response(InvalidInput(f"{request.method} {request.url.path}: {exc.detail}"))
        resp.status_code = exc.status_code
        return resp

    return Starlette(routes=routes, middleware=[Middleware(TokenGuard, token=token)],
                     exception_handlers={ContinuumError: typed_error, HTTPException: http_error})


__all__ = ["HistoryQuery", "PageQuery", "RecallQuery", "RememberBody", "UpdateBody", "build_app", "json_response"]
