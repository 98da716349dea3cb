"""The request path every front end uses: validate → clean images → cached pipeline → method → result.

``run`` owns the envelope every method shares (strength 0, the low-strength cross-fade, seeds, progress,
cancellation, out-of-memory advice, remembered load failures); a method only makes its picture.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from pipelines.core.cache import PipelineKey
from pipelines.core.context import StudioContext, default_context
from pipelines.core.device import describe_device, resolve_device
from pipelines.core.errors import GenerationCancelled, InvalidRequestError, MethodUnavailableError, OutOfMemoryError
from pipelines.core.images import ImageSource, fade_in_style, image_digest, load_image, preserve_content_color
from pipelines.core.method import MethodInputs, ProgressCallback, StyleMethod, default_method_name, get_method
from pipelines.core.request import MAX_SEED, StyleRequest, check_int
from pipelines.core.result import ResultMetadata, StyleResult, Timings

logger = logging.getLogger(__name__)


def _no_progress(done: int, total: int, description: str) -> None:
    pass


def run(
    request: StyleRequest,
    *,
    context: StudioContext | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> StyleResult:
    """Run one request where the context says (this process, or the deployed Modal app) and return the picture
    with its metadata. ``progress(done, total, text)`` is called as work advances; setting ``cancel`` stops a
    generation at its next step (``GenerationCancelled``)."""
    context = context or default_context()
    if context.backend == "modal":
        from pipelines.backends import ModalBackend

        return ModalBackend().run(request, progress=progress, cancel=cancel)
    return run_here(request, context=context, progress=progress, cancel=cancel)


def run_here(
    request: StyleRequest,
    *,
    context: StudioContext | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> StyleResult:
    """``run`` in this process, whatever the context's backend (what the Modal container itself calls)."""
    context = context or default_context()
    report = progress or _no_progress
    started = time.perf_counter()

    # 1. Resolve the method, its device and parameters (cheap checks before any decoding or loading).
    method = resolve_method(request.method, context)
    run_device = method.run_device(context.device)
    steps = _resolve_steps(method, request.steps)
    options = method.check_options(request.options)
    method.check_ready(options, context)
    key = pipeline_key(method, context, run_device)
    context.availability.check(key.method, key.weights)
    seed = None
    if method.uses_seed:
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)

    # 2. Image hygiene: upright RGB at working size, or a clear error.
    report(0, 1, "Reading images")
    content = load_image(request.content, role="content", max_side=request.max_side)
    style = None
    if method.uses_style_image:
        if request.style is None:
            raise InvalidRequestError(f"The {method.name} method needs a style image.")
        style = load_image(request.style, role="style", max_side=request.max_side)
    content_digest = image_digest(content)
    style_digest = image_digest(style) if style is not None else None
    prepared = time.perf_counter()

    inputs = MethodInputs(
        content,
        style,
        request.strength,
        steps,
        seed if seed is not None else 0,
        run_device,
        key.dtype,
        options,
        progress=report,
        cancel=cancel,
        content_digest=content_digest,
        style_digest=style_digest,
    )
    # 3. The envelope: strength 0 is the content itself (nothing to load); otherwise the model, once per process.
    load_seconds = 0.0
    ran = time.perf_counter()
    if request.strength == 0.0:
        image = content.copy()
    else:
        model, load_seconds = _load(method, key, context, report)
        ran = time.perf_counter()
        image = _generate(method, model, inputs, context)
        if image.size != content.size:
            image = image.resize(content.size, Image.Resampling.LANCZOS)
        image = fade_in_style(content, image, request.strength, method.fade_in_below)
    report(1, 1, "Done")
    if request.preserve_color:
        image = preserve_content_color(image, content)
    finished = time.perf_counter()

    metadata = ResultMetadata(
        parameters={**request.parameters(), "method": method.name, "steps": steps, "seed": seed, "options": options},
        derived=inputs.derived,
        weights=key.weights,
        device=describe_device(run_device),
        dtype=key.dtype,
        backend="local",
        content_digest=content_digest,
        style_digest=style_digest,
        size=image.size,
        timings=Timings(
            prepare_s=round(prepared - started, 4),
            load_s=round(load_seconds, 4),
            run_s=round(finished - ran, 4),
            total_s=round(finished - started, 4),
        ),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    logger.info("%s in %.2f s (load %.2f s)", metadata.summary(), finished - started, load_seconds)
    return StyleResult(image.convert("RGB"), metadata, content)


def _load(method: StyleMethod, key: PipelineKey, context: StudioContext, report: ProgressCallback) -> tuple[Any, float]:
    """The method's model from the context's cache; a load that fails for want of weights is remembered."""
    if not context.pipelines.is_loaded(key):
        report(0, 1, f"Loading {method.label} (first use)")
    try:
        return context.pipelines.get(key, lambda: method.load(key.weights, key.device, key.dtype, context))
    except MethodUnavailableError as exc:
        context.availability.record(key.method, key.weights, exc)
        raise


def _generate(method: StyleMethod, model: Any, inputs: MethodInputs, context: StudioContext) -> Image.Image:
    """The method's picture; out of memory becomes advice (with the memory given back), a cancel an error."""
    if inputs.cancelled:
        raise GenerationCancelled("Cancelled before it started; nothing was changed.")
    try:
        image = method.generate(model, inputs, context).convert("RGB")
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_accelerator_memory()
        content = inputs.content
        raise OutOfMemoryError(
            f"The {inputs.device} ran out of memory for the {method.name} method at {content.width}×{content.height}. "
            f"{method.memory_advice(inputs)}; the studio is ready again."
        ) from None
    if inputs.cancelled:
        raise GenerationCancelled("Cancelled; your previous result and inputs are unchanged.")
    return image


def resolve_method(name: str | None, context: StudioContext) -> StyleMethod:
    """The named method, or the default one for where the context runs: on this machine the most capable method
    whose weights can be had (checked once per few minutes), on Modal the most capable one (its Volume decides)."""
    if name:
        return get_method(name)
    if context.backend == "modal":
        return get_method(default_method_name("cuda"))
    device = resolve_device(context.device)

    def usable(method: StyleMethod) -> bool:
        weights = context.weights_for(method.name) or method.default_weights()
        return context.availability.reachable(method.name, weights, lambda: method.weights_reachable(weights))

    return get_method(default_method_name(device, usable))


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS out-of-memory, whatever class the backend raises it as."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_accelerator_memory() -> None:
    """Drop what the failed request still holds and hand cached GPU blocks back to the driver."""
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if hasattr(torch, "mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def pipeline_key(method: StyleMethod, context: StudioContext, device: str) -> PipelineKey:
    """The cache key of ``method`` in ``context``; weights that cannot exist (a missing local path) fail here."""
    weights = context.weights_for(method.name) or method.default_weights()
    method.check_weights(weights)
    return PipelineKey(method.name, weights, device, method.dtype_for(device, context.precision), context.compile)


def preload(method: str | None = None, *, context: StudioContext | None = None) -> PipelineKey:
    """Load a method's model into the context's cache now (e.g. in the background at app start), so that the
    first request does not pay for it. Returns the cache key; raises the same errors a request would."""
    context = context or default_context()
    chosen = resolve_method(method, context)
    key = pipeline_key(chosen, context, chosen.run_device(context.device))
    context.availability.check(key.method, key.weights)
    _load(chosen, key, context, _no_progress)
    return key


def prefetch(method: str, *, context: StudioContext | None = None) -> str:
    """Download a method's weights into the caches without loading them; returns the weights it fetched."""
    context = context or default_context()
    chosen = get_method(method)
    weights = context.weights_for(chosen.name) or chosen.default_weights()
    chosen.check_weights(weights)
    chosen.prefetch(weights, context)
    return weights


def loaded_model(method: str, context: StudioContext) -> tuple[Any, PipelineKey]:
    """A method's loaded model from the context's cache (loading it once), for work other than stylizing
    (e.g. learning a style)."""
    chosen = get_method(method)
    key = pipeline_key(chosen, context, chosen.run_device(context.device))
    context.availability.check(key.method, key.weights)
    model, _ = _load(chosen, key, context, _no_progress)
    return model, key


def retry_method(name: str | None = None, *, context: StudioContext | None = None) -> None:
    """Forget remembered load failures of ``name`` (or every method) and whether the Hub was reachable, so the
    next use tries again (the app's *Retry* button)."""
    from pipelines.core.hub import forget_reachability

    (context or default_context()).availability.forget(name)
    forget_reachability()


def _resolve_steps(method: StyleMethod, steps: int | None) -> int | None:
    if method.steps is None:
        return None  # the method has no steps: a value sent anyway is ignored, and recorded as null
    if steps is None:
        return method.steps.default
    try:
        return check_int("steps", steps, method.steps.minimum, method.steps.maximum)
    except InvalidRequestError:
        raise InvalidRequestError(
            f"steps for {method.name} must be from {method.steps.minimum} to {method.steps.maximum}; got {steps}."
        ) from None


def stylize(
    content: ImageSource,
    style: ImageSource | None,
    method: str | None = None,
    strength: float = 0.7,
    steps: int | None = None,
    seed: int | None = None,
    *,
    context: StudioContext | None = None,
    device: str | None = None,
    weights: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    **parameters: Any,
) -> StyleResult:
    """Stylize ``content`` in the style of ``style`` in one call.

    >>> from pipelines import stylize
    >>> result = stylize("photo.jpg", "painting.jpg", method="fast", strength=0.7, seed=0)
    >>> result.save("out.png")          # the PNG keeps every parameter
    >>> result.metadata.summary()

    ``content``/``style``: paths, bytes, PIL images or arrays. Other request parameters (``max_side``,
    ``preserve_color``, ``options``) by keyword; see ``StyleRequest``. ``device`` and ``weights`` (for the named
    method) override the context's for this call.
    """
    request = StyleRequest(
        content=content, style=style, method=method, strength=strength, steps=steps, seed=seed, **parameters
    )
    context = context or default_context()
    if device is not None or weights is not None:
        named = resolve_method(method, context).name
        context = context.with_overrides(device=device, weights={named: weights} if weights else None)
    return run(request, context=context, progress=progress, cancel=cancel)


def request_from_metadata(metadata: Mapping[str, Any], content: ImageSource, style: ImageSource) -> StyleRequest:
    """Rebuild the request that made a result, from its PNG metadata and the same two input images."""
    meta = metadata if isinstance(metadata, ResultMetadata) else ResultMetadata.from_dict(metadata)
    return StyleRequest(content=content, style=style, **meta.parameters)
