"""Is the Hugging Face Hub reachable? Answered at once, so that an offline machine never waits for retries.

Without a network, huggingface_hub retries each request for about twenty seconds before it gives up, and
prints a warning per retry. The studio asks once (``HF_HUB_OFFLINE``, else one TCP connection with a short
timeout, remembered for a minute) and, when the Hub cannot be reached, loads from the local cache only
(``local_files_only=True``): a cached model still works, a missing one fails in milliseconds with a message
that says why.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 1.5
REMEMBER_S = 60.0

_lock = threading.Lock()
_last: tuple[float, bool] | None = None


def hub_reachable(*, now: float | None = None) -> bool:
    """False when offline mode is set or no connection to the Hub's host opens within ``PROBE_TIMEOUT_S``."""
    global _last
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    now = time.monotonic() if now is None else now
    with _lock:
        if _last is not None and now - _last[0] < REMEMBER_S:
            return _last[1]
    reachable = _can_connect(constants.ENDPOINT)
    with _lock:
        _last = (now, reachable)
    return reachable


def _can_connect(endpoint: str) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def forget_reachability() -> None:
    """Probe again on the next question (e.g. when the person asks to retry)."""
    global _last
    with _lock:
        _last = None


def offline_reason() -> str:
    """Why the Hub is not used, in words for the person."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "offline mode is on (HF_HUB_OFFLINE=1) and the files are not in the local Hugging Face cache"
    host = urlparse(constants.ENDPOINT).hostname
    return f"{host} cannot be reached from this machine (no network?) and the files are not in the local cache"


def hub_file_available(repo_id: str, filename: str) -> bool:
    """Whether ``filename`` of ``repo_id`` is in the local Hugging Face cache, or on the Hub for this machine's
    token (a metadata request, no download). False when offline and not cached, or on any error."""
    from huggingface_hub import file_exists, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(repo_id, filename), str):
            return True
        return hub_reachable() and file_exists(repo_id, filename)
    except Exception:  # a malformed id, a gated repo without a token, a network hiccup: not available
        return False


def prefetch_snapshot(name: str, allow_patterns: list[str] | None = None) -> str:
    """A local folder for ``name`` (a folder as is, or a Hub repo downloaded into the Hugging Face cache once)."""
    from pathlib import Path

    from huggingface_hub import snapshot_download

    from pipelines.core.errors import MethodUnavailableError

    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    online = hub_reachable()
    try:
        return snapshot_download(name, allow_patterns=allow_patterns, local_files_only=not online)
    except Exception as exc:
        reason = offline_reason() if not online else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        raise MethodUnavailableError(f"Could not download {name}: {reason}.") from None
