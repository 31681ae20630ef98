"""Token buckets: how often one key (a member identity, or a client address) may call.

Why two keys: a member is throttled by its pinned identity; everyone else (unsigned requests,
joins, signed requests from identities that are not members) by client address as well, because
key pairs cost nothing to make and would otherwise reset the limit.

Why two levels for addresses: nginx routes a member by its instance id to one process, so an
identity's bucket in that process's memory is the member's whole limit; but a stranger picks its own
instance ids and reaches every one of the N processes. So an address is charged to this process's
bucket first (cheap: a flood is refused without touching the database, and the writes a flood can
cause are bounded by N x the rate) and then to its bucket in the coordinator's database, which every
process on that database shares (:class:`StoreBucket`): the limit holds for the N together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from continuum_mcp.errors import RateLimited


class TokenBucket:
    """Per-key token buckets in this process's memory (capacity = rate per minute, refilled continuously)."""

    def __init__(self, per_minute: float, max_keys: int = 100_000, what: str = "identity") -> None:
        self.capacity = float(per_minute)
        self.rate = float(per_minute) / 60.0
        self.what = what
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
                raise RateLimited(f"too many requests from this {self.what}; slow down", (1.0 - tokens) / self.rate)
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_keys:  # forget idle (full) buckets
                full = [k for k, (t, ts) in self._buckets.items() if t + (now - ts) * self.rate >= self.capacity]
                for k in full:
                    del self._buckets[k]


class TokenStore(Protocol):
    """Where shared buckets live (:class:`~.store.CoordinatorStore`)."""

    def take_token(self, address: str, capacity: float, rate: float, now: float) -> bool: ...

    def prune_tokens(self, before: float) -> int: ...


class StoreBucket:
    """Per-key token buckets in the coordinator's database: one limit for every process on it.

    Time is the injected wall clock (the engine's), since processes share no monotonic clock. Each
    take is one database statement; once per refill period (``capacity / rate`` seconds, a minute)
    this process also deletes the buckets untouched for that long, which are full again, so the
    table holds only the addresses of about the last two minutes."""

    def __init__(self, store: TokenStore, per_minute: float, clock: Callable[[], float],
                 what: str = "client address") -> None:
        self.capacity = float(per_minute)
        self.rate = float(per_minute) / 60.0
        self.what = what
        self.refill_seconds = self.capacity / self.rate
        self._store = store
        self._clock = clock
        self._next_prune = float("-inf")  # the first take prunes what earlier runs left
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        now = self._clock()
        with self._lock:  # one thread of this process prunes, once per period
            prune = now >= self._next_prune
            if prune:
                self._next_prune = now + self.refill_seconds
        if prune:
            self._store.prune_tokens(now - self.refill_seconds)
        if not self._store.take_token(key, self.capacity, self.rate, now):
            # the bucket held under one token: one is there again within 1 / rate (unless others take it)
            raise RateLimited(f"too many requests from this {self.what}; slow down", 1.0 / self.rate)


class AddressLimit:
    """The limit of callers that are not members, by client address: this process's bucket, then
    the shared one. ``shared=False`` (``GET /v1/health``) charges this process's bucket only: the
    supervisor and load balancers probe health, and a probe must not write to the database."""

    def __init__(self, per_minute: float, store: TokenStore, clock: Callable[[], float]) -> None:
        self.local = TokenBucket(per_minute, what="client address")
        self.shared = StoreBucket(store, per_minute, clock)

    def take(self, key: str, *, shared: bool = True) -> None:
        self.local.take(key)
        if shared:
            self.shared.take(key)


__all__ = ["AddressLimit", "StoreBucket", "TokenBucket", "TokenStore"]
