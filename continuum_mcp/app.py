"""Continuum: the core API that the MCP server and the CLI adapt.

Why one object: everything a second adapter would need (recall with federated results, the
pattern preview, auto-sync resume, the not-joined answers) lives here once, so ``server.py``
and ``cli/`` only translate arguments and errors. It owns the memory store and builds the
expensive parts on first use: the generalizer (privacy stack) for previews and the federation
client (httpx, secure aggregation, identity key) only when a federation call needs it. A store
that never joined a federation gets no identity key and no federation database from a status
request or a ``recall(include_federated=True)``.

Thread-safe: the MCP server calls it from worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from continuum_mcp._governance_app import GovernanceMethods, consented_to_usage
from continuum_mcp.config import Settings
from continuum_mcp.errors import ContinuumError, InvalidInput, NotJoined
from continuum_mcp.memory.models import (
    Filters, ForgetResult, ImportResult, Memory, MemoryPage, OnDuplicate, Progress, RecallResult, RememberResult,
    SearchMode, StoreStats,
)

if TYPE_CHECKING:  # the store (numpy, FAISS), federation and privacy stacks are imported only when used
    from continuum_mcp.memory.store import MemoryStore
    from embeddings import Embedder
    from continuum_mcp.federation.client import (
        AutoSyncSettings, ContributionResult, DeletionResult, DownloadResult, FederatedPattern, FederationClient,
        FederationStatus, JoinResult, LeaveResult, SyncResult, VerifyResult, VoteResult,
    )
    from continuum_mcp._history import PrivacyHistory, ReceivedPattern
    from continuum_mcp.federation.client._sentlog import SentContribution
    from continuum_mcp.federation.learning.recorder import UsageDeletion, UsageRecord, UsageRecorder
    from continuum_mcp.federation.protocol import CreditBalance
    from continuum_mcp.privacy.generalize import Generalizer
    from continuum_mcp.privacy.preview import PatternPreview

LevelName = Literal["minimal", "standard", "extensive"]
ModeName = Literal["high", "balanced", "open"]

#: Where FederationClient keeps its state under the data dir (tests check it against the client's
#: own constant); read here so that "not joined" is answered without building the client.
FEDERATION_DIR = "federation"
NOT_JOINED = "this instance has not joined a federation; join with an invite first"


class RecallWithFederated(RecallResult):
    """Recall hits, plus (when asked) federated patterns kept apart from the user's memories.

    ``federated`` holds :class:`FederatedPattern` objects; typed loosely so that a recall (and the
    MCP server's output schema) never imports the federation client."""

    federated: list[Any] | None = Field(
        default=None, description="Patterns from the federation's released knowledge (local cache), not the "
                                  "user's memories; present only with include_federated.")


class FederatedQueryResult(BaseModel):
    """What a federation query found: anonymised patterns, not anybody's memories."""

    query: str
    patterns: list[FederatedPattern]


def resolve_models() -> None:
    """Complete :class:`FederatedQueryResult` with FederatedPattern (the federation client's models).

    Done on first use instead of at import so that importing the core (and the MCP server) does
    not import httpx and the secure-aggregation stack; idempotent and cheap after the first call."""
    if FederatedQueryResult.__pydantic_complete__:
        return
    from continuum_mcp.federation.client._models import FederatedPattern

    FederatedQueryResult.model_rebuild(_types_namespace={"FederatedPattern": FederatedPattern})


class Continuum(GovernanceMethods):
    """One user's memory and (optional) federation membership over ``settings.data_dir``."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, *,
                 load_delay: float | None = 0.0, usage_opt_in: Callable[[], bool] | None = None) -> None:
        """Nothing is opened yet; ``load_delay`` is passed to :func:`open_store` (the server
        delays the model load so that its handshake does not compete with it). ``usage_opt_in``
        says whether the user is opted in to a running usage-statistics session (governance's
        answer); usage events are recorded only while it returns True."""
        self.settings = settings
        self._usage_opt_in: Callable[[], bool] = usage_opt_in or (lambda: consented_to_usage(self.federation_dir))
        self._usage: UsageRecorder | None = None
        self._embedder, self._load_delay = embedder, load_delay
        self._store: MemoryStore | None = None
        self._federation: FederationClient | None = None
        self._generalizer: Generalizer | None = None
        self._lock = threading.RLock()

    @classmethod
    def open(cls, settings: Settings | None = None, embedder: Embedder | None = None, *,
             load_delay: float | None = 0.0) -> Continuum:
        """Construct and open the store now, so that a bad store fails here with its typed error."""
        app = cls(settings or Settings.from_env(), embedder, load_delay=load_delay)
        app.store  # noqa: B018 - opening is the point
        return app

    @property
    def store(self) -> MemoryStore:
        with self._lock:
            if self._store is None:
                from continuum_mcp.memory.store import open_store

                self._store = open_store(self.settings, self._embedder, load_delay=self._load_delay)
            return self._store

    def close(self) -> None:
        """Stop auto-sync, close the federation client, then the store."""
        with self._lock:
            fed, self._federation = self._federation, None
            store, self._store = self._store, None
            usage, self._usage = self._usage, None
        if usage is not None:
            usage.close()
        if fed is not None:
            fed.close()
        if store is not None:
            store.close()

    def __enter__(self) -> Continuum:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- memory ------------------------------------------------------------------------------
    def remember(self, text: str, *, tags: Sequence[str] | None = None, metadata: dict[str, Any] | None = None,
                 source: str = "api", at: datetime | None = None, on_duplicate: OnDuplicate = "merge",
                 supersedes: int | None = None) -> RememberResult:
        """Store one memory. ``at``: when it happened (default now); ``on_duplicate="store"`` keeps
        even a restatement; ``supersedes``: the id of the memory this one is a newer version of
        (otherwise the store links an update it recognises by itself)."""
        if at is not None and not isinstance(at, datetime):
            raise InvalidInput("at must be a date and time (ISO 8601)")
        if supersedes is not None and (isinstance(supersedes, bool) or not isinstance(supersedes, int)):
            raise InvalidInput(f"supersedes must be a memory id (an integer), got {type(supersedes).__name__}")
        from continuum_mcp.memory.store import make_input

        item = make_input(text=text, tags=tags, metadata=metadata, source=source, created_at=at, supersedes=supersedes)
        result = self.store.remember_many([item], on_duplicate=on_duplicate)[0]
        self._record_usage("remember", memory_ids=[result.memory.id])
        return result

    def get(self, memory_id: int) -> Memory:
        return self.store.get(memory_id)

    def recall(self, query: str, *, k: int = 5, mode: SearchMode = "hybrid", filters: Filters | None = None,
               min_score: float | None = None, include_federated: bool = False) -> RecallWithFederated:
        """The user's memories best first; with ``include_federated`` also the matching patterns
        of the local cache of released patterns, in a separate list (``[]`` when not joined)."""
        if not isinstance(include_federated, bool):
            raise InvalidInput("include_federated must be true or false")
        r = self.store.recall(query, k=k, mode=mode, filters=filters, min_score=min_score)
        self._record_usage("recall", result_count=len(r.hits), memory_ids=[h.memory.id for h in r.hits])
        out = RecallWithFederated(**dict(r))
        if include_federated:
            fed = self._member()
            out.federated = fed.search_cache(query, k) if fed is not None else []
        return out

    def forget(self, ids: Sequence[int]) -> ForgetResult:
        result = self.store.forget(ids)
        self._record_usage("forget", memory_ids=result.deleted)
        return result

    def update(self, memory_id: int, *, text: str | None = None, tags: Sequence[str] | None = None,
               metadata: dict[str, Any] | None = None) -> Memory:
        memory = self.store.update(memory_id, text=text, tags=tags, metadata=metadata)
        self._record_usage("update", memory_ids=[memory_id])
        return memory

    def list(self, filters: Filters | None = None, *, offset: int = 0, limit: int = 20) -> MemoryPage:
        return self.store.list(filters, offset=offset, limit=limit)

    def stats(self) -> StoreStats:
        return self.store.stats()

    def export_jsonl(self, out: IO[str]) -> int:
        return self.store.export_jsonl(out)

    def import_jsonl(self, lines: Iterable[str], *, progress: Progress | None = None) -> ImportResult:
        return self.store.import_jsonl(lines, progress=progress)

    def reembed(self, *, progress: Progress | None = None) -> int:
        return self.store.reembed(progress=progress)

    # ----- usage record (local only; federation.learning.recorder) -------------------------------
    def set_usage_opt_in(self, opted_in: Callable[[], bool]) -> None:
        """Governance's answer to "is the user opted in to a running usage-statistics session?"."""
        self._usage_opt_in = opted_in

    def _usage_recorder(self) -> UsageRecorder:
        with self._lock:
            if self._usage is None:
                from continuum_mcp.federation.learning.recorder import UsageRecorder

                self._usage = UsageRecorder(Path(self.settings.data_dir), opted_in=lambda: self._usage_opt_in())
            return self._usage

    def _record_usage(self, kind: Literal["tool", "remember", "recall", "update", "forget"], **event: Any) -> None:
        if self._usage_opt_in():  # nothing is imported, opened or written for a user who did not opt in
            self._usage_recorder().record(kind, **event)

    def record_tool_call(self, name: str) -> None:
        """Note an MCP tool call in the usage record (only while opted in; the MCP adapter calls it)."""
        self._record_usage("tool", tool=name)

    def usage_record(self) -> UsageRecord:
        """Everything the local usage record holds, and whether it is recording."""
        return self._usage_recorder().view()

    def delete_usage_record(self) -> UsageDeletion:
        """Delete the local usage record (every event and the file)."""
        return self._usage_recorder().delete()

    # ----- patterns (local only) ---------------------------------------------------------------
    def generalizer(self) -> Generalizer:
        """The pattern pipeline for previews (no identity or federation needed)."""
        store = self.store
        with self._lock:
            if self._generalizer is None:
                from continuum_mcp.privacy.generalize import Generalizer
                from continuum_mcp.privacy.modes import default_policy
                from continuum_mcp.privacy.scrub import Scrubber

                self._generalizer = Generalizer(store.embedder, Scrubber(),
                                                max_phrases=default_policy().max_phrases_per_pattern)
            return self._generalizer

    def preview(self, *, min_confidence: float = 0.0, exclude: Collection[int] = ()) -> PatternPreview:
        """The anonymised patterns this memory would yield, and what was held back; sends nothing."""
        from continuum_mcp.privacy.preview import preview_patterns

        return preview_patterns(list(self.store.all_memories()), self.generalizer(), min_confidence=min_confidence,
                                exclude=list(exclude))

    # ----- federation --------------------------------------------------------------------------
    @property
    def federation_dir(self) -> Path:
        return Path(self.settings.data_dir) / FEDERATION_DIR

    @property
    def joined(self) -> bool:
        """Whether a membership is on disk (read without building the federation client)."""
        return (self.federation_dir / "membership.json").exists()

    def federation(self) -> FederationClient:
        """The federation client over this store, built on first use (creates the identity key)."""
        store = self.store
        with self._lock:
            if self._federation is None:
                from continuum_mcp.federation.client import FederationClient

                self._federation = FederationClient(store, self.settings)
            return self._federation

    def _member(self) -> FederationClient | None:
        """The client if this instance is (or was, in this process) a member; None otherwise."""
        with self._lock:
            if self._federation is not None:
                return self._federation
        return self.federation() if self.joined else None

    def _require(self) -> FederationClient:
        fed = self._member()
        if fed is None:
            raise NotJoined(NOT_JOINED)
        return fed

    def join(self, invite: str, contribution_level: LevelName = "standard",
             privacy_mode: ModeName = "high") -> JoinResult:
        return self.federation().join(invite, contribution_level, privacy_mode)

    def federation_status(self) -> FederationStatus:
        """Membership, budget, credits and rounds; a store that never joined gets a not-joined
        answer without an identity key being created for it."""
        fed = self._member()
        if fed is not None:
            return fed.status()
        from continuum_mcp.federation.client import FederationStatus

        key = self.federation_dir / "identity.key"
        instance_id = ""
        if key.exists():
            from continuum_mcp.crypto.identity import Identity

            instance_id = Identity.load_or_create(key).instance_id
        return FederationStatus(joined=False, instance_id=instance_id, message="not a member of any federation"
                                + ("" if instance_id else "; an identity is created when joining"))

    def contribute(self, *, min_confidence: float = 0.7, domain: str | None = None,
                   dry_run: bool = False) -> ContributionResult:
        return self._require().contribute(min_confidence=min_confidence, domain=domain, dry_run=dry_run)

    def sync(self, *, timeout_seconds: float | None = None) -> SyncResult:
        return self._require().sync(timeout_seconds=timeout_seconds)

    def query(self, query: str, *, min_confidence: float = 0.8, max_results: int = 10) -> FederatedQueryResult:
        """Released patterns ranked and decrypted on this machine (costs credits)."""
        patterns = self._require().query(query, min_confidence=min_confidence, max_results=max_results)
        resolve_models()
        return FederatedQueryResult(query=query, patterns=patterns)

    def credits(self) -> CreditBalance:
        return self._require().get_credits()

    def verify(self, pattern_id: str) -> VerifyResult:
        return self._require().verify(pattern_id)

    def vote(self, pattern_id: str, up: bool) -> VoteResult:
        return self._require().vote(pattern_id, up)

    def download(self) -> DownloadResult:
        return self._require().download_patterns()

    def delete_contributions(self) -> DeletionResult:
        return self._require().delete_contributions()

    def leave(self, *, force: bool = False) -> LeaveResult:
        return self._require().leave(force=force)

    def set_auto_sync(self, enabled: bool, *, interval_minutes: float = 15, contribute_on_sync: bool = True,
                      query_on_sync: bool = True) -> AutoSyncSettings:
        """Turn background sync on (persisted; needs a membership) or off."""
        if enabled:
            return self._require().enable_auto_sync(interval_minutes, contribute_on_sync, query_on_sync)
        fed = self._member()
        if fed is not None:
            return fed.disable_auto_sync()
        from continuum_mcp.federation.client import AutoSyncSettings

        return AutoSyncSettings(enabled=False)

    # ----- history (read-only: what the dashboard shows; continuum_mcp._history) ---------------
    def privacy_history(self) -> PrivacyHistory:
        """Every privacy spend and the budget over time (rolling window and lifetime)."""
        from continuum_mcp._history import privacy_history

        return privacy_history(self.federation_dir, self._member())

    def contribution_history(self, *, offset: int = 0, limit: int = 50) -> list[SentContribution]:
        """What each accepted contribution sent (plain text of what left encrypted), newest first."""
        from continuum_mcp._history import contribution_history

        return contribution_history(self.federation_dir, offset=offset, limit=limit)

    def received_patterns(self) -> list[ReceivedPattern]:
        """The released patterns in the local cache, newest release first (no network, no credits)."""
        from continuum_mcp._history import received_patterns

        return received_patterns(self.federation_dir, self._member())

    def resume_auto_sync(self) -> bool:
        """Start auto-sync again if this instance is a member and had it enabled; True if running.

        An unreadable membership is reported by ``federation_status``, not at start-up."""
        if not self.joined:
            return False
        try:
            return self.federation().start_auto_sync()
        except ContinuumError:
            return False


__all__ = ["Continuum", "FederatedQueryResult", "RecallWithFederated", "resolve_models"]
