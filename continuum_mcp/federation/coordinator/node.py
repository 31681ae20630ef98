"""The coordinator process: wires config, store, engine, service and HTTP, and runs uvicorn.

Run it with ``continuum-mcp coordinator ...`` (see :mod:`.cli`) or in-process::

    coord = FederationCoordinator(CoordinatorConfig(storage_path=tmp, privacy_mode="open"))
    coord.start(); print(coord.url); ...; coord.stop()

Why the connection timeouts: uvicorn closes a keep-alive connection only after a response, so a
client that connects and sends nothing (or dribbles headers) would hold a socket forever. The
protocol class below closes any connection that has not sent complete request headers within
``header_timeout_seconds``; ``keep_alive_timeout_seconds`` bounds idle keep-alive connections.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

import h11
import numpy as np
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from continuum_mcp._http import bind, start_in_thread
from continuum_mcp.crypto.identity import DatabaseReplayGuard, MemoryReplayGuard, Verifier
from continuum_mcp.crypto.replay import REPLAY_SCHEMA, REPLAY_SCHEMA_VERSION
from continuum_mcp.errors import InvalidInput
from continuum_mcp.federation.coordinator.config import CoordinatorConfig
from continuum_mcp.federation.coordinator.engine import Clock, RoundEngine
from continuum_mcp.federation.coordinator.governance import governance_service
from continuum_mcp.federation.coordinator.http import HttpAdapter
from continuum_mcp.federation.coordinator.service import CoordinatorService
from continuum_mcp.federation.coordinator.store import REPLAY_DB_NAME, CoordinatorStore
from continuum_mcp.federation.protocol import FederationInfo, RoundState
from continuum_mcp.privacy.modes import PrivacyPolicy, default_policy

logger = logging.getLogger(__name__)

#: nonces of not-yet-admitted callers kept in memory (fails closed when full; see MemoryReplayGuard)
STRANGER_NONCES = 200_000


def timed_h11_protocol(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections that do not finish their request headers in time."""

    class TimedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm()  # between requests, or a request's headers are still incomplete
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return TimedH11Protocol


class FederationCoordinator:
    """The coordinator service: storage, round engine, core service, HTTP app and its uvicorn server.

    ``config`` holds every option; keyword ``options`` (CoordinatorConfig field names) build or
    override it, so ``FederationCoordinator(storage_path=..., privacy_mode="open")`` works too.
    ``codebook``, ``policy`` and ``now`` are collaborators, not settings."""

    def __init__(self, config: CoordinatorConfig | None = None, *, codebook: np.ndarray | None = None,
                 policy: PrivacyPolicy | None = None, now: Clock = time.time, **options: Any) -> None:
        if config is None:
            config = CoordinatorConfig.build(**options)
        elif options:
            config = CoordinatorConfig.build(**{**config.model_dump(), **options})
        self.config = config
        self.policy = policy or default_policy()
        self.policy.mode(config.privacy_mode)  # raises InvalidInput for an unknown mode
        if config.budget_epsilon is not None:
            self.policy = self.policy.with_mode(config.privacy_mode, budget_epsilon=config.budget_epsilon)
        if codebook is not None and codebook.shape != (config.slots, config.dim):
            raise InvalidInput(f"codebook must have shape ({config.slots}, {config.dim}), got {codebook.shape}")
        self.host = config.host
        self.port = config.port
        self.storage_path = config.storage_path
        self.store = CoordinatorStore.from_config(config)
        try:
            self.store.ensure_federation(config.federation_id)
            # signed nonces of members, shared by every process on the store's database (replay.db on SQLite)
            self.replay_guard = DatabaseReplayGuard(self.store.component(
                REPLAY_DB_NAME, REPLAY_SCHEMA, version=REPLAY_SCHEMA_VERSION, what="replay guard (recent nonces only)"))
        except BaseException:
            self.store.close()
            raise
        self.verifier = Verifier(self.replay_guard, window_seconds=config.replay_window_seconds, clock=now)
        strangers = Verifier(MemoryReplayGuard(STRANGER_NONCES), window_seconds=config.replay_window_seconds, clock=now)
        self.engine = RoundEngine(self.store, config, self.verifier, self.policy, now=now)
        self.engine.recover()
        cb = None if codebook is None else np.asarray(codebook, dtype=np.float32)
        self.service = CoordinatorService(config, self.store, self.engine, self.policy, cb)
        self.engine.codebook_version = lambda: self.service.codebook_in_use()[0]
        self.service.governance = governance_service(config, self.store, self.verifier, self.engine, cb, now)
        self.http = HttpAdapter(self.service, self.verifier, strangers, self.replay_guard,
                                admin_token=config.admin_token, identity_rate=config.rate_limit_per_minute,
                                address_rate=config.address_rate_limit_per_minute)
        self.app = self.http.app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    # ----------------------------------------------------------------------------- python API

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def info(self) -> FederationInfo:
        return self.service.federation()

    def create_admission_tokens(self, n: int) -> list[str]:
        """Admin: mint ``n`` single-use admission tokens, limited and journalled like the admin
        route. The founder, not the coordinator, turns one into an invite with the federation key
        (``federation.founding.mint_invite``)."""
        return self.service.invites(n, via="local").admission_tokens

    def close_round(self) -> RoundState:
        """Admin: close the collecting round now (fix the roster or carry it over)."""
        return self.engine.close_round()

    def start(self) -> None:
        """Serve in a background thread; returns once the port accepts connections."""
        sock = bind(self.host, self.config.port)
        self.port = sock.getsockname()[1]
        cfg = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                             timeout_graceful_shutdown=2, http=timed_h11_protocol(self.config.header_timeout_seconds),
                             proxy_headers=self.config.trusted_proxies is not None,
                             forwarded_allow_ips=self.config.trusted_proxies or "",
                             timeout_keep_alive=self.config.keep_alive_timeout_seconds)  # type: ignore[arg-type]
        self._server = uvicorn.Server(cfg)
        self._thread = start_in_thread(self._server, sock, name="coordinator-http")
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick_loop, name="coordinator-rounds", daemon=True)
        self._ticker.start()
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
        while not self._stop.wait(self.config.tick_seconds):
            try:
                self.engine.tick()
            except Exception:  # never let the scheduler die; the next tick retries
                logger.exception("round tick failed")
            try:
                self.service.governance.tick()
            except Exception:
                logger.exception("governance tick failed")


__all__ = ["FederationCoordinator", "timed_h11_protocol"]
