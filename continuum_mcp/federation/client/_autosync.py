"""Auto-sync: the persisted setting (in membership.json) and the thread that acts on it.

Why a thread of its own: the MCP server must stay responsive; a pass contributes new patterns,
takes part in the release round and in the learning sessions the member opted in to. The thread
survives any failure of a pass and tries again next interval; it ends when the setting is turned
off or the membership is gone. A pass's sessions may ask for the next pass sooner than the interval
(``SessionSync.next_check_seconds``): at once while a session it took part in still runs, at the
end of a discussion, so that an opted-in member is in every round, from the first. And a pass
starts early when what ``watch()`` returns changes (the standing opt-ins, which the CLI of the
same instance may change while the server's thread sleeps through a long interval).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from continuum_mcp.errors import ContinuumError, InvalidInput
from continuum_mcp.federation.client._membership import MembershipFile
from continuum_mcp.federation.client._models import AutoSyncSettings, SyncResult

logger = logging.getLogger(__name__)

#: the shortest pause a pass may ask for (one asking for the next pass at once still pauses)
MIN_PAUSE_SECONDS = 1.0
#: how often a pause looks at ``watch()`` (a local file read)
WATCH_SECONDS = 5.0


def next_pass_seconds(result: object, interval_seconds: float) -> float:
    """The interval, or sooner (but not under :data:`MIN_PAUSE_SECONDS`) when one of the pass's
    sessions asks for it."""
    asked = [s.next_check_seconds for s in result.sessions if s.next_check_seconds is not None] \
        if isinstance(result, SyncResult) else []
    return min([interval_seconds, *(max(MIN_PAUSE_SECONDS, a) for a in asked)])


class AutoSync:
    """Runs ``once(stop)`` every interval of the persisted setting while it is enabled (sooner
    when the pass asks, :func:`next_pass_seconds`, or ``watch()`` changes); ``stop`` is set when it
    is turned off."""

    def __init__(self, membership: MembershipFile, once: Callable[[threading.Event], object],
                 watch: Callable[[], object] = lambda: None) -> None:
        self._membership = membership
        self._once, self._watch = once, watch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def enable(self, interval_minutes: float, contribute_on_sync: bool, query_on_sync: bool) -> AutoSyncSettings:
        """Persist the setting and start the thread (restarted by :meth:`start` when the server starts)."""
        if not (isinstance(interval_minutes, (int, float)) and 0 < interval_minutes <= 24 * 60):
            raise InvalidInput("interval_minutes must be in (0, 1440]")
        s = AutoSyncSettings(enabled=True, interval_minutes=float(interval_minutes),
                             contribute_on_sync=contribute_on_sync, query_on_sync=query_on_sync)
        self._membership.update(auto_sync=s)
        self.start()
        return s

    def disable(self, persist: bool = True) -> AutoSyncSettings:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30)
        self._thread = None
        if persist and self._membership.load() is not None:
            return self._membership.update(auto_sync=AutoSyncSettings(enabled=False)).auto_sync
        return AutoSyncSettings(enabled=False)

    def start(self) -> bool:
        """Start the thread if the persisted setting says so; True if running."""
        m = self._membership.load()
        if m is None or not m.auto_sync.enabled:
            return False
        if not self.running:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, args=(self._stop,), name="federation-auto-sync",
                                            daemon=True)
            self._thread.start()
        return True

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            result: object = None
            seen = self._watch()
            try:
                result = self._once(stop)
            except ContinuumError as exc:
                logger.info("auto-sync pass failed (%s); retrying at the next interval", exc.code)
            except Exception:  # the thread must survive anything; report and continue
                logger.exception("auto-sync pass failed")
            m = self._membership.load()
            if m is None or not m.auto_sync.enabled:
                return
            self._pause(stop, next_pass_seconds(result, m.auto_sync.interval_minutes * 60), seen)

    def _pause(self, stop: threading.Event, seconds: float, seen: object) -> None:
        """Until ``seconds`` pass, ``stop`` is set or ``watch()`` is no longer ``seen``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if stop.wait(min(left, WATCH_SECONDS)) or self._watch() != seen:
                return
