"""Where a request runs: in this process (``local``) or on a Modal GPU (``modal``).

``auto`` picks local CUDA when this machine has it, else Modal when credentials are configured
(``MODAL_TOKEN_ID``/``MODAL_TOKEN_SECRET`` or the Modal config file), else the local CPU. The Modal backend
calls the class deployed by ``modal deploy modal_app.py`` by name and maps every Modal failure to a message
that says what to do, including "use the local engine".
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pipelines.core.errors import StudioError
from pipelines.core.method import ProgressCallback
from pipelines.core.request import StyleRequest
from pipelines.core.result import StyleResult
from pipelines.core.studio import run

MODAL_APP_NAME = "style-studio"
MODAL_CLASS_NAME = "Studio"
REMOTE_TIMEOUT_S = 600  # per call; a cold start plus a long InST run fit well inside
BACKENDS = ("auto", "local", "modal")


class RemoteBackendError(StudioError):
    """The remote backend could not serve this request; the message says why and what to do instead."""


def modal_configured(environ: dict[str, str] | None = None, home: Path | None = None) -> bool:
    """Whether Modal credentials exist: both token variables, or a Modal config file."""
    environ = os.environ if environ is None else environ
    if environ.get("MODAL_TOKEN_ID") and environ.get("MODAL_TOKEN_SECRET"):
        return True
    config = Path(environ.get("MODAL_CONFIG_PATH") or (home or Path.home()) / ".modal.toml")
    return config.is_file()


def choose_backend(requested: str, cuda: bool, modal_ready: bool) -> str:
    """``local`` or ``modal`` for ``requested`` in ``BACKENDS``, given what this machine has."""
    if requested not in BACKENDS:
        raise StudioError(f"Unknown backend {requested!r}: use auto, local or modal.")
    if requested != "auto":
        return requested
    if cuda:
        return "local"
    return "modal" if modal_ready else "local"


@dataclass
class LocalBackend:
    name: str = "local"

    def run(self, request: StyleRequest, progress: ProgressCallback | None = None) -> StyleResult:
        return run(request, progress=progress)


def _as_png(source: Any) -> bytes | None:
    """Request images as PNG bytes for the wire (paths are read; PIL images encoded)."""
    if source is None:
        return None
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        return buffer.getvalue()
    return Path(source).read_bytes()


def request_parameters(request: StyleRequest) -> dict[str, Any]:
    """The request without its images and device (the remote machine picks its own device)."""
    parameters = request.parameters()
    parameters.pop("device")
    return parameters


class ModalBackend:
    """Calls ``Studio.stylize_with_progress`` of the deployed Modal app and relays its progress."""

    name = "modal"

    def __init__(self, lookup: Callable[[], Any] | None = None, timeout_s: float = REMOTE_TIMEOUT_S) -> None:
        self._lookup = lookup or self._deployed_class
        self.timeout_s = timeout_s

    @staticmethod
    def _deployed_class() -> Any:
        import modal

        return modal.Cls.from_name(MODAL_APP_NAME, MODAL_CLASS_NAME)

    def run(self, request: StyleRequest, progress: ProgressCallback | None = None) -> StyleResult:
        if progress is not None:
            progress(0, 1, "Waiting for the remote GPU (a cold start can take a minute)")
        try:
            studio = self._lookup()()
            stream = studio.stylize_with_progress.remote_gen(
                _as_png(request.content), _as_png(request.style), request_parameters(request)
            )
            png, metadata = None, None
            for event in stream:
                if "progress" in event and progress is not None:
                    progress(*event["progress"])
                if "error" in event:  # a StudioError on the remote side: the user's to fix, passed on as is
                    raise RemoteBackendError(event["error"])
                if "result" in event:
                    png, metadata = event["result"]
        except RemoteBackendError:
            raise
        except Exception as exc:
            raise RemoteBackendError(modal_failure_message(exc, self.timeout_s)) from None
        if png is None:
            raise RemoteBackendError("The remote GPU ended without a result. Try again, or use the local engine.")
        return StyleResult(Image.open(io.BytesIO(png)).convert("RGB"), metadata)


def modal_failure_message(exc: BaseException, timeout_s: float) -> str:
    """One sentence per Modal failure, each ending with what to do."""
    kind = type(exc).__name__
    local = "Or switch to the local engine (--backend local, or the fast method)."
    if kind == "AuthError":
        return "Modal is not configured: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (or run `modal token set`). " + local
    if kind == "NotFoundError":
        return f"The Modal app {MODAL_APP_NAME!r} is not deployed: run `modal deploy modal_app.py` first. " + local
    if kind in ("FunctionTimeoutError", "TimeoutError", "OutputExpiredError"):
        return (
            f"The remote GPU did not finish within {timeout_s:.0f} s (a cold start can take a minute or two). "
            "Try again with fewer steps or a smaller max side. " + local
        )
    if kind in ("ConnectionError", "ClientClosed", "ConnectionRefusedError") or "connect" in str(exc).lower():
        return "Modal could not be reached (network or service problem). Try again shortly. " + local
    if kind == "RemoteError":
        return f"The remote run failed: {str(exc).splitlines()[0][:200]}. " + local
    return f"The Modal backend failed ({kind}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). " + local


def make_backend(name: str) -> LocalBackend | ModalBackend:
    return ModalBackend() if name == "modal" else LocalBackend()
