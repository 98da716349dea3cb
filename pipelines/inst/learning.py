"""Learning and importing styles into the library: the one code path the CLI, the app and the Modal app share.

``learn_style`` checks everything it can at once (name, image, weights, a remembered failure), then returns a
``LearningRun``: iterate it for ``LearnEvent``s (``loading``, one ``step`` per optimisation step with its loss,
then ``done`` with the library entry, or ``cancelled``); ``cancel()`` stops it at the next step, keeping a
checkpoint that the same name resumes from. The training runs in a worker thread owned by the run, so no front
end manages threads. The InST pipeline comes from the context's pipeline cache: learning a style and applying
it reuse one loaded model.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.core.context import StudioContext, default_context
from pipelines.core.errors import InvalidRequestError
from pipelines.core.images import ImageSource, load_image
from pipelines.inst.library import StyleEntry, StyleLibrary, slugify
from pipelines.inst.presets import DEFAULT_RESOLUTION, PRESETS, config_for

CLIP_MODES = ("paper", "code")


@dataclass(frozen=True)
class LearnEvent:
    """One thing that happened while learning: ``loading`` the models, a ``step`` (with its loss), ``done``
    (with the library ``entry``) or ``cancelled`` (with the step it stopped at)."""

    kind: Literal["loading", "step", "done", "cancelled"]
    step: int = 0
    total: int = 0
    loss: float | None = None
    entry: StyleEntry | None = None
    message: str = ""


class LearningRun:
    """An iterator of ``LearnEvent``s over work done in a worker thread; errors are raised from the iteration."""

    def __init__(self, work: Callable[[Callable[[LearnEvent], None], threading.Event], StyleEntry | None]) -> None:
        self._work = work
        self._cancel = threading.Event()
        self._events: queue.Queue[LearnEvent | BaseException | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.entry: StyleEntry | None = None

    def cancel(self) -> None:
        """Stop at the next step (the run then ends with a ``cancelled`` event)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _run(self) -> None:
        try:
            self._work(self._events.put, self._cancel)
        except BaseException as exc:  # handed to the iterating thread, never swallowed
            self._events.put(exc)
        finally:
            self._events.put(None)

    def __iter__(self) -> Iterator[LearnEvent]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="learn-style", daemon=True)
            self._thread.start()
        while (item := self._events.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            if item.kind == "done":
                self.entry = item.entry
            yield item

    def wait(self) -> StyleEntry | None:
        """Run to the end; the entry, or None when cancelled."""
        for _ in self:
            pass
        return self.entry


def learn_style(
    style: ImageSource,
    name: str,
    *,
    preset: str = "fast",
    steps: int | None = None,
    clip_mode: str = "paper",
    resolution: int = DEFAULT_RESOLUTION,
    overwrite: bool = False,
    gradient_checkpointing: bool = False,
    checkpoint_every: int | None = None,
    context: StudioContext | None = None,
) -> LearningRun:
    """Learn ``style`` into the library as ``name`` (an interrupted run of the same name resumes).

    Everything that needs no model is checked now, so a bad name, file or setting fails at once; the run starts
    when it is first iterated. With the Modal backend the run happens in the deployed app's Volume library.
    """
    context = context or default_context()
    slug = slugify(name)
    if preset not in PRESETS:
        raise InvalidRequestError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}.")
    if clip_mode not in CLIP_MODES:
        raise InvalidRequestError(f"clip_mode must be paper or code; got {clip_mode!r}.")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise InvalidRequestError(
            f"steps must be a whole number of at least 1 (or empty for the preset's); got {steps!r}."
        )
    if not isinstance(resolution, int) or not 32 <= resolution <= 1024:
        raise InvalidRequestError(f"resolution must be from 32 to 1024 pixels; got {resolution!r}.")
    image = load_image(style, role="style")  # a bad file fails before any loading
    options = {
        "preset": preset,
        "steps": steps,
        "clip_mode": clip_mode,
        "resolution": resolution,
        "overwrite": overwrite,
        "gradient_checkpointing": gradient_checkpointing,
        "checkpoint_every": checkpoint_every,
    }
    if context.backend == "modal":
        from pipelines.backends import ModalBackend

        return ModalBackend().learn_style(image, name, options)
    library = StyleLibrary(context.styles_dir)
    if not overwrite and any(entry.slug == slug for entry in library.list()):
        raise InvalidRequestError(f"A style named {slug!r} already exists; choose another name or delete it first.")
    _, weights = _inst_weights(context)
    context.availability.check("inst", weights)

    def work(emit: Callable[[LearnEvent], None], cancel: threading.Event) -> StyleEntry | None:
        emit(LearnEvent("loading", message="Loading Stable Diffusion and CLIP (first use)"))
        entry = _learn(image, name, library, context, options, emit, cancel)
        if entry is not None:
            emit(LearnEvent("done", entry.steps, entry.steps, entry.final_loss, entry))
        return entry

    return LearningRun(work)


def _inst_weights(context: StudioContext) -> tuple[Any, str]:
    from pipelines.core.method import get_method

    method = get_method("inst")
    weights = context.weights_for("inst") or method.default_weights()
    method.check_weights(weights)
    return method, weights


def _learn(
    image: Any,
    name: str,
    library: StyleLibrary,
    context: StudioContext,
    options: dict[str, Any],
    emit: Callable[[LearnEvent], None],
    cancel: threading.Event,
) -> StyleEntry | None:
    from pipelines.core.studio import loaded_model
    from pipelines.inst.method import split_weights
    from pipelines.inst.styles import prepare_style_image, save_style
    from pipelines.inst.training import TrainingCancelled
    from pipelines.inst.training import learn_style as train

    resolution = options["resolution"]
    prepared = prepare_style_image(image, resolution)
    pipe, key = loaded_model("inst", context)
    config = config_for(
        options["preset"],
        options["steps"],
        clip_mode=options["clip_mode"],
        resolution=resolution,
        gradient_checkpointing=options["gradient_checkpointing"],
        **({"checkpoint_every": options["checkpoint_every"]} if options["checkpoint_every"] else {}),
    )
    checkpoint_dir = library.root / ".training" / slugify(name)  # hidden: never listed as an entry
    try:
        result = train(
            pipe,
            prepared,
            config,
            on_step=lambda step, total, loss: emit(LearnEvent("step", step, total, loss)),
            checkpoint_dir=checkpoint_dir,
            cancel=cancel,
        )
    except TrainingCancelled as stopped:
        emit(LearnEvent("cancelled", message=f"{stopped}. Start again with the same name to resume."))
        return None
    base, clip = split_weights(key.weights)
    entry = save_style(
        library,
        name,
        result.conditioning,
        prepared,
        {
            "base_model": base,
            "clip_model": clip,
            "steps": result.steps,
            "final_loss": round(result.final_loss, 6),
            "preset": options["preset"],
            "extra": {"seconds": round(result.seconds, 1), "resolution": resolution},
        },
        overwrite=options["overwrite"],
    )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return entry


def import_style(
    embeddings: str | os.PathLike[str],
    style: ImageSource,
    name: str,
    *,
    resolution: int = DEFAULT_RESOLUTION,
    context: StudioContext | None = None,
) -> StyleEntry:
    """An official InST ``embeddings.pt`` plus the style image it was trained on → a library entry. The file and
    the image are checked before any model is loaded."""
    from pipelines.core.studio import loaded_model
    from pipelines.inst.method import split_weights
    from pipelines.inst.official import load_official_embeddings
    from pipelines.inst.styles import import_official

    context = context or default_context()
    slugify(name)
    official = load_official_embeddings(embeddings)  # a foreign or damaged file fails here, in milliseconds
    image = load_image(style, role="style")
    _inst_weights(context)
    pipe, key = loaded_model("inst", context)
    base, clip = split_weights(key.weights)
    library = StyleLibrary(context.styles_dir)
    return import_official(pipe, library, official, embeddings, image, name, base, clip, resolution)


def style_library(context: StudioContext | None = None) -> StyleLibrary:
    """The context's style library (list, get, rename, delete, thumbnails)."""
    return StyleLibrary((context or default_context()).styles_dir)
