"""One instance's turns in learning sessions: one at a time per session, resumable.

Kept apart from :mod:`._governance` (which takes part through it) because it is about this
machine's processes, not about what the federation decided.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from continuum_mcp.secagg import SecAggClient

#: the session turn locks, in the federation directory
TURNS_DIR = "session_turns"


class SessionSeats:
    """One instance's turns in sessions, shared by its :class:`Governance` objects.

    Why: auto-sync and a ``take_part`` call of the same instance must not take part in one session
    at once (two secure-aggregation states under one identity: the second's keys and shares do not
    match what the coordinator took, and the round may abort for everyone), so a session has one
    turn at a time: in this process (a lock) and, with ``directory``, across the instance's
    processes (the CLI's ``take-part`` beside the server's auto-sync: an advisory file lock, where
    the platform has ``fcntl``). And a turn that ends at its time bound mid-round leaves its
    secure-aggregation state here, so the next turn resumes the round instead of being dropped."""

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = None if directory is None else Path(directory) / TURNS_DIR
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._secagg: dict[str, dict[str, SecAggClient]] = {}

    @contextmanager
    def seat(self, proposal_id: str) -> Iterator[dict[str, SecAggClient] | None]:
        """The session's secure-aggregation state for this turn, or None while another turn holds it."""
        with self._lock:
            free = proposal_id not in self._busy
            self._busy.add(proposal_id)
            state = self._secagg.setdefault(proposal_id, {})
        if not free:
            yield None
            return
        try:
            with self._file_lock(proposal_id) as held:
                yield state if held else None
        finally:
            with self._lock:
                self._busy.discard(proposal_id)

    @contextmanager
    def _file_lock(self, proposal_id: str) -> Iterator[bool]:
        """Whether this process holds the session's file lock (True without a directory or ``fcntl``)."""
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: the process lock only
            fcntl = None  # type: ignore[assignment]
        if self._dir is None or fcntl is None:
            yield True
            return
        self._dir.mkdir(mode=0o700, exist_ok=True)
        name = hashlib.sha256(proposal_id.encode("utf-8")).hexdigest()[:32]  # any id, never a path
        fd = os.open(self._dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock


__all__ = ["TURNS_DIR", "SessionSeats"]
