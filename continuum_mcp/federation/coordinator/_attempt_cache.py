"""This process's copy of the running secure-aggregation attempt, caught up from the store's log.

Why a cache and not state: with several coordinator processes on one database, the attempt is its
log in the store (:mod:`._attempt_sql`); a process keeps the replayed ``Attempt`` only so it need
not replay the whole log for every request. At the start of every request it asks the store which
attempt is running and applies the records other processes appended since it last looked. Its
own changes become true only when their transaction commits: :meth:`AttemptCache.writing` drops a
copy that moved on inside a transaction that then failed, so it is rebuilt from the store.

The host (the round engine, or another round purpose) says which attempt is running: a ``key`` of
its own (e.g. (round, attempt)) and, only when the cache must be loaded, its session id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from continuum_mcp.federation.coordinator import _attempt_sql as asql
from continuum_mcp.federation.coordinator._attempt import Attempt


class AttemptCache:
    """One cached attempt (or none) of a host; use it under the host's ``lock``."""

    def __init__(self, transaction: Callable[[], AbstractContextManager[Any]], lock: threading.RLock) -> None:
        self._transaction = transaction
        self.lock = lock
        self._key: Hashable | None = None
        self._attempt: Attempt | None = None
        self._clean: tuple[Attempt | None, int] = (None, -1)  # the copy as of the last commit or catch-up

    @contextmanager
    def writing(self) -> Iterator[Any]:
        """One store write transaction under the lock; a copy it moved on is dropped if it fails."""
        with self.lock:
            try:
                with self._transaction() as conn:
                    yield conn
            except BaseException:
                a = self._attempt
                if a is not None and (a is not self._clean[0] or a.seq != self._clean[1]):
                    self.clear()
                raise
            self._mark_clean()

    def sync(self, conn: Any, key: Hashable | None, session_id: Callable[[], str]) -> Attempt | None:
        """The running attempt ``key`` (None: none runs), caught up with the log: loaded (from
        ``session_id()``'s log) if this process holds another one, else only the new records.
        None also when it has no log (an attempt of an older coordinator) or it is over."""
        if key is None:
            self.clear()
            return None
        a = self._attempt if key == self._key else None
        if a is None:
            records = asql.records_after(conn, session_id(), -1)
            a = Attempt.from_log(records) if records else None
        else:
            a.catch_up(asql.records_after(conn, a.session_id, a.seq))
        self._key, self._attempt = key, a
        self._mark_clean()
        return None if a is None or a.over else a

    def opened(self, key: Hashable, attempt: Attempt) -> None:
        """The host opened ``attempt`` (its opening record written in the current transaction)."""
        self._key, self._attempt = key, attempt

    def ended(self, conn: Any, attempt: Attempt) -> None:
        """The host ended ``attempt`` (released it, or aborted it for the next round) in the
        transaction of ``conn``: its log is deleted in that transaction (:func:`._attempt_sql.prune`)
        and the copy dropped."""
        asql.prune(conn, attempt.session_id)
        self.clear()

    def clear(self) -> None:
        self._key, self._attempt = None, None

    def _mark_clean(self) -> None:
        self._clean = (self._attempt, -1 if self._attempt is None else self._attempt.seq)


__all__ = ["AttemptCache"]
