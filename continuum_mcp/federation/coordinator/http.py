"""The federation coordinator: a Starlette app served by uvicorn, speaking ``protocol`` API v1.

Why this shape: the coordinator is honest-but-curious infrastructure. It authenticates every
request (Ed25519 envelope over method, path+query and body hash; persisted replay guard), pins the
public key it admitted for each instance id, bounds what one identity can do (body size, token
bucket), validates every body against the protocol's pydantic models, and answers every refusal
with a stable ``ErrorBody`` code -- never a 5xx for bad input. The round logic lives in
:mod:`continuum_mcp.federation.coordinator.engine`, storage in :mod:`continuum_mcp.federation.coordinator.store`.

Run it with ``continuum-mcp coordinator ...`` (see :func:`main`) or in-process::

    coord = FederationCoordinator(port=0, storage_path=tmp, privacy_mode="open")
    coord.start(); print(coord.url); ...; coord.stop()
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from continuum_mcp import __version__
from continuum_mcp.federation.coordinator.store import REPLAY_DB_NAME, CoordinatorStore, Member
from continuum_mcp.errors import (
    ContinuumError,
    CryptoError,
    Forbidden,
    InvalidInput,
    NotAdmitted,
    NotFound,
    RateLimited,
    TooLarge,
)
from continuum_mcp.crypto.identity import (
    HEADER_INSTANCE,
    HEADER_NONCE,
    HEADER_PUBLIC_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_VERSION,
    Envelope,
    SQLiteReplayGuard,
    Verifier,
    b64decode,
)
from continuum_mcp.privacy.modes import PrivacyPolicy, default_policy
from continuum_mcp.federation.protocol import (
    ADMIN_TOKEN_HEADER,
    ERRORS,
    MAX_BODY_BYTES,
    ROUTES,
    ActionReceipt,
    ContributionReceipt,
    ContributionRequest,
    CreditBalance,
    CreditRules,
    DeletionReceipt,
    DownloadResponse,
    ErrorBody,
    FederationInfo,
    Health,
    InviteRequest,
    InviteResponse,
    JoinRequest,
    JoinResponse,
    MemberStatus,
    QueryRequest,
    QueryResponse,
    RoundState,
    SecAggPost,
    SlotInfo,
    SlotsResponse,
    VoteRequest,
)
from continuum_mcp.federation.coordinator.engine import RoundConfig, RoundEngine, mode_allows
from continuum_mcp.secagg._core import KeyRoster, ShareInbox, SignedMessage, SurvivorList

logger = logging.getLogger(__name__)

AUTH_HEADERS = (HEADER_VERSION, HEADER_INSTANCE, HEADER_PUBLIC_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)
_MAX_ROUND_ID = 2**62
Auth = str  # "none" | "signed" | "member" | "admin"


# ------------------------------------------------------------------------------------- errors


def error_response(code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An ``ErrorBody`` with the protocol's status for ``code``."""
    if code not in ERRORS:
        code = "invalid_input"
    return JSONResponse(ErrorBody(code=code, message=message).model_dump(), status_code=ERRORS[code], headers=headers)


def _from_exception(exc: ContinuumError) -> JSONResponse:
    code = exc.code
    if isinstance(exc, CryptoError) and code != "replay":
        code = "unauthenticated"
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, int(exc.retry_after + 0.999)))}
    return error_response(code, exc.message, headers)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def parse_body(model: type[BaseModel], body: bytes) -> Any:
    """JSON then schema validation; both failures are ``InvalidInput`` naming the field."""
    try:
        data = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("the request body is not valid UTF-8 JSON") from exc
    if data is None:
        raise InvalidInput("a JSON request body is required")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc)) from exc


class TokenBucket:
    """Per-key token buckets (capacity = rate per minute, refilled continuously)."""

    def __init__(self, per_minute: float, max_keys: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = float(per_minute) / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys

    def take(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise RateLimited("too many requests from this identity; slow down", (1.0 - tokens) / self.rate)
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_keys:  # forget idle (full) buckets
                full = [k for k, (t, ts) in self._buckets.items() if t + (now - ts) * self.rate >= self.capacity]
                for k in full:
                    del self._buckets[k]


# ------------------------------------------------------------------------------------- openapi


def openapi_document(info: FederationInfo | None = None) -> dict[str, Any]:
    """OpenAPI 3.1 document generated from ``protocol.ROUTES`` and the pydantic models."""
    components: dict[str, Any] = {}
    bodies: dict[str, type[BaseModel]] = {
        "/v1/rounds/{round_id}/secagg/roster": KeyRoster,
        "/v1/rounds/{round_id}/secagg/inbox": ShareInbox,
        "/v1/rounds/{round_id}/secagg/survivors": SurvivorList,
    }

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            components[name] = sub
        components[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error_ref = ref(ErrorBody)
    auth_params = [
        {"name": h, "in": "header", "required": True, "schema": {"type": "string"},
         "description": "Envelope field of Identity.sign_request (signed over method, path+query, body SHA-256)."}
        for h in AUTH_HEADERS
    ]
    admin_param = {"name": ADMIN_TOKEN_HEADER, "in": "header", "required": True, "schema": {"type": "string"}}
    paths: dict[str, Any] = {}
    for method, path, req_model, resp_model in ROUTES:
        if resp_model is BaseModel:
            resp_model = bodies[path]
        params: list[dict[str, Any]] = []
        if "{round_id}" in path:
            params.append({"name": "round_id", "in": "path", "required": True,
                           "schema": {"type": "integer", "minimum": 0}})
        if "{kind}" in path:
            params.append({"name": "kind", "in": "path", "required": True,
                           "schema": {"type": "string", "enum": ["advertise", "share_keys", "masked_input", "unmask"]}})
        if "{pattern_id}" in path:
            params.append({"name": "pattern_id", "in": "path", "required": True,
                           "schema": {"type": "string", "pattern": "^p-[0-9]+$"}})
        admin = path.startswith("/v1/admin/")
        unsigned = path == "/v1/health"
        if admin:
            params.append(admin_param)
        elif not unsigned:
            params.extend(auth_params)
        ok = "202" if (method, path) == ("POST", "/v1/contributions") else "200"
        responses: dict[str, Any] = {
            ok: {"description": "OK", "content": {"application/json": {"schema": ref(resp_model)}}},
        }
        codes = {"400": "invalid_input", "413": "too_large", "429": "rate_limited"}
        if not unsigned:
            codes.update({"401": "unauthenticated / replay", "403": "not_admitted / forbidden / bad_invite",
                          "404": "not_found", "409": "wrong_phase / conflict"})
        if path in ("/v1/query", "/v1/patterns/download"):
            codes["402"] = "insufficient_credits"
        for status, desc in codes.items():
            responses[status] = {"description": desc, "content": {"application/json": {"schema": error_ref}}}
        op: dict[str, Any] = {
            "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "parameters": params,
            "responses": responses,
        }
        if req_model is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(req_model)}}}
        paths.setdefault(path, {})[method.lower()] = op
    paths["/openapi.json"] = {"get": {"operationId": "get_openapi", "responses": {"200": {"description": "this document"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "continuum-mcp federation coordinator",
            "version": f"1 ({__version__})",
            "description": "Every route except /v1/health and /openapi.json is signed with the X-Continuum-* "
                           "headers of Identity.sign_request; admin routes take the admin token header instead."
                           + (f" Federation {info.federation_id}, privacy mode {info.privacy_mode}." if info else ""),
        },
        "paths": paths,
        "components": {"schemas": components},
    }


# ------------------------------------------------------------------------------------- coordinator


class FederationCoordinator:
    """The coordinator service: storage, round engine, HTTP app and its uvicorn server."""

    def __init__(
        self,
        port: int = 0,
        storage_path: str | Path = "coordinator-data",
        require_contribution: bool = True,
        min_contributors: int = 3,
        privacy_mode: str = "high",
        federation_id: str = "fed-default",
        private: bool = True,
        admin_token: str | None = None,
        host: str = "127.0.0.1",
        round_interval_seconds: float = 86400,
        phase_timeout_seconds: float = 60,
        window_days: float = 30,
        rate_limit_per_minute: float = 1200,
        slots: int = 256,
        dim: int = 384,
        codebook_version: str = "v0",
        codebook: np.ndarray | None = None,
        replay_window_seconds: int = 300,
        quality_vote_threshold: int = 3,
        credit_rules: CreditRules | None = None,
        policy: PrivacyPolicy | None = None,
        tick_seconds: float = 0.2,
    ) -> None:
        self.policy = policy or default_policy()
        self.policy.mode(privacy_mode)  # raises InvalidInput for an unknown mode
        if min_contributors < 1:
            raise InvalidInput("min_contributors must be at least 1")
        if codebook is not None and codebook.shape != (slots, dim):
            raise InvalidInput(f"codebook must have shape ({slots}, {dim}), got {codebook.shape}")
        self.host = host
        self._requested_port = port
        self.port = port
        self.private = private
        self.codebook_version = codebook_version
        self._codebook = None if codebook is None else np.asarray(codebook, dtype=np.float32)
        self._admin_token = admin_token
        self._tick_seconds = tick_seconds
        self.config = RoundConfig(
            federation_id=federation_id,
            privacy_mode=privacy_mode,  # type: ignore[arg-type]
            min_contributors=min_contributors,
            require_contribution=require_contribution,
            slots=slots,
            dim=dim,
            phase_timeout_seconds=phase_timeout_seconds,
            round_interval_seconds=round_interval_seconds,
            window_days=window_days,
            quality_vote_threshold=quality_vote_threshold,
            credit_rules=credit_rules or CreditRules(),
        )
        self.storage_path = Path(storage_path)
        self.store = CoordinatorStore(self.storage_path)
        self.store.ensure_federation(federation_id)
        self.replay_guard = SQLiteReplayGuard(self.storage_path / REPLAY_DB_NAME)
        self.verifier = Verifier(self.replay_guard, window_seconds=replay_window_seconds)
        self.engine = RoundEngine(self.store, self.config, self.verifier, self.policy)
        self.engine.recover()
        self._rate = TokenBucket(rate_limit_per_minute)
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    # ----------------------------------------------------------------------------- python API

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def info(self) -> FederationInfo:
        return FederationInfo(
            federation_id=self.config.federation_id,
            private=self.private,
            privacy_mode=self.config.privacy_mode,
            min_contributors=self.config.min_contributors,
            require_contribution=self.config.require_contribution,
            codebook_version=self.codebook_version,
            slots=self.config.slots,
            dim=self.config.dim,
            round_interval_seconds=int(self.config.round_interval_seconds),
            phase_timeout_seconds=max(1, int(self.config.phase_timeout_seconds)),
            credit_rules=self.config.credit_rules,
        )

    def create_admission_tokens(self, n: int) -> list[str]:
        """Admin: mint ``n`` single-use admission tokens (the founder adds the federation key)."""
        return self.store.create_admission_tokens(n)

    def close_round(self) -> RoundState:
        """Admin: close the collecting round now (fix the roster or carry it over)."""
        return self.engine.close_round()

    def start(self) -> None:
        """Serve in a background thread; returns once the port accepts connections."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="coordinator-http", daemon=True)
        self._thread.start()
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick_loop, name="coordinator-rounds", daemon=True)
        self._ticker.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the coordinator HTTP server did not start")
            time.sleep(0.01)
        logger.info("coordinator %s listening on %s", self.config.federation_id, self.url)

    def stop(self) -> None:
        """Stop serving and close the databases (a new instance on the same storage resumes)."""
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._ticker is not None:
            self._ticker.join(timeout=10)
        self.replay_guard.close()
        self.store.close()

    def serve_forever(self) -> None:
        """Start, then block until SIGINT/SIGTERM (the CLI)."""
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        self.start()
        print(f"continuum-mcp coordinator {self.config.federation_id} on {self.url} "
              f"(mode {self.config.privacy_mode}, min contributors {self.config.min_contributors})", flush=True)
        done.wait()
        self.stop()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._tick_seconds):
            try:
                self.engine.tick()
            except Exception:  # never let the scheduler die; the next tick retries
                logger.exception("round tick failed")

    # ----------------------------------------------------------------------------- request plumbing

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
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1")
        query = request.scope.get("query_string", b"")
        return f"{path}?{query.decode('latin-1')}" if query else path

    def _authenticate(self, request: Request, body: bytes) -> tuple[str, bytes, Member | None]:
        """Verify the envelope (pinning the admitted key of a member); return (id, key, member)."""
        try:
            envelope = Envelope.from_headers(request.headers, method=request.method,
                                             path=self._signed_path(request), body=body)
            public_key = b64decode(envelope.public_key, what="public key", length=32)
        except (InvalidInput, ValidationError) as exc:
            raise CryptoError("malformed authentication headers") from exc
        member = self.store.get_member(envelope.instance_id)
        try:
            caller = self.verifier.verify(
                envelope, method=request.method, path=self._signed_path(request), body=body,
                expected_public_key=member.public_key if member else None,
            )
        except InvalidInput as exc:
            raise CryptoError(exc.message) from exc
        return caller, public_key, member

    def _check_admin(self, request: Request) -> None:
        given = request.headers.get(ADMIN_TOKEN_HEADER)
        if not self._admin_token:
            raise Forbidden("admin routes are disabled: the coordinator has no admin token")
        if given is None or not hmac.compare_digest(given.encode("utf-8", "replace"), self._admin_token.encode("utf-8")):
            raise Forbidden("admin token missing or wrong")

    def _endpoint(
        self,
        handler: Callable[..., BaseModel],
        auth: Auth,
        body_model: type[BaseModel] | None = None,
        status: int = 200,
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                body = await self._read_body(request)
                caller: str | None = None
                extra: dict[str, Any] = {}
                if auth == "admin":
                    self._rate.take(f"admin:{request.client.host if request.client else '?'}")
                    self._check_admin(request)
                elif auth in ("signed", "member"):
                    caller, public_key, member = await run_in_threadpool(self._authenticate, request, body)
                    self._rate.take(caller)
                    if auth == "member" and member is None:
                        raise NotAdmitted("this identity is not a member of the federation; join first")
                    extra = {"public_key": public_key, "member": member}
                model = parse_body(body_model, body) if body_model is not None else None
                result = await run_in_threadpool(handler, caller, model, dict(request.path_params), extra)
                return JSONResponse(result.model_dump(mode="json"), status_code=status)
            except ContinuumError as exc:
                logger.info("%s %s refused: %s", request.method, request.url.path, exc.code)
                return _from_exception(exc)

        return endpoint

    def _build_app(self) -> Starlette:
        def route(path: str, method: str, handler: Callable[..., BaseModel], auth: Auth,
                  body_model: type[BaseModel] | None = None, status: int = 200) -> Route:
            return Route(path, self._endpoint(handler, auth, body_model, status), methods=[method])

        async def openapi(_: Request) -> Response:
            return JSONResponse(openapi_document(self.info()))

        async def not_found(_: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 404)
            if status == 405:
                return JSONResponse(ErrorBody(code="not_found", message="method not allowed on this path").model_dump(),
                                    status_code=405)
            return error_response("not_found", "no such route")

        routes = [
            route("/v1/health", "GET", self._h_health, "none"),
            route("/v1/federation", "GET", self._h_federation, "signed"),
            route("/v1/join", "POST", self._h_join, "signed", JoinRequest),
            route("/v1/status", "GET", self._h_status, "member"),
            route("/v1/contributions", "POST", self._h_contribute, "member", ContributionRequest, 202),
            route("/v1/contributions", "DELETE", self._h_delete, "member"),
            route("/v1/leave", "POST", self._h_leave, "member"),
            route("/v1/rounds/current", "GET", self._h_round_current, "member"),
            route("/v1/rounds/{round_id:int}", "GET", self._h_round, "member"),
            route("/v1/rounds/{round_id:int}/secagg/roster", "GET", self._h_roster, "member"),
            route("/v1/rounds/{round_id:int}/secagg/inbox", "GET", self._h_inbox, "member"),
            route("/v1/rounds/{round_id:int}/secagg/survivors", "GET", self._h_survivors, "member"),
            route("/v1/rounds/{round_id:int}/secagg/{kind}", "POST", self._h_secagg, "member", SecAggPost),
            route("/v1/slots", "GET", self._h_slots, "member"),
            route("/v1/query", "POST", self._h_query, "member", QueryRequest),
            route("/v1/patterns/download", "GET", self._h_download, "member"),
            route("/v1/patterns/{pattern_id}/verify", "POST", self._h_verify, "member"),
            route("/v1/patterns/{pattern_id}/vote", "POST", self._h_vote, "member", VoteRequest),
            route("/v1/credits", "GET", self._h_credits, "member"),
            route("/v1/admin/invites", "POST", self._h_invites, "admin", InviteRequest),
            route("/v1/admin/rounds/close", "POST", self._h_close, "admin"),
            Route("/openapi.json", openapi, methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: not_found})

    # ----------------------------------------------------------------------------- handlers
    # Each runs in a worker thread: (caller, parsed body, path params, extra) -> response model.

    def _h_health(self, *_: Any) -> Health:
        return Health(version=__version__, federation_id=self.config.federation_id)

    def _h_federation(self, *_: Any) -> FederationInfo:
        return self.info()

    def _h_join(self, caller: str, req: JoinRequest, _p: dict[str, Any], extra: dict[str, Any]) -> JoinResponse:
        fed_mode = self.config.privacy_mode
        if not mode_allows(fed_mode, req.privacy_mode):
            raise InvalidInput(f"this federation releases in {fed_mode} mode; your mode {req.privacy_mode} forbids it")
        member, created = self.store.admit(caller, extra["public_key"], req.contribution_level, req.privacy_mode,
                                           req.admission_token, private=self.private)
        if created:
            logger.info("admitted %s (%s, %s)", caller, member.level, member.mode)
        return JoinResponse(instance_id=caller, federation=self.info(),
                            joined_at=datetime.fromtimestamp(member.joined_at, tz=timezone.utc))

    def _h_status(self, caller: str, *_: Any) -> MemberStatus:
        return self.engine.member_status(caller)

    def _h_contribute(self, caller: str, req: ContributionRequest, *_: Any) -> ContributionReceipt:
        return self.engine.submit(caller, req)

    def _h_delete(self, caller: str, *_: Any) -> DeletionReceipt:
        return self.engine.delete_contributions(caller)

    def _h_leave(self, caller: str, *_: Any) -> DeletionReceipt:
        return self.engine.leave(caller)

    def _h_round_current(self, caller: str, *_: Any) -> RoundState:
        return self.engine.state(caller)

    @staticmethod
    def _round_id(params: dict[str, Any]) -> int:
        rid = int(params["round_id"])
        if rid > _MAX_ROUND_ID:
            raise NotFound(f"round {rid} does not exist")
        return rid

    def _h_round(self, caller: str, _b: Any, params: dict[str, Any], _e: Any) -> RoundState:
        return self.engine.state(caller, self._round_id(params))

    def _h_roster(self, caller: str, _b: Any, params: dict[str, Any], _e: Any) -> KeyRoster:
        return self.engine.key_roster(self._round_id(params), caller)

    def _h_inbox(self, caller: str, _b: Any, params: dict[str, Any], _e: Any) -> ShareInbox:
        return self.engine.inbox(self._round_id(params), caller)

    def _h_survivors(self, caller: str, _b: Any, params: dict[str, Any], _e: Any) -> SurvivorList:
        return self.engine.survivors(self._round_id(params), caller)

    def _h_secagg(self, caller: str, post: SecAggPost, params: dict[str, Any], _e: Any) -> ActionReceipt:
        kind = str(params["kind"])
        if kind not in ("advertise", "share_keys", "masked_input", "unmask"):
            raise NotFound(f"unknown secure-aggregation message kind {kind!r}")
        try:
            message = SignedMessage.model_validate(post.message)
        except ValidationError as exc:
            raise InvalidInput("message." + _validation_message(exc)) from exc
        self.engine.receive(self._round_id(params), kind, caller, message)
        return ActionReceipt(detail=f"{kind} accepted")

    def _h_slots(self, *_: Any) -> SlotsResponse:
        released = {s: (vec, noisy, rnd) for s, vec, noisy, rnd in self.store.slot_vectors()}
        infos: list[SlotInfo] = []
        if self._codebook is not None:
            for s in range(self.config.slots):
                if s in released:
                    vec, noisy, rnd = released[s]
                    infos.append(SlotInfo(slot=s, vector=vec, noisy_contributors=noisy, released_at_round=rnd))
                else:
                    infos.append(SlotInfo(slot=s, vector=self._codebook[s].astype(float).tolist(),
                                          noisy_contributors=0.0, released_at_round=-1))
        else:  # clients hold codebook vectors themselves; only released DP centroids are served
            infos = [SlotInfo(slot=s, vector=v, noisy_contributors=n, released_at_round=r) for s, (v, n, r) in sorted(released.items())]
        return SlotsResponse(codebook_version=self.codebook_version, slots=infos)

    def _h_query(self, caller: str, req: QueryRequest, *_: Any) -> QueryResponse:
        return self.engine.query(caller, req)

    def _h_download(self, caller: str, *_: Any) -> DownloadResponse:
        return self.engine.download(caller)

    def _h_verify(self, caller: str, _b: Any, params: dict[str, Any], _e: Any) -> ActionReceipt:
        return self.engine.verify(caller, str(params["pattern_id"]))

    def _h_vote(self, caller: str, req: VoteRequest, params: dict[str, Any], _e: Any) -> ActionReceipt:
        return self.engine.vote(caller, str(params["pattern_id"]), req.up)

    def _h_credits(self, caller: str, *_: Any) -> CreditBalance:
        return self.engine.credits(caller)

    def _h_invites(self, _c: Any, req: InviteRequest, *_: Any) -> InviteResponse:
        return InviteResponse(admission_tokens=self.create_admission_tokens(req.count))

    def _h_close(self, *_: Any) -> RoundState:
        return self.engine.close_round()


# ------------------------------------------------------------------------------------- CLI


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="continuum-mcp coordinator", description="Run a federation coordinator.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--storage", required=True, type=Path, help="directory for the coordinator's SQLite files")
    p.add_argument("--min-contributors", type=int, default=3)
    p.add_argument("--require-contribution", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--privacy-mode", choices=["high", "balanced", "open"], default="high")
    p.add_argument("--federation-id", default="fed-default")
    p.add_argument("--admin-token", default=None, help="enables the /v1/admin routes")
    p.add_argument("--open", dest="open_admission", action="store_true",
                   help="no admission tokens (an open federation cannot resist fake identities)")
    p.add_argument("--round-interval", type=float, default=86400, help="seconds between round closes")
    p.add_argument("--phase-timeout", type=float, default=60, help="seconds per secure-aggregation phase")
    p.add_argument("--window-days", type=float, default=30)
    p.add_argument("--rate-limit", type=float, default=1200, help="requests per minute per identity")
    p.add_argument("--slots", type=int, default=256)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``continuum-mcp coordinator [options]`` or ``continuum-mcp coordinator invite --storage DIR --count N``."""
    import sys

    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_in[:1] == ["invite"]:
            p = argparse.ArgumentParser(prog="continuum-mcp coordinator invite",
                                        description="Mint single-use admission tokens (one per invited instance).")
            p.add_argument("--storage", required=True, type=Path)
            p.add_argument("--count", type=int, default=1)
            a = p.parse_args(args_in[1:])
            store = CoordinatorStore(a.storage)
            try:
                for token in store.create_admission_tokens(a.count):
                    print(token)
            finally:
                store.close()
            return 0
        a = _serve_parser().parse_args(args_in)
        logging.basicConfig(level=getattr(logging, str(a.log_level).upper(), logging.INFO))
        coord = FederationCoordinator(
            port=a.port, storage_path=a.storage, require_contribution=a.require_contribution,
            min_contributors=a.min_contributors, privacy_mode=a.privacy_mode, federation_id=a.federation_id,
            private=not a.open_admission, admin_token=a.admin_token, host=a.host,
            round_interval_seconds=a.round_interval, phase_timeout_seconds=a.phase_timeout,
            window_days=a.window_days, rate_limit_per_minute=a.rate_limit, slots=a.slots, dim=a.dim,
        )
        coord.serve_forever()
        return 0
    except ContinuumError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
