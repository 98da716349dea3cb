"""The studio's ``inst`` method: apply a style learned into the library (the style image is not needed).

Strength: the studio's strength is InST's strength (noising index int(s·1000), DDIM over the last
int(s·steps) steps), capped at 0.99 because 1.0 would index past the noise schedule; below ``FADE_IN_BELOW``
the core also cross-fades the picture with the content, so 0 is the content unchanged. ``steps`` is the DDIM
schedule length (50 in the original).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from pipelines.core.device import diffusion_dtype
from pipelines.core.errors import MethodUnavailableError, WeightsFix
from pipelines.core.method import MethodInputs, OptionSpec, StepsSpec, StyleMethod

DEFAULT_BASE_MODEL = "CompVis/stable-diffusion-v1-4"
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
SEPARATOR = "::"  # weights = "<SD 1.x repo or folder>::<CLIP image encoder repo or folder>"
FADE_IN_BELOW = 0.1
MAX_STRENGTH = 0.99
SD_PARTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")  # what InSTPipeline.from_parts reads
FIX = WeightsFix(
    "inst",
    f"SD_FOLDER{SEPARATOR}CLIP_FOLDER",
    cli="--base-model SD_FOLDER --clip-model CLIP_FOLDER (local copies of both)",
)


def weights_spec(base_model: str | None = None, clip_model: str | None = None) -> str:
    return f"{base_model or DEFAULT_BASE_MODEL}{SEPARATOR}{clip_model or DEFAULT_CLIP_MODEL}"


def split_weights(weights: str) -> tuple[str, str]:
    base, _, clip = weights.partition(SEPARATOR)
    return base or DEFAULT_BASE_MODEL, clip or DEFAULT_CLIP_MODEL


def _library(context: Any) -> Any:
    from pipelines.inst.library import StyleLibrary

    return StyleLibrary(context.styles_dir)


def _learned_style_names(context: Any) -> list[str]:
    if context.backend == "modal":  # the styles live in the Modal Volume's library
        from pipelines.backends import ModalBackend

        try:
            return [entry["slug"] for entry in ModalBackend().styles()]
        except Exception:  # no Modal here: the picker just offers nothing; a run says what is wrong
            return []
    return [entry.slug for entry in _library(context).list()]


def _learned_style_thumbnails(context: Any) -> list[tuple[str, str]]:
    return [(path, entry.slug) for path, entry in _library(context).thumbnails()]


def load_inst_pipeline(weights: str, device: str, dtype: str) -> Any:
    """InSTPipeline from a weights spec, with a clear error when the models cannot be had. When the Hub cannot be
    reached, only local folders and the local Hugging Face cache are tried (no waiting for retries)."""
    import torch

    from pipelines.core.hub import hub_reachable, offline_reason
    from pipelines.inst.pipeline_inst import InSTPipeline

    base, clip = split_weights(weights)
    remote = [name for name in (base, clip) if not Path(name).expanduser().is_dir()]
    online = not remote or hub_reachable()
    try:
        pipe = InSTPipeline.from_parts(base, clip, dtype=getattr(torch, dtype), local_files_only=not online)
    except (OSError, ValueError) as exc:
        if not online:
            reason = f"{' and '.join(remote)}: {offline_reason()}"
        else:
            reason = str(exc).splitlines()[0][:200].rstrip(". ")
        raise MethodUnavailableError(
            f"InST needs a Stable Diffusion 1.x model ({base}) and a CLIP image encoder ({clip}), which could not "
            f"be loaded ({reason}). Set HF_TOKEN if a repo is gated, or download both once where the Hub is reachable",
            fix=FIX,
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class InSTMethod(StyleMethod):
    name = "inst"
    label = "InST (learned styles)"
    description = (
        "Inversion-based style transfer (Zhang 2023) on Stable Diffusion 1.x: learn a style from one painting "
        "once (Learn a style tab, or `learn-style`), then apply it to any photo. Needs a GPU to be practical."
    )
    strength_mapping = (
        f"is InST's strength (noise level and share of the DDIM steps), capped at {MAX_STRENGTH}; "
        f"below {FADE_IN_BELOW} it also cross-fades with the content, so 0 is the content unchanged"
    )
    steps = StepsSpec(default=50, minimum=2, maximum=200)
    priority = 5
    uses_style_image = False
    fade_in_below = FADE_IN_BELOW
    options = (
        OptionSpec(
            "style_name",
            "Learned style",
            "text",
            None,
            help="A style from the library.",
            suggestions=_learned_style_names,
            previews=_learned_style_thumbnails,
        ),
        OptionSpec("guidance_scale", "Guidance scale", "float", 10.0, 1.0, 30.0, help="The original uses 10."),
        OptionSpec(
            "adain",
            "AdaIN on latents",
            "choice",
            "off",
            choices=("off", "on"),
            help="Give the content the style's latent colour statistics first.",
        ),
        OptionSpec(
            "timestep_mode",
            "Inversion timestep",
            "choice",
            "faithful",
            choices=("faithful", "aligned"),
            help="faithful: the original's noise index int(strength·1000); aligned: the first DDIM step.",
        ),
    )

    def default_weights(self) -> str:
        return weights_spec()

    def weights_fix(self) -> WeightsFix:
        return FIX

    def dtype_for(self, device: str, precision: str = "auto") -> str:
        return diffusion_dtype(device, precision)

    def prefers(self, device: str) -> bool:
        return False  # never the default: it needs a learned style first

    def check_ready(self, options: dict[str, Any], context: Any) -> None:
        """A learned style must be chosen and be in the library, before Stable Diffusion is loaded."""
        name = options.get("style_name")
        library = _library(context)
        if not name:
            known = ", ".join(e.slug for e in library.list())
            raise MethodUnavailableError(
                "Choose a learned style for the InST method (the Learned style option, style_name"
                + (f"; in the library: {known})." if known else "). The library is empty: learn a style first.")
            )
        library.get(name)  # a clear error naming the styles that exist

    def prefetch(self, weights: str, context: Any) -> None:
        from pipelines.core.hub import prefetch_snapshot

        base, clip = split_weights(weights)
        model_files = ["*.json", "*.txt", "*.safetensors"]
        prefetch_snapshot(base, [f"{part}/{pattern}" for part in SD_PARTS for pattern in model_files])
        prefetch_snapshot(clip, model_files)

    def weights_reachable(self, weights: str) -> bool:
        from pipelines.core.hub import hub_file_available

        base, clip = split_weights(weights)
        return all(
            Path(name).expanduser().is_dir() or hub_file_available(name, marker)
            for name, marker in ((base, "model_index.json"), (clip, "config.json"))
        )

    def check_weights(self, weights: str) -> None:
        for part in split_weights(weights):
            if part.startswith((".", "/", "~")) and not Path(part).expanduser().is_dir():
                raise MethodUnavailableError(f"InST model folder {part} was not found. Check the path.", fix=FIX)

    def load(self, weights: str, device: str, dtype: str, context: Any) -> Any:
        return load_inst_pipeline(weights, device, dtype)

    def generate(self, model: Any, inputs: MethodInputs, context: Any) -> Image.Image:
        from pipelines.inst.styles import load_style

        entry, conditioning = load_style(_library(context), inputs.options["style_name"], model.device)
        inputs.derived.update(style_name=entry.slug, clip_mode=entry.clip_mode, style_base_model=entry.base_model)
        strength = min(inputs.strength, MAX_STRENGTH)
        return model(
            inputs.content,
            conditioning,
            strength=strength,
            num_inference_steps=inputs.steps,
            guidance_scale=inputs.options.get("guidance_scale", 10.0),
            use_adain=inputs.options.get("adain") == "on",
            timestep_mode=inputs.options.get("timestep_mode", "faithful"),
            generator=inputs.generator(),
            callback_on_step_end=inputs.denoising_callback(max(1, int(strength * inputs.steps))),
        ).images[0]
