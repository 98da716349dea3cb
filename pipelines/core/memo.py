"""A small thread-safe LRU for the results of deterministic per-picture work (style vectors, content latents).

Used where users repeat themselves: another strength or seed on the same pair, another photo in the same style.
Keys are pixel digests, so a re-opened file with the same pixels hits too.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Value = TypeVar("Value")


class Memo(Generic[Value]):
    """Remembers up to ``size`` values by key, dropping the least recently used; counts hits and misses."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._values: OrderedDict[str, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, compute: Callable[[], Value]) -> Value:
        """The value remembered under ``key``, or ``compute()`` remembered now. ``compute`` runs outside the lock
        (two threads may both compute a new key; the work is deterministic, so either answer is the answer)."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                self.hits += 1
                return self._values[key]
            self.misses += 1
        value = compute()
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


def array_digest(array: Any, *salt: object) -> str:
    """A key for an array or tensor's exact contents (and shape and dtype), plus anything else that matters."""
    if hasattr(array, "detach"):  # a torch tensor: hash its bytes on the CPU
        array = array.detach().cpu().contiguous()
        array = (array.float() if str(array.dtype) == "torch.bfloat16" else array).numpy()  # numpy has no bf16
    digest = hashlib.sha256(array.tobytes())
    digest.update(repr((array.shape, str(array.dtype), salt)).encode())
    return digest.hexdigest()
