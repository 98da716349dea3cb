"""What the studio remembers about methods whose weights could not be reached.

A method whose weights fail to load (offline, missing file, no token) fails the same way on the next click, so
the studio remembers the failure for ``retry_after_s`` (five minutes) and answers at once with the same message,
instead of retrying the Hub every time. ``forget`` (the app's *Retry* button, a new process) clears it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.core.errors import MethodUnavailableError

RETRY_AFTER_S = 300.0


@dataclass(frozen=True)
class Unavailable:
    method: str
    weights: str
    error: MethodUnavailableError
    since: float  # time.time() of the failure


class Availability:
    """Thread-safe memory of load failures, keyed by (method, weights)."""

    def __init__(self, retry_after_s: float = RETRY_AFTER_S) -> None:
        self.retry_after_s = retry_after_s
        self._failures: dict[tuple[str, str], Unavailable] = {}
        self._reachable: dict[tuple[str, str], tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def reachable(self, method: str, weights: str, probe: Callable[[], bool], now: float | None = None) -> bool:
        """Whether a method's weights can be had (``probe()``), asked at most once per ``retry_after_s``; a
        remembered load failure answers no at once."""
        now = time.time() if now is None else now
        with self._lock:
            failure = self._failures.get((method, weights))
            if failure is not None and now - failure.since < self.retry_after_s:
                return False
            known = self._reachable.get((method, weights))
            if known is not None and now - known[0] < self.retry_after_s:
                return known[1]
        answer = bool(probe())
        with self._lock:
            self._reachable[(method, weights)] = (now, answer)
        return answer

    def record(self, method: str, weights: str, error: MethodUnavailableError, now: float | None = None) -> None:
        with self._lock:
            self._failures[(method, weights)] = Unavailable(method, weights, error, time.time() if now is None else now)

    def check(self, method: str, weights: str, now: float | None = None) -> None:
        """Raise the remembered error while it is fresh; forget it once ``retry_after_s`` has passed."""
        now = time.time() if now is None else now
        with self._lock:
            failure = self._failures.get((method, weights))
            if failure is None:
                return
            if now - failure.since >= self.retry_after_s:
                del self._failures[(method, weights)]
                return
        raise failure.error

    def unavailable(self, now: float | None = None) -> dict[str, Unavailable]:
        """Method name → its fresh failure (for front ends that mark methods as unavailable)."""
        now = time.time() if now is None else now
        with self._lock:
            fresh = [f for f in self._failures.values() if now - f.since < self.retry_after_s]
        return {failure.method: failure for failure in fresh}

    def forget(self, method: str | None = None) -> None:
        """Try ``method`` (or every method) again on its next use."""
        with self._lock:
            for memory in (self._failures, self._reachable):
                for key in [k for k in memory if method is None or k[0] == method]:
                    del memory[key]
