"""The pipeline cache: each heavy model is loaded once per process and reused by every request.

Keyed by (method, weights location, device, dtype, compile setting). Thread-safe: when two first requests for
the same key arrive together, one loads and the other waits for it. A load that fails is not cached, so the next request
tries again (after the user fixed the weights, say). ``stats()`` makes all of this observable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)


class PipelineKey(NamedTuple):
    method: str
    weights: str
    device: str
    dtype: str
    compile: str = "off"  # a compiled denoiser is another pipeline


@dataclass
class CacheStats:
    loads: int  # loader calls that succeeded
    failed_loads: int
    hits: int  # requests served by an already-loaded pipeline
    load_seconds: float
    keys: list[PipelineKey]


class PipelineCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the dicts below, never held while loading
        self._pipelines: dict[PipelineKey, Any] = {}
        self._key_locks: dict[PipelineKey, threading.Lock] = {}
        self._loads = self._failed = self._hits = 0
        self._load_seconds = 0.0

    def get(self, key: PipelineKey, loader: Callable[[], Any]) -> tuple[Any, float]:
        """The pipeline for ``key``, loading it with ``loader()`` if needed.

        Returns ``(pipeline, seconds spent loading in this call)``; 0.0 means it was already loaded.
        """
        with self._lock:
            if key in self._pipelines:
                self._hits += 1
                return self._pipelines[key], 0.0
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one loader per key; others wait here, then find it loaded
            with self._lock:
                if key in self._pipelines:
                    self._hits += 1
                    return self._pipelines[key], 0.0
            started = time.perf_counter()
            logger.info("loading %s", key)
            try:
                pipeline = loader()
            except BaseException:
                with self._lock:
                    self._failed += 1
                raise
            seconds = time.perf_counter() - started
            with self._lock:
                self._pipelines[key] = pipeline
                self._loads += 1
                self._load_seconds += seconds
            logger.info("loaded %s in %.2f s", key, seconds)
            return pipeline, seconds

    def is_loaded(self, key: PipelineKey) -> bool:
        with self._lock:
            return key in self._pipelines

    def evict(self, key: PipelineKey) -> bool:
        """Forget one pipeline (e.g. to free GPU memory); True if it was loaded."""
        with self._lock:
            return self._pipelines.pop(key, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._pipelines.clear()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._loads, self._failed, self._hits, self._load_seconds, list(self._pipelines))
