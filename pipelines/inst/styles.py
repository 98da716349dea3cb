"""Learned styles ↔ the library: saving, loading, and importing official ``embeddings.pt`` files."""

from __future__ import annotations

import os
from typing import Any

import PIL.Image
import torch

from pipelines.core.errors import MethodUnavailableError
from pipelines.inst.library import StyleEntry, StyleLibrary
from pipelines.inst.mapper import StyleMapper
from pipelines.inst.pipeline_inst import InSTPipeline, StyleConditioning
from pipelines.inst.presets import DEFAULT_RESOLUTION


def prepare_style_image(image: PIL.Image.Image, resolution: int = DEFAULT_RESOLUTION) -> PIL.Image.Image:
    """The style picture as the original feeds it: RGB, resized to resolution² with LANCZOS."""
    image = image.convert("RGB")
    return (
        image
        if image.size == (resolution, resolution)
        else image.resize((resolution, resolution), PIL.Image.Resampling.LANCZOS)
    )


def save_style(
    library: StyleLibrary,
    name: str,
    conditioning: StyleConditioning,
    style_image: PIL.Image.Image,
    entry: dict[str, Any],
    overwrite: bool = False,
) -> StyleEntry:
    mapper = conditioning.mapper
    tensors = {f"mapper.{k}": v for k, v in mapper.state_dict().items()}
    tensors.update(
        image_embeds=conditioning.image_embeds, latent_mean=conditioning.latent_mean, latent_std=conditioning.latent_std
    )
    metadata = {
        "clip_mode": conditioning.clip_mode,
        "dim": str(mapper.config.dim),
        "heads": str(mapper.config.heads),
        "head_dim": str(mapper.config.head_dim),
        "placeholder": "*",
    }
    return library.save(
        name, tensors, metadata, {"clip_mode": conditioning.clip_mode, **entry}, style_image, overwrite=overwrite
    )


def load_style(
    library: StyleLibrary, name: str, device: str | torch.device = "cpu"
) -> tuple[StyleEntry, StyleConditioning]:
    from safetensors import safe_open

    entry = library.get(name)
    path = library.weights_path(name)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:
        raise MethodUnavailableError(
            f"The learned style file {path} is damaged ({exc}); learn or import it again."
        ) from None
    mapper = StyleMapper(dim=int(metadata["dim"]), heads=int(metadata["heads"]), head_dim=int(metadata["head_dim"]))
    mapper.load_state_dict({k.removeprefix("mapper."): v for k, v in tensors.items() if k.startswith("mapper.")})
    conditioning = StyleConditioning(
        mapper=mapper.to(device).eval(),
        image_embeds=tensors["image_embeds"].to(device),
        latent_mean=tensors["latent_mean"].to(device),
        latent_std=tensors["latent_std"].to(device),
        clip_mode=metadata.get("clip_mode", entry.clip_mode),
    )
    return entry, conditioning


def import_official(
    pipe: InSTPipeline,
    library: StyleLibrary,
    official: Any,
    embeddings_path: str | os.PathLike[str],
    style_image: PIL.Image.Image,
    name: str,
    base_model: str,
    clip_model: str,
    resolution: int = DEFAULT_RESOLUTION,
) -> StyleEntry:
    """An official ``embeddings.pt`` (read by ``load_official_embeddings``: ``official``) plus the style image it was
    trained on → a library entry in ``code`` CLIP mode (the mode the official code trained it in)."""
    if official.placeholder_id != pipe.placeholder_id:
        raise MethodUnavailableError(
            f"The embeddings were made for token id {official.placeholder_id}; "
            f"this tokenizer's '*' is {pipe.placeholder_id}."
        )
    width = pipe.text_encoder.get_input_embeddings().embedding_dim
    if official.mapper.config.dim != width:
        raise MethodUnavailableError(
            f"The embeddings are {official.mapper.config.dim}-d; this base model needs {width}-d."
        )
    style_image = prepare_style_image(style_image, resolution)
    conditioning = pipe.encode_style(style_image, official.mapper.to(pipe.device), "code")
    return save_style(
        library,
        name,
        conditioning,
        style_image,
        {
            "base_model": base_model,
            "clip_model": clip_model,
            "steps": 0,
            "final_loss": None,
            "source": "imported",
            "extra": {
                "file": os.path.basename(os.fspath(embeddings_path)),
                "saved_in_training_mode": official.saved_in_training_mode,
                "resolution": resolution,
            },
        },
    )
