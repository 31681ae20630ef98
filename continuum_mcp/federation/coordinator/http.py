"""The coordinator's HTTP adapter: Starlette routes built from ``protocol.routes()``.

Why this shape: the coordinator is honest-but-curious infrastructure. Each request is bounded
(body size, token buckets per identity and per client address), authenticated (Ed25519 envelope
over method, path+query and body hash; the admitted key pinned per instance id; replay guard),
parsed against the route's pydantic model, and handed to :class:`CoordinatorService`. Every
refusal is an ``ErrorBody`` whose code and status come from :mod:`continuum_mcp.errors` -- never a
5xx for bad input. One handler per route name below; each only translates.

Callers that are not members are limited by client address at two levels (:class:`AddressLimit`):
this process's bucket, then the bucket in the database that every coordinator process shares, so N
processes behind nginx hold one limit together (one database statement per such request).
``GET /v1/health`` is charged to this process's bucket only: it is probed by the supervisor and by
load balancers, and must stay cheap and never write to the database.

Replay nonces of callers that are not members are kept in memory only (bounded): a flood of
join attempts from fresh keys cannot grow the persisted replay database. A successful join
records its nonce durably.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from continuum_mcp.crypto.identity import HEADER_INSTANCE, Envelope, ReplayGuard, Verifier, b64decode
from continuum_mcp.errors import (
    ContinuumError,
    CryptoError,
    Forbidden,
    InvalidInput,
    NotAdmitted,
    NotFound,
    RateLimited,
    ReplayError,
    TooLarge,
    Unauthenticated,
    UpgradeRequired,
)
from continuum_mcp.federation.coordinator._governance_http import GOVERNANCE_HANDLERS
from continuum_mcp.federation.coordinator.openapi import openapi_document
from continuum_mcp.federation.coordinator.ratelimit import AddressLimit, TokenBucket
from continuum_mcp.federation.coordinator.service import CoordinatorService
from continuum_mcp.federation.coordinator.store import Member
from continuum_mcp.federation.protocol import (
    ADMIN_TOKEN_HEADER,
    MAX_BODY_BYTES,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    ErrorBody,
    RouteSpec,
    routes,
)
from continuum_mcp.secagg import SignedMessage

logger = logging.getLogger(__name__)

_MAX_ROUND_ID = 2**62


# ------------------------------------------------------------------------------------- errors


def error_response(exc: ContinuumError) -> JSONResponse:
    """The ``ErrorBody`` of a typed error, with the error's own HTTP status. Crypto failures other
    than replay are all ``unauthenticated`` (the caller learns nothing about which check failed)."""
    if isinstance(exc, CryptoError) and not isinstance(exc, ReplayError):
        exc = Unauthenticated(exc.message)
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, int(exc.retry_after + 0.999)))}
    return JSONResponse(ErrorBody(code=exc.code, message=exc.message).model_dump(), status_code=exc.http_status,
                        headers=headers)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def validate(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    """Schema validation; a failure is ``InvalidInput`` naming the fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(prefix + _validation_message(exc)) from exc
    except (RecursionError, ValueError) as exc:
        raise InvalidInput("the request body is nested too deeply or malformed") from exc


def parse_body(model: type[BaseModel], body: bytes) -> Any:
    """JSON then schema validation; every failure (including absurd nesting) is ``InvalidInput``."""
    try:
        data = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput("the request body is not valid UTF-8 JSON (or is nested too deeply)") from exc
    if data is None:
        raise InvalidInput("a JSON request body is required")
    return validate(model, data)


def check_protocol(spec: RouteSpec, headers: Any) -> None:
    """Refuse (426 ``upgrade_required``) a request of another protocol version. Signed requests
    must name their version (every v2 client sends it; a v1 client signs without it, so it is told
    to upgrade instead of taking part in a round it would get wrong); unsigned ones may."""
    given = headers.get(PROTOCOL_HEADER)
    if given is None and (spec.auth in ("none", "admin") or HEADER_INSTANCE not in headers):
        return  # unsigned: nothing claims a version (a signed route then refuses it as unauthenticated)
    if given != str(PROTOCOL_VERSION):
        spoken = f"v{given}" if given else "v1 (no protocol header)"
        older = "this client" if not given or not given.isdigit() or int(given) < PROTOCOL_VERSION else "this coordinator"
        raise UpgradeRequired(f"this coordinator speaks federation protocol v{PROTOCOL_VERSION}, the request {spoken}: "
                              f"upgrade {older} (continuum-mcp) so both speak the same version")


class ProtocolHeader:
    """ASGI middleware: every answer (errors, 404s, openapi) names the coordinator's protocol version."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                header = (PROTOCOL_HEADER.lower().encode("ascii"), str(PROTOCOL_VERSION).encode("ascii"))
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


# ------------------------------------------------------------------------------------- handlers


@dataclass
class Call:
    """One authenticated request, as the handlers see it."""

    caller: str
    body: Any
    params: dict[str, Any]
    public_key: bytes = b""
    member: Member | None = None

    @property
    def round_id(self) -> int:
        rid = int(self.params["round_id"])
        if rid > _MAX_ROUND_ID:
            raise NotFound(f"round {rid} does not exist")
        return rid


Handler = Callable[[CoordinatorService, Call], BaseModel]

#: one handler per route name of ``protocol.routes()`` (a test checks the two tables agree)
HANDLERS: dict[str, Handler] = {
    "health": lambda s, c: s.health(),
    "federation": lambda s, c: s.federation(),
    "join": lambda s, c: s.join(c.caller, c.public_key, c.body),
    "status": lambda s, c: s.status(c.caller),
    "contribute": lambda s, c: s.contribute(c.caller, c.body, c.member),
    "delete_contributions": lambda s, c: s.delete_contributions(c.caller),
    "leave": lambda s, c: s.leave(c.caller),
    "round_current": lambda s, c: s.engine.state(c.caller),
    "round": lambda s, c: s.engine.state(c.caller, c.round_id),
    "secagg_roster": lambda s, c: s.engine.key_roster(c.round_id, c.caller),
    "secagg_inbox": lambda s, c: s.engine.inbox(c.round_id, c.caller),
    "secagg_survivors": lambda s, c: s.engine.survivors(c.round_id, c.caller),
    "secagg_post": lambda s, c: s.secagg_post(c.caller, c.round_id, str(c.params["kind"]),
                                              validate(SignedMessage, c.body.message, "message.")),
    "slots": lambda s, c: s.slots(),
    "query": lambda s, c: s.query(c.caller, c.body, c.member),
    "download": lambda s, c: s.download(c.caller),
    "verify": lambda s, c: s.verify(c.caller, str(c.params["pattern_id"])),
    "vote": lambda s, c: s.vote(c.caller, str(c.params["pattern_id"]), c.body.up),
    "credits": lambda s, c: s.credit_balance(c.caller),
    "admin_invites": lambda s, c: s.invites(c.body.count),
    "admin_close_round": lambda s, c: s.engine.close_round(),
    **GOVERNANCE_HANDLERS,
}


# ------------------------------------------------------------------------------------- app


class HttpAdapter:
    """Authentication, limits and translation around a :class:`CoordinatorService`."""

    def __init__(self, service: CoordinatorService, member_verifier: Verifier, stranger_verifier: Verifier,
                 durable_replay: ReplayGuard, *, admin_token: str | None, identity_rate: float,
                 address_rate: float) -> None:
        self.service = service
        self._members = member_verifier
        self._strangers = stranger_verifier
        self._durable_replay = durable_replay
        self._admin_token = admin_token
        self._identity_rate = TokenBucket(identity_rate, what="identity")
        self._address_rate = AddressLimit(address_rate, service.store, service.engine.now)

    async def _read_body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError as exc:
                raise InvalidInput("bad Content-Length header") from exc
            if declared > MAX_BODY_BYTES:
                raise TooLarge(f"request body of {declared} bytes exceeds the limit of {MAX_BODY_BYTES}")
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise TooLarge(f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _signed_path(request: Request) -> str:
        path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        query = request.scope.get("query_string", b"")
        return f"{path}?{query.decode('latin-1')}" if query else path

    def _authenticate(self, request: Request, body: bytes, address: str) -> tuple[str, bytes, Member | None, Envelope]:
        """Verify the envelope. Members are checked against their pinned key and the durable replay
        guard; anyone else is first charged to its client address and checked in memory."""
        claimed = request.headers.get(HEADER_INSTANCE)
        member = self.service.store.get_member(claimed) if claimed else None
        if member is None:
            self._address_rate.take(address)
        try:
            envelope = Envelope.from_headers(request.headers, method=request.method,
                                             path=self._signed_path(request), body=body)
            public_key = b64decode(envelope.public_key, what="public key", length=32)
        except (InvalidInput, ValidationError) as exc:
            raise CryptoError("malformed authentication headers") from exc
        verifier = self._members if member is not None else self._strangers
        try:
            caller = verifier.verify(envelope, method=request.method, path=self._signed_path(request), body=body,
                                     expected_public_key=member.public_key if member else None)
        except InvalidInput as exc:
            raise CryptoError(exc.message) from exc
        return caller, public_key, member, envelope

    def _check_admin(self, request: Request) -> None:
        given = request.headers.get(ADMIN_TOKEN_HEADER)
        if not self._admin_token:
            raise Forbidden("admin routes are disabled: the coordinator has no admin token")
        if given is None or not hmac.compare_digest(given.encode("utf-8", "replace"), self._admin_token.encode("utf-8")):
            raise Forbidden("admin token missing or wrong")

    def _call(self, spec: RouteSpec, request: Request, body: bytes, address: str) -> BaseModel:
        """The whole request in a worker thread (signature checks and SQLite block)."""
        call = Call(caller="", body=None, params=dict(request.path_params))
        envelope: Envelope | None = None
        check_protocol(spec, request.headers)
        if spec.auth in ("none", "admin"):  # health: this process's bucket only (no database write per probe)
            self._address_rate.take(f"{spec.auth}:{address}", shared=spec.name != "health")
            if spec.auth == "admin":
                self._check_admin(request)
        else:
            call.caller, call.public_key, call.member, envelope = self._authenticate(request, body, address)
            self._identity_rate.take(call.caller)
            if spec.auth == "member" and call.member is None:
                raise NotAdmitted("this identity is not a member of the federation; join first")
        if spec.request is not None:
            call.body = parse_body(spec.request, body)
        result = HANDLERS[spec.name](self.service, call)
        if spec.name == "join" and call.member is None and envelope is not None:
            # admitted now: remember the nonce durably, as for every member request
            self._durable_replay.check_and_record(envelope.instance_id, envelope.nonce,
                                                  envelope.timestamp + self._members.window_seconds,
                                                  int(self.service.engine.now()))
        return result

    def _endpoint(self, spec: RouteSpec) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            address = request.client.host if request.client else "?"
            try:
                body = await self._read_body(request)
                result = await run_in_threadpool(self._call, spec, request, body, address)
                # serialised by pydantic-core in one pass (no dict, then json.dumps, per response)
                return Response(result.model_dump_json(), status_code=spec.status, media_type="application/json")
            except ContinuumError as exc:
                logger.info("%s %s refused: %s", request.method, request.url.path, exc.code)
                return error_response(exc)
            except RecursionError:
                return error_response(InvalidInput("the request is nested too deeply"))

        return endpoint

    def app(self) -> Starlette:
        async def openapi(_: Request) -> Response:
            return JSONResponse(openapi_document(self.service.federation()))

        async def not_found(_: Request, exc: Exception) -> Response:
            if getattr(exc, "status_code", 404) == 405:
                return JSONResponse(ErrorBody(code="not_found", message="method not allowed on this path").model_dump(),
                                    status_code=405)
            return error_response(NotFound("no such route"))

        table = routes()
        missing = set(table) ^ set(HANDLERS)
        if missing:
            raise RuntimeError(f"route table and handlers disagree on {sorted(missing)}")
        # literal paths before templates (e.g. /v1/rounds/current before /v1/rounds/{round_id})
        ordered = sorted(table.values(), key=lambda s: "{" in s.path)
        app_routes = [Route(s.path, self._endpoint(s), methods=[s.method]) for s in ordered]
        app_routes.append(Route("/openapi.json", openapi, methods=["GET"]))
        return Starlette(routes=app_routes, exception_handlers={HTTPException: not_found},
                         middleware=[Middleware(ProtocolHeader)])


def __getattr__(name: str) -> Any:
    """Old import path: ``from continuum_mcp.federation.coordinator.http import FederationCoordinator, main``."""
    if name in ("FederationCoordinator", "main"):
        from continuum_mcp.federation import coordinator

        return getattr(coordinator, name)
    raise AttributeError(name)


__all__ = ["Call", "HANDLERS", "HttpAdapter", "TokenBucket", "error_response", "openapi_document", "parse_body"]
