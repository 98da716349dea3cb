"""The request path every front end uses: validate → clean images → cached pipeline → method → result."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from pipelines.core.cache import PIPELINE_CACHE, PipelineCache, PipelineKey
from pipelines.core.device import describe_device, resolve_device
from pipelines.core.errors import InvalidRequestError, OutOfMemoryError
from pipelines.core.images import DEFAULT_MAX_SIDE, ImageSource, image_digest, load_image, preserve_content_color
from pipelines.core.method import MethodInputs, ProgressCallback, StyleMethod, default_method_name, get_method
from pipelines.core.request import MAX_SEED, MIN_MAX_SIDE, StyleRequest, check_int
from pipelines.core.result import StyleResult

logger = logging.getLogger(__name__)

APP_NAME = "style-studio"
VERSION = "0.1.0"


def _no_progress(done: int, total: int, description: str) -> None:
    pass


def run(
    request: StyleRequest,
    *,
    progress: ProgressCallback | None = None,
    cache: PipelineCache = PIPELINE_CACHE,
) -> StyleResult:
    """Run one request through its method and return the picture with full metadata."""
    report = progress or _no_progress
    started = time.perf_counter()

    # 1. Resolve the device, the method and its parameters (cheap checks before any decoding).
    if request.method:
        method = get_method(request.method)
    else:
        method = get_method(default_method_name(resolve_device(request.device)))
    run_device = method.run_device(request.device)
    steps = _resolve_steps(method, request.steps)
    extras = method.check_extras(request.extras)
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

    # 3. The heavy model, once per process (a cache hit costs nothing).
    key = _pipeline_key(method, request.weights, run_device)
    if not cache.is_loaded(key):
        report(0, 1, f"Loading {method.label} (first use)")
    model, load_seconds = cache.get(key, lambda: method.load(key.weights, key.device, key.dtype))
    weights, dtype = key.weights, key.dtype

    # 4. The method itself (out of memory becomes advice, and the memory is given back for the next request).
    ran = time.perf_counter()
    inputs = MethodInputs(
        content,
        style,
        request.strength,
        steps,
        seed,
        run_device,
        dtype,
        extras,
        content_digest=content_digest,
        style_digest=style_digest,
    )
    try:
        image = method.run(model, inputs, report).convert("RGB")
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_accelerator_memory()
        smaller = max(MIN_MAX_SIDE, (max(content.size) * 3 // 4) // 64 * 64)
        raise OutOfMemoryError(
            f"The {run_device} ran out of memory for the {method.name} method at {content.width}×{content.height}. "
            f"Try a max side of {smaller} or less{', or fewer steps' if steps else ''}; the studio is ready again."
        ) from None
    if image.size != content.size:
        image = image.resize(content.size, Image.Resampling.LANCZOS)
    if request.preserve_color:
        image = preserve_content_color(image, content)
    finished = time.perf_counter()

    metadata = {
        "app": APP_NAME,
        "version": VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": "local",
        "method": method.name,
        "strength": request.strength,
        "steps": steps,
        "seed": seed,
        "max_side": request.max_side,
        "preserve_color": request.preserve_color,
        "extras": extras,
        "derived": inputs.notes,
        "weights": weights,
        "device": describe_device(run_device),
        "dtype": dtype,
        "content_digest": content_digest,
        "style_digest": style_digest,
        "size": list(image.size),
        "timings": {
            "prepare_s": round(prepared - started, 4),
            "load_s": round(load_seconds, 4),
            "run_s": round(finished - ran, 4),
            "total_s": round(finished - started, 4),
        },
    }
    logger.info(
        "%s %dx%d strength=%.2f steps=%s seed=%d on %s in %.2f s (load %.2f s)",
        method.name,
        *image.size,
        request.strength,
        steps,
        seed,
        run_device,
        finished - started,
        load_seconds,
    )
    return StyleResult(image, metadata, content)


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


def _pipeline_key(method: StyleMethod, weights: str | None, device: str) -> PipelineKey:
    return PipelineKey(method.name, weights or method.default_weights(), device, method.dtype_for(device))


def preload(
    method: str | None = None,
    *,
    device: str = "auto",
    weights: str | None = None,
    cache: PipelineCache = PIPELINE_CACHE,
) -> PipelineKey:
    """Load a method's model into the cache now (e.g. in the background at app start), so that the first
    request does not pay for it. Returns the cache key; raises the same errors a request would."""
    chosen = get_method(method) if method else get_method(default_method_name(resolve_device(device)))
    key = _pipeline_key(chosen, weights, chosen.run_device(device))
    cache.get(key, lambda: chosen.load(key.weights, key.device, key.dtype))
    return key


def loaded_pipeline(
    method: str, *, device: str = "auto", weights: str | None = None, cache: PipelineCache = PIPELINE_CACHE
) -> tuple[Any, PipelineKey]:
    """A method's loaded model from the cache (loading it once), for work other than stylizing (e.g. training)."""
    chosen = get_method(method)
    key = _pipeline_key(chosen, weights, chosen.run_device(device))
    model, _ = cache.get(key, lambda: chosen.load(key.weights, key.device, key.dtype))
    return model, key


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
    max_side: int = DEFAULT_MAX_SIDE,
    preserve_color: bool = False,
    device: str = "auto",
    weights: str | None = None,
    extras: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> StyleResult:
    """Stylize ``content`` in the style of ``style`` in one call.

    >>> from pipelines import stylize
    >>> result = stylize("photo.jpg", "painting.jpg", method="fast", strength=0.7, seed=0)
    >>> result.image.save("out.png")          # or result.save("out.png") to keep the parameters
    >>> result.metadata["seed"]

    ``content``/``style``: paths, bytes, PIL images or arrays. See ``StyleRequest`` for every parameter.
    """
    request = StyleRequest(
        content=content,
        style=style,
        method=method,
        strength=strength,
        steps=steps,
        seed=seed,
        max_side=max_side,
        preserve_color=preserve_color,
        device=device,
        weights=weights,
        extras=extras or {},
    )
    return run(request, progress=progress)


def request_from_metadata(metadata: Mapping[str, Any], content: ImageSource, style: ImageSource) -> StyleRequest:
    """Rebuild the request that made a result, from its PNG metadata and the same two input images."""
    return StyleRequest(
        content=content,
        style=style,
        method=metadata["method"],
        strength=metadata["strength"],
        steps=metadata.get("steps"),
        seed=metadata["seed"],
        max_side=metadata["max_side"],
        preserve_color=metadata["preserve_color"],
        weights=metadata.get("weights"),
        extras=metadata.get("extras") or {},
    )
