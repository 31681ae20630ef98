"""CoordinatorAPI: the one client of the coordinator's HTTP API.

Why one: signing, retries and error mapping are security- and reliability-relevant, so they exist
once. Every call is looked up in the protocol's route table (``protocol.routes()``): the method,
the path template, whether it is signed, and the request and response models all come from there,
so the client cannot drift from the coordinator that builds its routes from the same table.

- Signed routes carry the identity headers of :meth:`Identity.sign_request`, over the exact body
  bytes and the concrete path; each retry signs afresh (new nonce).
- Transport errors, 5xx and 429 are retried with exponential backoff and jitter (a 429 waits its
  ``Retry-After``, at most 5 s). Exhausted: :class:`CoordinatorUnavailable` (or
  :class:`RateLimited` with ``retry_after`` when the last answer was 429).
- A 4xx ``ErrorBody`` becomes the typed exception of its code (``errors.error_for_code``) with the
  server's message.
- Versioning: every request names ``PROTOCOL_VERSION`` (``X-Continuum-Protocol``) and every answer
  below 500 must name the same version, else :class:`UpgradeRequired` (a v1 coordinator sends no
  such header; a newer one answers 426 ``upgrade_required``). Nothing half-compatible proceeds.
- The transport is injectable: pass ``http=`` (any ``httpx.Client``, e.g. Starlette's
  ``TestClient(app)``) or ``transport=`` (an ``httpx.BaseTransport``); tests and benchmarks drive
  the real coordinator app in-process that way, or a real server over 127.0.0.1.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from continuum_mcp.crypto.identity import Identity
from continuum_mcp.errors import (
    ERRORS_BY_CODE,
    ContinuumError,
    CoordinatorUnavailable,
    RateLimited,
    UpgradeRequired,
    error_for_code,
)
from continuum_mcp.federation import protocol as wire
from continuum_mcp.federation.protocol import RouteSpec, routes
from continuum_mcp.secagg import KeyRoster, ShareInbox, SignedMessage, SurvivorList

M = TypeVar("M", bound=BaseModel)

#: errors after which a caller may simply try again later (nothing was refused on the merits).
TRANSIENT_ERRORS: tuple[type[ContinuumError], ...] = (CoordinatorUnavailable, RateLimited)
MAX_RETRY_AFTER_SECONDS = 5.0


def error_from_response(resp: httpx.Response) -> ContinuumError:
    """The typed exception of an error answer, keeping the server's message (``RateLimited``
    carries ``Retry-After``). A body that is no ErrorBody, or an unknown code, means the
    coordinator is not behaving as one: ``CoordinatorUnavailable``."""
    try:
        body = wire.ErrorBody.model_validate_json(resp.content)
    except ValidationError:
        return CoordinatorUnavailable(f"the coordinator answered HTTP {resp.status_code} without an error body")
    if body.code not in ERRORS_BY_CODE:
        return CoordinatorUnavailable(f"coordinator error {body.code}: {body.message}")
    if body.code == RateLimited.code:
        return RateLimited(body.message, retry_after=_retry_after(resp))
    return error_for_code(body.code, body.message)


def check_protocol(resp: httpx.Response, base_url: str) -> None:
    """Refuse an answer of another protocol version (``UpgradeRequired``), keeping the server's
    own upgrade message when it sent one."""
    spoken = resp.headers.get(wire.PROTOCOL_HEADER)
    if spoken == str(wire.PROTOCOL_VERSION):
        return
    if resp.status_code == 426:
        err = error_from_response(resp)
        if isinstance(err, UpgradeRequired):
            raise err
    if spoken is None:
        raise UpgradeRequired(f"the coordinator at {base_url} speaks federation protocol v1 (its answers name no "
                              f"protocol version); this client speaks v{wire.PROTOCOL_VERSION}: the coordinator "
                              "must be upgraded to the same continuum-mcp release")
    who = "this client" if not spoken.isdigit() or int(spoken) > wire.PROTOCOL_VERSION else "the coordinator"
    raise UpgradeRequired(f"the coordinator at {base_url} speaks federation protocol v{spoken}, this client "
                          f"v{wire.PROTOCOL_VERSION}: upgrade {who}")


def _retry_after(resp: httpx.Response) -> float:
    try:
        return max(0.0, float(resp.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


class CoordinatorAPI(AbstractContextManager["CoordinatorAPI"]):
    """Signed, retried, typed calls to one coordinator (``base_url``) as one ``identity``.

    ``call(name, body, **path)`` runs any route of ``protocol.routes()``; the thin methods below
    (one per route) only name the route and type the answer. Thread-safe as far as the httpx
    client is (it is). ``close()`` closes the httpx client only if this object created it.
    """

    def __init__(
        self,
        base_url: str,
        identity: Identity | None,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        admin_token: str | None = None,
        timeout_seconds: float = 10.0,
        max_retries: int = 4,
        backoff_seconds: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("pass either http or transport, not both")
        self.base_url = base_url.rstrip("/")
        self.identity = identity
        self.admin_token = admin_token
        self.max_retries = max(0, int(max_retries))
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self._own_http = http is None
        self._http = http or httpx.Client(
            transport=transport, timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)))

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- the one request path -----------------------------------------------------------
    def _headers(self, spec: RouteSpec, path: str, data: bytes) -> dict[str, str]:
        headers: dict[str, str] = {wire.PROTOCOL_HEADER: str(wire.PROTOCOL_VERSION)}
        if spec.auth in ("signed", "member"):
            if self.identity is None:
                raise ValueError(f"route {spec.name} is signed: this CoordinatorAPI has no identity")
            headers.update(self.identity.sign_request(spec.method, path, data))  # fresh nonce per attempt
        elif spec.auth == "admin":
            if self.admin_token is None:
                raise ValueError(f"route {spec.name} needs the admin token")
            headers[wire.ADMIN_TOKEN_HEADER] = self.admin_token
        if data:
            headers["Content-Type"] = "application/json"
        return headers

    def _backoff(self, attempt: int) -> float:
        return self.backoff_seconds * (2 ** (attempt - 1)) * (1 + 0.25 * secrets.randbelow(100) / 100)

    def call(self, name: str, body: BaseModel | None = None, **path: Any) -> Any:
        """Run route ``name`` with ``body`` (its request model) and the path parameters; returns
        the route's response model. Raises the typed error of a 4xx, or after the retries
        ``CoordinatorUnavailable`` / ``RateLimited``."""
        spec = routes()[name]
        if (body is None) != (spec.request is None) or (body is not None and not isinstance(body, spec.request)):
            want = spec.request.__name__ if spec.request else "no body"
            raise TypeError(f"route {name} takes {want}, got {type(body).__name__}")
        target = spec.format_path(**path)
        data = body.model_dump_json().encode("utf-8") if body is not None else b""
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(self._backoff(attempt))
            headers = self._headers(spec, target, data)
            try:
                resp = self._http.request(spec.method, self.base_url + target, content=data, headers=headers)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code < 500:
                check_protocol(resp, self.base_url)
            if resp.status_code == 429:
                if attempt == self.max_retries:
                    raise error_from_response(resp)
                last = "HTTP 429"
                self._sleep(min(MAX_RETRY_AFTER_SECONDS, _retry_after(resp)))
                continue
            if resp.status_code >= 500:
                last = f"HTTP {resp.status_code}"
                continue
            if resp.status_code >= 400:
                raise error_from_response(resp)
            assert spec.response is not None
            try:
                return spec.response.model_validate_json(resp.content)
            except ValidationError as exc:
                raise CoordinatorUnavailable(f"the coordinator sent an unexpected answer to {spec.method} {target}: "
                                             f"{exc.errors()[0]['msg']}") from exc
        raise CoordinatorUnavailable(
            f"the coordinator at {self.base_url} is unreachable ({last}) after {self.max_retries + 1} attempts; "
            "contributions wait in the local outbox and nothing is lost")

    # ----- one thin, typed method per route ------------------------------------------------
    def health(self) -> wire.Health:
        return self.call("health")

    def federation(self) -> wire.FederationInfo:
        return self.call("federation")

    def join(self, req: wire.JoinRequest) -> wire.JoinResponse:
        return self.call("join", req)

    def status(self) -> wire.MemberStatus:
        return self.call("status")

    def contribute(self, req: wire.ContributionRequest) -> wire.ContributionReceipt:
        return self.call("contribute", req)

    def delete_contributions(self) -> wire.DeletionReceipt:
        return self.call("delete_contributions")

    def leave(self) -> wire.DeletionReceipt:
        return self.call("leave")

    def round_current(self) -> wire.RoundState:
        return self.call("round_current")

    def round(self, round_id: int) -> wire.RoundState:
        return self.call("round", round_id=round_id)

    def secagg_roster(self, round_id: int) -> KeyRoster:
        return self.call("secagg_roster", round_id=round_id)

    def secagg_inbox(self, round_id: int) -> ShareInbox:
        return self.call("secagg_inbox", round_id=round_id)

    def secagg_survivors(self, round_id: int) -> SurvivorList:
        return self.call("secagg_survivors", round_id=round_id)

    def secagg_post(self, round_id: int, kind: wire.SecAggKind, message: SignedMessage | wire.SecAggPost
                    ) -> wire.ActionReceipt:
        """Post one signed secagg message (a SignedMessage is wrapped in its SecAggPost)."""
        post = message if isinstance(message, wire.SecAggPost) else wire.SecAggPost(message=message.model_dump(mode="json"))
        return self.call("secagg_post", post, round_id=round_id, kind=kind)

    def slots(self) -> wire.SlotsResponse:
        return self.call("slots")

    def query(self, req: wire.QueryRequest) -> wire.QueryResponse:
        return self.call("query", req)

    def download(self) -> wire.DownloadResponse:
        return self.call("download")

    def verify(self, pattern_id: str) -> wire.ActionReceipt:
        return self.call("verify", pattern_id=pattern_id)

    def vote(self, pattern_id: str, up: bool) -> wire.ActionReceipt:
        return self.call("vote", wire.VoteRequest(up=bool(up)), pattern_id=pattern_id)

    def credits(self) -> wire.CreditBalance:
        return self.call("credits")

    def admin_invites(self, count: int = 1) -> wire.InviteResponse:
        return self.call("admin_invites", wire.InviteRequest(count=count))

    def admin_close_round(self) -> wire.RoundState:
        return self.call("admin_close_round")


__all__ = ["TRANSIENT_ERRORS", "CoordinatorAPI", "check_protocol", "error_from_response"]
