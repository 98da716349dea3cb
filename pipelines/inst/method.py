"""The studio's ``inst`` method: apply a style learned into the library (the style image is not needed).

Strength: the studio's strength is InST's strength (noising index int(s·1000), DDIM over the last
int(s·steps) steps), capped at 0.99 because 1.0 would index past the noise schedule; below ``FADE_IN_BELOW``
the picture is also cross-faded with the content, so 0 is the content unchanged. ``steps`` is the DDIM
schedule length (50 in the original).
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from pipelines.core.errors import MethodUnavailableError
from pipelines.core.images import fade_in_style
from pipelines.core.method import MethodInputs, OptionSpec, ProgressCallback, StepsSpec, StyleMethod

DEFAULT_BASE_MODEL = "CompVis/stable-diffusion-v1-4"
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
SEPARATOR = "::"  # weights = "<SD 1.x repo or folder>::<CLIP image encoder repo or folder>"
FADE_IN_BELOW = 0.1
MAX_STRENGTH = 0.99


def weights_spec(base_model: str | None = None, clip_model: str | None = None) -> str:
    return f"{base_model or DEFAULT_BASE_MODEL}{SEPARATOR}{clip_model or DEFAULT_CLIP_MODEL}"


def split_weights(weights: str) -> tuple[str, str]:
    base, _, clip = weights.partition(SEPARATOR)
    return base or DEFAULT_BASE_MODEL, clip or DEFAULT_CLIP_MODEL


def _learned_style_names() -> list[str]:
    from pipelines.inst.library import StyleLibrary

    return [entry.slug for entry in StyleLibrary().list()]


def _learned_style_thumbnails() -> list[tuple[str, str]]:
    from pipelines.inst.library import StyleLibrary

    return [(path, entry.slug) for path, entry in StyleLibrary().thumbnails()]


def load_inst_pipeline(weights: str, device: str, dtype: str) -> Any:
    """InSTPipeline from a weights spec, with a clear error when the models cannot be had."""
    import torch

    from pipelines.inst.pipeline_inst import InSTPipeline

    base, clip = split_weights(weights)
    try:
        pipe = InSTPipeline.from_parts(base, clip, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise MethodUnavailableError(
            f"InST needs a Stable Diffusion 1.x model ({base}) and a CLIP image encoder ({clip}), which could not be "
            f"loaded: {str(exc).splitlines()[0][:200]}. Set HF_TOKEN if needed, check your network, or pass local "
            "folders with --base-model/--clip-model."
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

    def dtype_for(self, device: str) -> str:
        return "bfloat16" if device.startswith("cuda") else "float32"

    def prefers(self, device: str) -> bool:
        return False  # never the default: it needs a learned style first

    def load(self, weights: str, device: str, dtype: str) -> Any:
        return load_inst_pipeline(weights, device, dtype)

    def run(self, model: Any, inputs: MethodInputs, progress: ProgressCallback) -> Image.Image:
        import torch

        from pipelines.inst.library import StyleLibrary
        from pipelines.inst.styles import load_style

        name = inputs.extras.get("style_name")
        if not name:
            raise MethodUnavailableError("Choose a learned style (option style_name) for the InST method.")
        entry, conditioning = load_style(StyleLibrary(), name, model.device)
        inputs.notes.update(style_name=entry.slug, clip_mode=entry.clip_mode, style_base_model=entry.base_model)
        if inputs.strength == 0.0:
            return inputs.content.copy()
        strength = min(inputs.strength, MAX_STRENGTH)
        total = max(1, int(strength * inputs.steps))

        def on_step(pipe: Any, index: int, timestep: Any, tensors: dict) -> dict:
            progress(index + 1, total, f"Denoising step {index + 1}/{total}")
            return tensors

        image = model(
            inputs.content,
            conditioning,
            strength=strength,
            num_inference_steps=inputs.steps,
            guidance_scale=inputs.extras.get("guidance_scale", 10.0),
            use_adain=inputs.extras.get("adain") == "on",
            timestep_mode=inputs.extras.get("timestep_mode", "faithful"),
            generator=torch.Generator("cpu").manual_seed(inputs.seed),
            callback_on_step_end=on_step,
        ).images[0]
        return fade_in_style(inputs.content, image, inputs.strength, FADE_IN_BELOW)
