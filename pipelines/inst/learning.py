"""Learning and importing styles into the library: the one code path the CLI, the UI and the Modal app share.

The InST pipeline comes from the studio's pipeline cache, so learning a style and applying it reuse one
loaded model.
"""

from __future__ import annotations

import os
import shutil
import threading

from pipelines.core.images import ImageSource, load_image
from pipelines.core.studio import loaded_pipeline
from pipelines.inst.library import StyleEntry, StyleLibrary, slugify
from pipelines.inst.method import split_weights, weights_spec
from pipelines.inst.styles import DEFAULT_RESOLUTION, import_official, prepare_style_image, save_style
from pipelines.inst.training import StepCallback, config_for, learn_style


def learn_style_into_library(
    style: ImageSource,
    name: str,
    *,
    preset: str = "fast",
    steps: int | None = None,
    clip_mode: str = "paper",
    resolution: int = DEFAULT_RESOLUTION,
    base_model: str | None = None,
    clip_model: str | None = None,
    library: StyleLibrary | None = None,
    device: str = "auto",
    on_step: StepCallback | None = None,
    cancel: threading.Event | None = None,
    overwrite: bool = False,
    gradient_checkpointing: bool = False,
    checkpoint_every: int | None = None,
) -> StyleEntry:
    """Learn ``style`` and save it as ``name``. An interrupted run of the same name resumes from its checkpoint."""
    library = library or StyleLibrary()
    slug = slugify(name)
    if not overwrite and any(entry.slug == slug for entry in library.list()):
        from pipelines.core.errors import InvalidRequestError

        raise InvalidRequestError(f"A style named {slug!r} already exists; choose another name or delete it first.")
    image = prepare_style_image(load_image(style, role="style"), resolution)  # a bad file fails before any loading
    weights = weights_spec(base_model, clip_model)
    pipe, _ = loaded_pipeline("inst", device=device, weights=weights)
    config = config_for(
        preset,
        steps,
        clip_mode=clip_mode,
        resolution=resolution,
        gradient_checkpointing=gradient_checkpointing,
        **({"checkpoint_every": checkpoint_every} if checkpoint_every else {}),
    )
    checkpoint_dir = library.root / ".training" / slug  # hidden: never listed as an entry
    result = learn_style(pipe, image, config, on_step=on_step, checkpoint_dir=checkpoint_dir, cancel=cancel)
    base, clip = split_weights(weights)
    entry = save_style(
        library,
        name,
        result.conditioning,
        image,
        {
            "base_model": base,
            "clip_model": clip,
            "steps": result.steps,
            "final_loss": round(result.final_loss, 6),
            "preset": preset,
            "extra": {"seconds": round(result.seconds, 1), "resolution": resolution},
        },
        overwrite=overwrite,
    )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return entry


def import_style_into_library(
    embeddings: str | os.PathLike[str],
    style: ImageSource,
    name: str,
    *,
    base_model: str | None = None,
    clip_model: str | None = None,
    library: StyleLibrary | None = None,
    device: str = "auto",
    resolution: int = DEFAULT_RESOLUTION,
) -> StyleEntry:
    """An official InST ``embeddings.pt`` plus the style image it was trained on → a library entry."""
    library = library or StyleLibrary()
    image = load_image(style, role="style")
    weights = weights_spec(base_model, clip_model)
    pipe, _ = loaded_pipeline("inst", device=device, weights=weights)
    base, clip = split_weights(weights)
    return import_official(pipe, library, embeddings, image, name, base, clip, resolution)
