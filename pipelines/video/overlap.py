"""Decoding and encoding in background threads, overlapped with stylizing.

PyAV releases the GIL while FFmpeg decodes, scales, encodes and muxes, so the next frame can be decoded and the
last one encoded while the style network (which releases it too) paints the current one; on a small CPU this
fills the gaps the Python parts of each frame leave.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from pipelines.video.writing import VideoWriter

Item = TypeVar("Item")
_END = object()
_POLL_S = 0.1  # how often a blocked thread looks whether it was told to stop


def prefetched(items: Iterator[Item], depth: int = 4) -> Iterator[Item]:
    """``items``, produced ahead by a background thread (at most ``depth`` waiting). Errors arrive in order;
    closing this generator early stops the thread and closes ``items`` there."""
    waiting: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(waiting, item, stop):
                    return
            _put(waiting, _END, stop)
        except BaseException as exc:  # handed to the consumer, who raises it where it reads
            _put(waiting, _Failure(exc), stop)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="video-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = waiting.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


class BackgroundWriter:
    """A ``VideoWriter`` fed through a queue and run by a background thread. An encoding error is raised by the
    next ``write`` or by ``close``."""

    def __init__(self, writer: VideoWriter, depth: int = 4) -> None:
        self.writer = writer
        self._waiting: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="video-encode", daemon=True)
        self._thread.start()

    def write(self, rgb: np.ndarray, seconds: float | None = None) -> None:
        self._raise_error()
        if not _put(self._waiting, (rgb, seconds), self._stop):
            self._raise_error()

    def close(self) -> Path:
        """Wait for the frames queued, then finish the file (see ``VideoWriter.close``)."""
        _put(self._waiting, _END, self._stop)
        self._thread.join()
        self._raise_error()
        return self.writer.close()

    def discard(self) -> None:
        self._stop.set()
        self._thread.join()
        self.writer.discard()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._waiting.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            try:
                self.writer.write(*item)  # type: ignore[misc]
            except BaseException as exc:
                self._error = exc
                self._stop.set()
                return

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _put(waiting: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Queue ``item`` unless told to stop first; whether it was queued."""
    while not stop.is_set():
        try:
            waiting.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False
