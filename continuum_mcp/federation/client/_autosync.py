"""The auto-sync thread: one pass every interval while the persisted setting says so.

Why a thread of its own: the MCP server must stay responsive; a pass contributes new patterns and
takes part in the round. The thread survives any failure of a pass and tries again next interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from continuum_mcp.errors import ContinuumError

logger = logging.getLogger(__name__)


class AutoSync:
    """Runs ``once()`` every ``interval()`` seconds until stopped or ``interval()`` is None
    (auto-sync disabled, or membership gone)."""

    def __init__(self, once: Callable[[], object], interval: Callable[[], float | None]) -> None:
        self._once = once
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(self._stop,), name="federation-auto-sync",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=timeout)
        self._thread = None

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._once()
            except ContinuumError as exc:
                logger.info("auto-sync pass failed (%s); retrying at the next interval", exc.code)
            except Exception:  # the thread must survive anything; report and continue
                logger.exception("auto-sync pass failed")
            seconds = self._interval()
            if seconds is None:
                return
            stop.wait(seconds)
