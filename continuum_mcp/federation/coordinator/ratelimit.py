"""Token buckets: how often one key (a member identity, or a client address) may call.

Why two keys: a member is throttled by its pinned identity; everyone else (unsigned requests,
joins, signed requests from identities that are not members) by client address as well, because
key pairs cost nothing to make and would otherwise reset the limit.
"""

from __future__ import annotations

import threading
import time

from continuum_mcp.errors import RateLimited


class TokenBucket:
    """Per-key token buckets (capacity = rate per minute, refilled continuously)."""

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


__all__ = ["TokenBucket"]
