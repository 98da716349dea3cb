"""The studio's ``instantstyle`` method: maps the studio request onto ``InstantStylePipeline``.

SDXL draws the content's Canny edges (ControlNet) in the style image's style (IP-Adapter in the style blocks
only), at about ``resolution``² pixels (SDXL's native 1024² by default) in the content's aspect ratio; the core
resizes the picture to the content's working size.

Strength mapping (``strength_knobs``, monotone: both knobs move toward more style as s grows). The studio's default
strength, 0.7, is pinned to the original's published setting (IP-Adapter scale 1.0, ControlNet conditioning scale
0.6, as in ``infer_style_controlnet.py``); from there each knob moves linearly:

    s:                  0 ────────────── 0.7 ────────── 1
    style scale:        0.0              1.0            1.2    the image prompt's weight in the style blocks
    ControlNet scale:   1.0              0.6            0.4    how strictly the content's edges are kept

More style is a stronger image prompt and a looser hold on the content's edges, so the style's textures can
redraw the outlines. The style scale stops at 1.2 because above it the image prompt starts to override the text
and the layout (the failure InstantStyle was made to avoid); 0 is plain SDXL with the ControlNet. Below
``fade_in_below`` the core also cross-fades with the content, so strength 0 is the content unchanged. Either knob
can be set by hand (options ``style_scale``, ``controlnet_scale``), which overrides the mapping for that knob.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from PIL import Image

from pipelines.core.device import diffusion_dtype
from pipelines.core.errors import MethodUnavailableError, WeightsFix
from pipelines.core.method import MethodInputs, OptionSpec, StepsSpec, StyleMethod
from pipelines.instantstyle.weights import (
    FIX,
    hub_location,
    hub_path,
    ip_adapter_location,
    is_local,
    split_weights,
    weights_spec,
)

FADE_IN_BELOW = 0.1
PUBLISHED_STRENGTH = 0.7  # the studio's default strength: the original's scale 1.0 and ControlNet 0.6
KNOB_ANCHORS = ((0.0, 0.0, 1.0), (PUBLISHED_STRENGTH, 1.0, 0.6), (1.0, 1.2, 0.4))  # (strength, style, controlnet)
DEFAULT_GUIDANCE = 5.0  # the original's
DEFAULT_RESOLUTION = 1024  # SDXL's native size
SIZE_MULTIPLE = 32  # latent sides divisible by 4: SDXL's two downsamplers halve them cleanly
MAX_ASPECT = 4.0  # SDXL was trained up to about 4:1; longer sides are capped at that ratio of the area's side
BLOCK_CHOICES = ("style", "style+layout", "all")


class StrengthKnobs(NamedTuple):
    style_scale: float  # IP-Adapter scale in the target blocks
    controlnet_scale: float  # ControlNet conditioning scale


def strength_knobs(strength: float) -> StrengthKnobs:
    """The pipeline's knobs for the studio's strength in [0, 1] (see the module docstring): piecewise linear
    through (0: style 0, ControlNet 1), (0.7: 1.0, 0.6, the original's) and (1: 1.2, 0.4). The style scale never
    falls and the ControlNet scale never rises as the strength grows."""
    s = min(max(float(strength), 0.0), 1.0)
    for (s0, style0, control0), (s1, style1, control1) in zip(KNOB_ANCHORS, KNOB_ANCHORS[1:], strict=False):
        if s <= s1:
            share = (s - s0) / (s1 - s0)
            return StrengthKnobs(style0 + (style1 - style0) * share, control0 + (control1 - control0) * share)
    return StrengthKnobs(KNOB_ANCHORS[-1][1], KNOB_ANCHORS[-1][2])


def generation_size(width: int, height: int, resolution: int = DEFAULT_RESOLUTION) -> tuple[int, int]:
    """(width, height) SDXL draws at: the content's aspect ratio (capped at ``MAX_ASPECT``:1) with about
    ``resolution``² pixels, both sides multiples of ``SIZE_MULTIPLE``."""
    aspect = min(max(width / height, 1.0 / MAX_ASPECT), MAX_ASPECT)
    sides = (resolution * math.sqrt(aspect), resolution / math.sqrt(aspect))
    rounded = (max(SIZE_MULTIPLE, round(side / SIZE_MULTIPLE) * SIZE_MULTIPLE) for side in sides)
    return tuple(rounded)  # type: ignore[return-value]


def cuda_dtype(bf16_supported: bool) -> str:
    """bfloat16 where the GPU has it: it has float32's exponent range, so SDXL's VAE does not overflow (in float16
    it must be upcast to float32 to decode: about 1.5 GB more at 1024² and a slower decode); float16 (the original's
    dtype) on GPUs without bfloat16 (before Ampere). The two differ from float32 by about 0.01 of the tolerance
    unit on the fixture (SPEC §5 #6), far below what is visible."""
    return "bfloat16" if bf16_supported else "float16"


def load_instantstyle_pipeline(weights: str, device: str, dtype: str) -> Any:
    """InstantStylePipeline from a weights spec, placed on ``device`` (model CPU offload when the GPU's free memory
    is short), with a clear error when the models cannot be had. When the Hub cannot be reached, only local files
    and the local Hugging Face cache are tried (no waiting for retries)."""
    import torch

    from pipelines.core.hub import hub_reachable, offline_reason
    from pipelines.instantstyle.pipeline_instantstyle import InstantStylePipeline

    sdxl, ip_adapter, image_encoder, controlnet = split_weights(weights)
    remote = [name for name in (sdxl, ip_adapter, image_encoder, controlnet) if name and not is_local(name)]
    online = not remote or hub_reachable()
    try:
        pipe = InstantStylePipeline.from_pretrained(
            sdxl,
            ip_adapter=ip_adapter,
            image_encoder=image_encoder,
            controlnet=controlnet,
            dtype=getattr(torch, dtype),
            local_files_only=not online,
        )
    except (OSError, ValueError, KeyError) as exc:  # KeyError: IP-Adapter weights that do not fit this UNet
        reason = f"{' and '.join(remote)}: {offline_reason()}" if not online else str(exc).splitlines()[0][:200]
        raise MethodUnavailableError(
            f"InstantStyle needs SDXL ({sdxl}), the ip-adapter_sdxl weights ({ip_adapter}), their image encoder "
            f"({image_encoder}) and a Canny ControlNet ({controlnet or 'none'}), which could not be loaded "
            f"({reason.rstrip('. ')}). Download them once where the Hub is reachable",
            fix=FIX,
        ) from None
    pipe.set_progress_bar_config(disable=True)
    pipe.place(device)
    return pipe


class InstantStyleMethod(StyleMethod):
    name = "instantstyle"
    label = "InstantStyle (SDXL, any style, no training)"
    description = (
        "SDXL with an IP-Adapter image prompt in the style blocks only (Wang 2024), the content's edges kept by a "
        "Canny ControlNet: redraws the photo in the painting's style. Needs a CUDA GPU (about 14 GB of weights)."
    )
    strength_mapping = (
        f"sets the image prompt's scale (0 → 1.2) and loosens the ControlNet (1 → 0.4); {PUBLISHED_STRENGTH} is the "
        f"original's 1.0 / 0.6; below {FADE_IN_BELOW} it also cross-fades with the content, so 0 is the content "
        "unchanged"
    )
    steps = StepsSpec(default=30, minimum=1, maximum=100)
    priority = 6
    fade_in_below = FADE_IN_BELOW
    options = (
        OptionSpec(
            "prompt",
            "Prompt",
            "text",
            None,
            help="What the picture shows (the style comes from the style image). Empty: the original's "
            "'best quality, high quality'.",
        ),
        OptionSpec(
            "negative_prompt",
            "Negative prompt",
            "text",
            None,
            help="Empty: the original's 'monochrome, lowres, bad anatomy, worst quality, low quality'.",
        ),
        OptionSpec(
            "blocks",
            "Style blocks",
            "choice",
            "style",
            choices=BLOCK_CHOICES,
            help="Where the image prompt goes: style (InstantStyle), style+layout (also the style image's "
            "composition), all (plain IP-Adapter: also its content).",
        ),
        OptionSpec(
            "style_scale", "Style scale", "float", None, 0.0, 2.0, help="IP-Adapter scale. Empty: from strength."
        ),
        OptionSpec(
            "controlnet_scale",
            "ControlNet scale",
            "float",
            None,
            0.0,
            2.0,
            help="How strictly the content's edges are kept. Empty: from strength.",
        ),
        OptionSpec(
            "guidance_scale",
            "Guidance scale",
            "float",
            None,
            0.0,
            20.0,
            help=f"Classifier-free guidance. Empty: {DEFAULT_GUIDANCE:g}, as the original; 1 or less turns it off.",
        ),
        OptionSpec(
            "neg_content_prompt",
            "Content to remove",
            "text",
            None,
            help="What the style image shows that should not carry over (e.g. 'a woman'): InstantStyle's content "
            "subtraction.",
        ),
        OptionSpec(
            "resolution",
            "SDXL resolution (px)",
            "int",
            DEFAULT_RESOLUTION,
            64,
            2048,
            help="SDXL draws at about this many pixels squared, in the content's aspect ratio; the picture is then "
            "resized to the working size.",
        ),
    )

    def default_weights(self) -> str:
        return weights_spec()

    def weights_fix(self) -> WeightsFix:
        return FIX

    def dtype_for(self, device: str, precision: str = "auto") -> str:
        if precision != "auto" or not device.startswith("cuda"):
            return diffusion_dtype(device, precision)
        import torch

        return cuda_dtype(torch.cuda.is_available() and torch.cuda.is_bf16_supported())

    def supported_devices(self) -> tuple[str, ...]:
        return ("cpu", "cuda")  # CPU for small tests only; MPS untested

    def prefers(self, device: str) -> bool:
        return device.startswith("cuda")

    def gpu_seconds(self, steps: int) -> int:
        return 30 + steps // 2  # SDXL + ControlNet at 1024², CFG batch of 2: about 0.2 s a step, plus decoding

    def check_weights(self, weights: str) -> None:
        for part in split_weights(weights):
            if part and part.startswith((".", "/", "~")) and not is_local(part):
                raise MethodUnavailableError(f"InstantStyle weights {part} were not found. Check the path.", fix=FIX)

    def weights_reachable(self, weights: str) -> bool:
        from pipelines.core.hub import hub_file_available

        sdxl, ip_adapter, image_encoder, controlnet = split_weights(weights)
        files = []  # (repo, file) of each remote part: a small file that says the part is there
        for name, marker in ((sdxl, "model_index.json"), (image_encoder, "config.json"), (controlnet, "config.json")):
            if name is not None and not is_local(name):
                files.append(hub_path(*hub_location(name), marker))
        if not is_local(ip_adapter):
            try:
                files.append(hub_path(*ip_adapter_location(ip_adapter)))
            except ValueError:
                return False
        return all(hub_file_available(repo, path) for repo, path in files)

    def prefetch(self, weights: str, context: Any) -> None:
        from pipelines.core.hub import prefetch_snapshot

        sdxl, ip_adapter, image_encoder, controlnet = split_weights(weights)
        # SDXL's repo holds each model several times (fp32, fp16, .bin, single files): take one copy of each.
        prefetch_snapshot(
            sdxl,
            [
                "model_index.json",
                "*/*.json",
                "*/*.txt",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/diffusion_pytorch_model.safetensors",
                "text_encoder/model.safetensors",
                "text_encoder_2/model.safetensors",
            ],
        )
        if not is_local(ip_adapter):
            repo, path = hub_path(*ip_adapter_location(ip_adapter))
            prefetch_snapshot(repo, [path])
        if not is_local(image_encoder):
            location = hub_location(image_encoder)
            prefetch_snapshot(
                location[0], [hub_path(*location, name)[1] for name in ("config.json", "model.safetensors")]
            )
        if controlnet is not None and not is_local(controlnet):
            prefetch_snapshot(controlnet, ["config.json", "diffusion_pytorch_model.safetensors"])

    def load(self, weights: str, device: str, dtype: str, context: Any) -> Any:
        return load_instantstyle_pipeline(weights, device, dtype)

    def memory_advice(self, inputs: MethodInputs) -> str:
        """SDXL draws at the ``resolution`` option, whatever the working size: that is what to lower."""
        resolution = inputs.options.get("resolution", DEFAULT_RESOLUTION)
        smaller = max(512, resolution * 3 // 4 // 64 * 64)
        return f"Try a lower SDXL resolution option (e.g. {smaller} instead of {resolution}; the max side won't help)"

    def generate(self, model: Any, inputs: MethodInputs, context: Any) -> Image.Image:
        options = inputs.options
        knobs = strength_knobs(inputs.strength)
        style_scale = options.get("style_scale", knobs.style_scale)
        controlnet_scale = options.get("controlnet_scale", knobs.controlnet_scale)
        width, height = generation_size(*inputs.content.size, options.get("resolution", DEFAULT_RESOLUTION))
        with_edges = model.controlnet is not None
        inputs.derived.update(
            style_scale=round(style_scale, 4),
            controlnet_scale=round(controlnet_scale, 4) if with_edges else None,
            generation_size=f"{width}x{height}",
            memory=model.memory_mode,
        )
        return model(
            inputs.style,
            prompt=options.get("prompt"),
            negative_prompt=options.get("negative_prompt"),
            content_image=inputs.content if with_edges else None,
            target_blocks=options.get("blocks", "style"),
            style_scale=style_scale,
            controlnet_conditioning_scale=controlnet_scale,
            neg_content_prompt=options.get("neg_content_prompt"),
            guidance_scale=options.get("guidance_scale", DEFAULT_GUIDANCE),
            num_inference_steps=inputs.steps,
            height=height,
            width=width,
            generator=inputs.generator(),
            callback_on_step_end=inputs.denoising_callback(inputs.steps),
        ).images[0]
