"""The studio's ``artfusion`` method: maps the studio request onto ``ArtFusionPipeline``.

Strength mapping (monotone, documented in the README): the studio's strength s sets both guidance scales on a
log scale through three anchors: (content 2.0, style 0.5) at 0, the original notebook's (0.5, 2.0) exactly at
``NOTEBOOK_STRENGTH`` = 0.7, and (0.25, 5.0) at 1; between anchors each scale moves log-linearly:

    below 0.7:  content = 2.0 · (0.5 / 2.0) ** (s / 0.7)          style = 0.5 · (2.0 / 0.5) ** (s / 0.7)
    above 0.7:  content = 0.5 · (0.25 / 0.5) ** ((s − 0.7) / 0.3)  style = 2.0 · (5.0 / 2.0) ** ((s − 0.7) / 0.3)

The content scale falls and the style scale rises as s grows: both push toward more style. Below
``fade_in_below`` the core also cross-fades the picture with the content, so s = 0 returns the content
unchanged. Either scale can be set by hand (options ``content_scale``/``style_scale``), which overrides the
mapping for that scale.
"""

from __future__ import annotations

import logging
from typing import Any

from PIL import Image

from pipelines.core.compiling import compile_denoiser, compile_mode
from pipelines.core.device import diffusion_dtype
from pipelines.core.method import MethodInputs, OptionSpec, StepsSpec, StyleMethod

logger = logging.getLogger(__name__)

FADE_IN_BELOW = 0.1
NOTEBOOK_STRENGTH = 0.7  # gives the original notebook's (content 0.5, style 2.0) exactly
GUIDANCE_ANCHORS = ((0.0, 2.0, 0.5), (NOTEBOOK_STRENGTH, 0.5, 2.0), (1.0, 0.25, 5.0))  # (strength, content, style)


def guidance_scales(strength: float) -> tuple[float, float]:
    """(content guidance scale, style guidance scale) for the studio's strength in [0, 1] (see the module doc)."""
    for (s0, c0, y0), (s1, c1, y1) in zip(GUIDANCE_ANCHORS, GUIDANCE_ANCHORS[1:], strict=False):
        if strength <= s1:
            share = (strength - s0) / (s1 - s0)
            return c0 * (c1 / c0) ** share, y0 * (y1 / y0) ** share
    return GUIDANCE_ANCHORS[-1][1], GUIDANCE_ANCHORS[-1][2]


def configure_for_device(pipe: Any, device: str, compile_setting: str = "off") -> Any:
    """The device choices every ArtFusion pipeline gets (the studio's and the benchmarks'): TF32 on CUDA, and the
    opt-in compile of the denoiser. Attention stays PyTorch SDPA everywhere: on the CPU the classic kernel
    measured the same at 256 px and 1.04× slower at 512 px (`python -m bench`, interleaved), and SDPA never
    materialises the score matrix, which at 2048 px would be ~19 GB."""
    import torch

    pipe.set_progress_bar_config(disable=True)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    pipe = pipe.to(device)
    pipe.unet = compile_denoiser(pipe.unet, device, compile_setting)  # opt-in (--compile); eager otherwise
    return pipe


class ArtFusionMethod(StyleMethod):
    name = "artfusion"
    label = "ArtFusion (diffusion, any style)"
    description = (
        "Dual-guidance latent diffusion (Chen 2023): paints the content anew in the style's textures and colours. "
        "Best on a CUDA GPU; on a CPU use 256–512 px and few steps."
    )
    strength_mapping = (
        "sets the content guidance (2 → 0.25) and style guidance (0.5 → 5) scales on a log scale, "
        "0.7 giving the original notebook's 0.5 / 2.0; "
        f"below {FADE_IN_BELOW} it also cross-fades with the content, so 0 is the content unchanged"
    )
    steps = StepsSpec(default=25, minimum=1, maximum=250)
    priority = 10
    fade_in_below = FADE_IN_BELOW
    options = (
        OptionSpec(
            "content_scale",
            "Content guidance scale",
            "float",
            None,
            0.0,
            10.0,
            help="Empty: from strength. Below 1 frees the style, above 1 keeps more content.",
        ),
        OptionSpec(
            "style_scale",
            "Style guidance scale",
            "float",
            None,
            0.0,
            10.0,
            help="Empty: from strength. Higher is more stylized; 1 turns style guidance off.",
        ),
        OptionSpec(
            "eta",
            "DDIM eta",
            "float",
            0.0,
            0.0,
            1.0,
            help="0: deterministic sampling. 1: the original notebook's ancestral sampling.",
        ),
        OptionSpec(
            "init_noise",
            "Start noise",
            "choice",
            "gaussian",
            choices=("gaussian", "uniform"),
            help="uniform reproduces the original notebook's torch.rand_like start.",
        ),
        OptionSpec(
            "style_size",
            "Style image size (px)",
            "int",
            256,
            64,
            1024,
            help="Shorter side of the style image for the VGG statistics: the texture scale.",
        ),
    )

    def default_weights(self) -> str:
        from pipelines.artfusion.weights import DEFAULT_REPO

        return DEFAULT_REPO

    def weights_fix(self) -> Any:
        from pipelines.artfusion.weights import FIX

        return FIX

    def prefetch(self, weights: str, context: Any) -> None:
        from pipelines.artfusion.weights import resolve_weights

        resolve_weights(weights, context.cache_dir)  # downloads and converts once

    def gpu_seconds(self, steps: int) -> int:
        return 20 + steps // 2  # a batch of three per step, about 0.1 s on a large GPU

    def weights_reachable(self, weights: str) -> bool:
        from pipelines.artfusion.weights import weights_reachable

        return weights_reachable(weights)

    def check_weights(self, weights: str) -> None:
        from pipelines.artfusion.weights import check_local_weights

        check_local_weights(weights)

    def dtype_for(self, device: str, precision: str = "auto") -> str:
        return diffusion_dtype(device, precision, bfloat16_on_cpu=True)

    def prefers(self, device: str) -> bool:
        return device.startswith("cuda")  # on a CPU the fast engine stays the default

    def load(self, weights: str, device: str, dtype: str, context: Any) -> Any:
        import torch

        from pipelines.artfusion.pipeline_artfusion import ArtFusionPipeline
        from pipelines.artfusion.weights import resolve_weights

        folder = resolve_weights(weights, context.cache_dir)
        pipe = ArtFusionPipeline.from_pretrained(folder, dtype=getattr(torch, dtype))
        return configure_for_device(pipe, device, context.compile)

    def generate(self, model: Any, inputs: MethodInputs, context: Any) -> Image.Image:
        from diffusers.utils.torch_utils import is_compiled_module

        from pipelines.artfusion.pipeline_artfusion import original_timesteps

        content_scale, style_scale = guidance_scales(inputs.strength)
        content_scale = inputs.options.get("content_scale", content_scale)
        style_scale = inputs.options.get("style_scale", style_scale)
        inputs.derived.update(content_scale=round(content_scale, 4), style_scale=round(style_scale, 4))
        hits_before = model.style_memo.hits, model.content_memo.hits
        image = model(
            inputs.content,
            inputs.style,
            num_inference_steps=inputs.steps,
            content_guidance_scale=content_scale,
            style_guidance_scale=style_scale,
            eta=inputs.options.get("eta", 0.0),
            init_noise=inputs.options.get("init_noise", "gaussian"),
            style_size=inputs.options.get("style_size", 256),
            generator=inputs.generator(),
            callback_on_step_end=inputs.denoising_callback(
                len(original_timesteps(inputs.steps, model.scheduler.config))
            ),
        ).images[0]
        inputs.derived["style_cache_hit"] = model.style_memo.hits > hits_before[0]
        inputs.derived["content_cache_hit"] = model.content_memo.hits > hits_before[1]
        if is_compiled_module(model.unet):  # what this model was loaded with, not today's setting
            inputs.derived["compiled"] = compile_mode(context.compile, inputs.device)
        return image
