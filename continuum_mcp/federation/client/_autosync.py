"""Auto-sync: the persisted setting (in membership.json) and the thread that acts on it.

Why a thread of its own: the MCP server must stay responsive; a pass contributes new patterns and
takes part in the round. The thread survives any failure of a pass and tries again next interval;
it ends when the setting is turned off or the membership is gone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from continuum_mcp.errors import ContinuumError, InvalidInput
from continuum_mcp.federation.client._membership import MembershipFile
from continuum_mcp.federation.client._models import AutoSyncSettings

logger = logging.getLogger(__name__)


class AutoSync:
    """Runs ``once()`` every interval of the persisted setting while it is enabled."""

    def __init__(self, membership: MembershipFile, once: Callable[[], object]) -> None:
        self._membership = membership
        self._once = once
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
            try:
                self._once()
            except ContinuumError as exc:
                logger.info("auto-sync pass failed (%s); retrying at the next interval", exc.code)
            except Exception:  # the thread must survive anything; report and continue
                logger.exception("auto-sync pass failed")
            m = self._membership.load()
            if m is None or not m.auto_sync.enabled:
                return
            stop.wait(m.auto_sync.interval_minutes * 60)
