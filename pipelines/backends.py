"""The Modal backend: requests and style learning run in the app deployed by ``modal deploy modal_app.py``.

``pipelines.run`` and ``pipelines.learn_style`` come here when the context's backend is ``modal``. Progress
streams back live (a generator method and ``.remote_gen``), a cancel closes the stream, and every Modal failure
becomes one message that says what to do, including "use the local engine".
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from pipelines.core.errors import GenerationCancelled, StudioError
from pipelines.core.method import ProgressCallback
from pipelines.core.request import StyleRequest
from pipelines.core.result import ResultMetadata, StyleResult

MODAL_APP_NAME = "style-studio"
MODAL_CLASS_NAME = "Studio"
REMOTE_TIMEOUT_S = 600  # per call; a cold start plus a long InST run fit well inside
POLL_S = 1.0  # how often a remote style-learning run is asked for its progress


class RemoteBackendError(StudioError):
    """The remote backend could not serve this request; the message says why and what to do instead."""


def as_png(source: Any) -> bytes | None:
    """Request images as bytes for the wire (paths are read; PIL images encoded as PNG)."""
    if source is None:
        return None
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        return buffer.getvalue()
    return Path(source).read_bytes()


class ModalBackend:
    """Calls the deployed ``Studio`` class; ``lookup`` returns the class (tests pass a fake)."""

    name = "modal"

    def __init__(self, lookup: Callable[[], Any] | None = None, timeout_s: float = REMOTE_TIMEOUT_S) -> None:
        self._lookup = lookup or self._deployed_class
        self.timeout_s = timeout_s

    @staticmethod
    def _deployed_class() -> Any:
        import modal

        return modal.Cls.from_name(MODAL_APP_NAME, MODAL_CLASS_NAME)

    def _call(self, action: Callable[[Any], Any]) -> Any:
        try:
            return action(self._lookup()())
        except StudioError:
            raise
        except Exception as exc:
            raise RemoteBackendError(modal_failure_message(exc, self.timeout_s)) from None

    def run(
        self,
        request: StyleRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> StyleResult:
        """The request on the remote GPU; its progress events reach ``progress`` as they happen."""
        if progress is not None:
            progress(0, 1, "Waiting for the remote GPU (a cold start can take a minute)")

        def stream(studio: Any) -> tuple[bytes, dict] | None:
            events = studio.stylize_with_progress.remote_gen(
                as_png(request.content), as_png(request.style), request.parameters()
            )
            for event in events:
                if cancel is not None and cancel.is_set():
                    close = getattr(events, "close", None)
                    if close is not None:
                        close()  # closing the stream cancels the remote call
                    raise GenerationCancelled("Cancelled; your previous result and inputs are unchanged.")
                if "progress" in event and progress is not None:
                    progress(*event["progress"])
                if "error" in event:  # a StudioError on the remote side: the user's to fix, passed on as is
                    raise RemoteBackendError(event["error"])
                if "result" in event:
                    return event["result"]
            return None

        outcome = self._call(stream)
        if outcome is None:
            raise RemoteBackendError("The remote GPU ended without a result. Try again, or use the local engine.")
        png, metadata = outcome
        return StyleResult(Image.open(io.BytesIO(png)).convert("RGB"), ResultMetadata.from_dict(metadata))

    def learn_style(self, image: Image.Image, name: str, options: dict[str, Any]) -> Any:
        """A ``LearningRun`` over the remote ``learn_style``: spawned, its progress polled, cancellable."""
        from pipelines.inst.learning import LearnEvent, LearningRun
        from pipelines.inst.library import StyleEntry

        def work(emit: Callable[[LearnEvent], None], cancel: threading.Event) -> StyleEntry | None:
            emit(LearnEvent("loading", message="Starting on the remote GPU (a cold start can take a minute)"))
            studio = self._call(lambda cls: cls)
            call = self._call(lambda _: studio.learn_style.spawn(as_png(image), name, options))
            seen, asked_to_cancel = 0, False
            while True:
                if cancel.is_set() and not asked_to_cancel:
                    self._call(lambda _: studio.cancel_learning.remote(name))
                    asked_to_cancel = True
                state = self._call(lambda _: studio.progress.remote(name)) or {}
                if state.get("step", 0) > seen:
                    seen = state["step"]
                    emit(LearnEvent("step", seen, state["total"], state.get("loss")))
                outcome = self._call(lambda _: _finished(call))
                if outcome is not None:
                    break
                time.sleep(POLL_S)
            if "error" in outcome:
                raise RemoteBackendError(outcome["error"])
            if "cancelled" in outcome:
                emit(LearnEvent("cancelled", message=outcome["cancelled"]))
                return None
            entry = StyleEntry(**outcome["entry"])
            emit(LearnEvent("done", entry.steps, entry.steps, entry.final_loss, entry))
            return entry

        return LearningRun(work)

    def styles(self) -> list[dict[str, Any]]:
        """The learned styles in the remote library (the Volume)."""
        return self._call(lambda studio: studio.styles.remote())

    def stylize_many(
        self, jobs: Iterable[tuple[str, StyleRequest]], cancel: threading.Event | None = None
    ) -> Iterator[tuple[str | None, StyleResult | StudioError]]:
        """Many requests fanned out over the deployed class's containers (``.starmap``), each ``(key, request)``;
        yields ``(key, result or error)`` as each finishes, in whatever order. ``jobs`` is read lazily, as Modal
        sends the inputs. ``key`` is None for a failure Modal could not tie to its input (a container died).
        Setting ``cancel`` stops at the next result (the calls not yet finished are dropped)."""
        studio = self._call(lambda studio: studio)
        payloads = ((key, as_png(r.content), as_png(r.style), r.parameters()) for key, r in jobs)
        results: Iterator[Any] | None = None
        try:
            results = iter(studio.stylize_batch_item.starmap(payloads, order_outputs=False, return_exceptions=True))
            for output in results:
                if isinstance(output, BaseException):
                    yield None, RemoteBackendError(modal_failure_message(output, self.timeout_s))
                elif "error" in output:  # a problem with that picture, in the remote's own words
                    yield output["key"], RemoteBackendError(output["error"])
                else:
                    image = Image.open(io.BytesIO(output["png"])).convert("RGB")
                    yield output["key"], StyleResult(image, ResultMetadata.from_dict(output["metadata"]))
                if cancel is not None and cancel.is_set():
                    return
        except StudioError:
            raise
        except Exception as exc:  # the whole map failed (not deployed, no credentials, network)
            raise RemoteBackendError(modal_failure_message(exc, self.timeout_s)) from None
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stops the map: inputs not yet finished are cancelled


def _finished(call: Any) -> dict[str, Any] | None:
    """The spawned call's outcome, or None while it runs (``FunctionCall.get(timeout=0)`` raises the builtin
    TimeoutError until then)."""
    try:
        return call.get(timeout=0)
    except TimeoutError:
        return None


def modal_failure_message(exc: BaseException, timeout_s: float) -> str:
    """One sentence per Modal failure, each ending with what to do."""
    kind = type(exc).__name__
    local = "Or run on this machine instead (--backend local, or Advanced → Run on → This machine)."
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
