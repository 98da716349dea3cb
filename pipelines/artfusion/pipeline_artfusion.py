"""ArtFusionPipeline: content image + style image → stylized image, by DDIM with dual classifier-free guidance.

Spec with every constant: ../shared/research/artfusion.md. In short:
- content condition c = instance-norm(normalised VAE posterior mean of the content image);
- style condition s = VGG16 statistics of the style image (2944 numbers);
- ε̂ = ε(c,s) + (s_c − 1)(ε(c,s) − ε(0,s)) + (s_s − 1)(ε(c,s) − ε(c,∅)), all branches in ONE batched UNet call
  per step; ∅ is the learned null style; a scale of exactly 1 drops its branch from the batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import is_compiled_module, randn_tensor

from pipelines.artfusion.convert import convert_checkpoint, unwrap_state_dict
from pipelines.artfusion.style_encoder import VGGStyleEncoder
from pipelines.artfusion.unet import ArtFusionUNet
from pipelines.core.checkpoints import load_checkpoint
from pipelines.core.compiling import mark_step_begin
from pipelines.core.memo import Memo, array_digest
from pipelines.core.pipeline_mixins import InterruptibleMixin, check_output_type

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | list[PIL.Image.Image]
SIZE_MULTIPLE = 32  # VAE downsamples by 16 and the UNet once more by 2
STYLE_MEMO_SIZE = 64  # style vectors: 2944 floats each
CONTENT_MEMO_SIZE = 8  # content latents: 12 KB at 512 px, 1 MB at 2048 px


IMAGE_PROCESSOR = VaeImageProcessor(do_resize=False)  # diffusers' conversion of [0, 1] pictures to PIL/np/pt


def original_timesteps(steps: int, config: Any) -> torch.Tensor:
    """The original LDM DDIM grid ("uniform"): ``range(0, T, T // steps) + offset``, descending. For a ``steps`` that
    does not divide T it has one entry more than ``steps`` (6 → 997, 831, 665, 499, 333, 167, 1). Where the offset
    would reach T (3 steps: 1000), the original indexes past its schedule and crashes; that entry is left out."""
    ratio = config.num_train_timesteps // steps
    grid = torch.arange(0, config.num_train_timesteps, ratio, dtype=torch.int64) + config.steps_offset
    return grid[grid < config.num_train_timesteps].flip(0)


@dataclass
class ArtFusionPipelineOutput(BaseOutput):
    """``images``: list of PIL images, or an array/tensor (B, H, W, 3)/(B, 3, H, W) in [0, 1], or latents."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class ArtFusionPipeline(InterruptibleMixin, DiffusionPipeline):
    r"""Arbitrary style transfer with ArtFusion (Chen 2023, arXiv 2306.09330).

    Components: ``unet`` (ArtFusionUNet, holds the null style), ``vae`` (KL-f16 ``AutoencoderKL`` whose
    ``latents_mean``/``latents_std`` carry ArtFusion's per-channel latent normalisation), ``style_encoder``
    (VGGStyleEncoder) and ``scheduler`` (``DDIMScheduler`` configured to the original schedule).

    Load a converted folder with ``from_pretrained`` or an original checkpoint with ``from_single_file``.
    """

    model_cpu_offload_seq = "style_encoder->vae->unet->vae"
    _callback_tensor_inputs = ["latents", "noise_pred", "pred_original_sample"]

    def __init__(
        self, unet: ArtFusionUNet, vae: AutoencoderKL, style_encoder: VGGStyleEncoder, scheduler: DDIMScheduler
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, vae=vae, style_encoder=style_encoder, scheduler=scheduler)
        # Per-picture work users repeat (same style, same photo), remembered across calls.
        self.style_memo: Memo[torch.Tensor] = Memo(STYLE_MEMO_SIZE)
        self.content_memo: Memo[torch.Tensor] = Memo(CONTENT_MEMO_SIZE)

    @classmethod
    def from_single_file(
        cls,
        checkpoint: str | os.PathLike[str],
        original_config: str | os.PathLike[str] | dict | None = None,
        dtype: torch.dtype | None = None,
    ) -> ArtFusionPipeline:
        """Convert an original Lightning checkpoint (EMA weights, weights-only unpickling).

        ``original_config``: the original training config as yaml, or the same structure as json or a dict;
        None means the released ``kl16_content12`` architecture. ``pipe.conversion_report`` lists every
        checkpoint key that was not used, with the reason.
        """
        state_dict = unwrap_state_dict(load_checkpoint(checkpoint, what="ArtFusion checkpoint"))
        converted = convert_checkpoint(state_dict, original_config)
        pipe = cls(converted.unet, converted.vae, converted.style_encoder, converted.scheduler)
        pipe.conversion_report = converted.ignored
        return pipe.to(dtype=dtype) if dtype is not None else pipe

    # ---- helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def network_size(width: int, height: int) -> tuple[int, int]:
        """The nearest (width, height) the network accepts: both multiples of 32, at least 32."""
        return tuple(max(SIZE_MULTIPLE, round(side / SIZE_MULTIPLE) * SIZE_MULTIPLE) for side in (width, height))

    def _to_pixels(
        self, image: ImageInput, size: tuple[int, int] | None, device: torch.device | None = None
    ) -> torch.Tensor:
        """Images → (B, 3, H, W) float32 in [-1, 1] on the pipeline's device, resized to ``size`` (W, H) if given.

        Tensors are taken as (B, 3, H, W) or (3, H, W) in [0, 1]; arrays as (H, W, 3) or (B, H, W, 3), uint8 or
        [0, 1] floats.
        """
        if isinstance(image, PIL.Image.Image):
            image = [image]
        if isinstance(image, list):
            arrays = []
            for item in image:
                item = item.convert("RGB")
                if size is not None and item.size != size:
                    item = item.resize(size, PIL.Image.Resampling.BICUBIC)
                arrays.append(np.asarray(item, dtype=np.uint8))
            pixels = torch.from_numpy(np.stack(arrays).astype(np.float64) / 127.5 - 1.0).float().permute(0, 3, 1, 2)
        else:
            if isinstance(image, np.ndarray):
                array = image[None] if image.ndim == 3 else image
                scale = 255.0 if array.dtype == np.uint8 else 1.0
                image = torch.from_numpy(array.astype(np.float32) / scale).permute(0, 3, 1, 2)
            pixels = (image[None] if image.ndim == 3 else image).float() * 2.0 - 1.0
            if size is not None and tuple(pixels.shape[-1:-3:-1]) != size:
                pixels = F.interpolate(pixels, size=(size[1], size[0]), mode="bicubic", antialias=True).clamp(-1, 1)
        return pixels.to(device or self._execution_device)

    def _latent_normalisation(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # Pipeline properties such as _execution_device and module dtypes walk every submodule (about a
        # millisecond each on the full model), so __call__ looks them up once and passes them down.
        device = device or self._execution_device
        mean = torch.tensor(self.vae.config.latents_mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=device).view(1, -1, 1, 1)
        return mean, std

    @torch.no_grad()
    def encode_content(self, pixels: torch.Tensor) -> torch.Tensor:
        """Content condition: per-sample, per-channel instance norm of the normalised VAE posterior mean.

        Remembered by the pixels' hash (the posterior mean is deterministic): another strength, seed or style
        on the same photo skips the VAE encoder.
        """
        tiling = bool(getattr(self.vae, "use_tiling", False))
        conditions = [
            self.content_memo.get(
                array_digest(sample, tiling), lambda sample=sample: self._encode_content(sample[None])
            )
            for sample in pixels
        ]
        return torch.cat(conditions).to(pixels.device)

    def _encode_content(self, pixels: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_normalisation(pixels.device)
        latent = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode().float()
        latent = (latent - mean) / std
        channel_std, channel_mean = torch.std_mean(latent, dim=(2, 3), keepdim=True, unbiased=True)
        # The original divides by the raw std; a flat picture (std 0) would give NaN, so only that case is guarded.
        return (latent - channel_mean) / channel_std.clamp_min(1e-12)

    @torch.no_grad()
    def encode_style(self, pixels: torch.Tensor) -> torch.Tensor:
        """Style condition (B, 2944), remembered by the pixels' hash: a style seen before skips the VGG pass."""
        vectors = [
            self.style_memo.get(
                array_digest(sample),
                lambda sample=sample: self.style_encoder(sample[None].to(self.style_encoder.dtype)).float(),
            )
            for sample in pixels
        ]
        return torch.cat(vectors).to(pixels.device)

    def prepare_style(
        self, style_image: ImageInput, style_size: int | None, device: torch.device | None = None
    ) -> torch.Tensor:
        """Style pixels: the shorter side scaled to ``style_size`` (aspect kept), or as given when None."""
        if style_size is not None:
            images = [style_image] if isinstance(style_image, PIL.Image.Image) else style_image
            if isinstance(images, list):
                resized = []
                for item in images:
                    scale = style_size / min(item.size)
                    resized.append(
                        item.resize(
                            (max(1, round(item.width * scale)), max(1, round(item.height * scale))),
                            PIL.Image.Resampling.BICUBIC,
                        )
                    )
                return self._to_pixels(resized, None, device)
            pixels = self._to_pixels(style_image, None, device)
            scale = style_size / min(pixels.shape[-2:])
            size = (max(1, round(pixels.shape[-2] * scale)), max(1, round(pixels.shape[-1] * scale)))
            return F.interpolate(pixels, size=size, mode="bicubic", antialias=True).clamp(-1, 1)
        return self._to_pixels(style_image, None, device)

    def _initial_noise(
        self,
        shape: tuple[int, ...],
        init_noise: str,
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device | None = None,
    ) -> torch.Tensor:
        device = device or self._execution_device
        if init_noise == "gaussian":
            return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        # The original notebook starts from torch.rand_like (uniform in [0, 1)), almost surely by accident.
        generators = generator if isinstance(generator, list) else [generator] * shape[0]
        samples = [
            torch.rand((1, *shape[1:]), generator=g, device=g.device if g is not None else "cpu") for g in generators
        ]
        return torch.cat(samples).to(device)

    @staticmethod
    def check_inputs(
        num_inference_steps: int,
        content_guidance_scale: float,
        style_guidance_scale: float,
        eta: float,
        init_noise: str,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str],
        tensor_inputs: list[str],
    ) -> None:
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        for name, value in (
            ("content_guidance_scale", content_guidance_scale),
            ("style_guidance_scale", style_guidance_scale),
        ):
            if not np.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if init_noise not in ("gaussian", "uniform"):
            raise ValueError(f"init_noise must be 'gaussian' or 'uniform', got {init_noise!r}")
        check_output_type(output_type)
        unknown = set(callback_on_step_end_tensor_inputs) - set(tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs may only name {tensor_inputs}, not {sorted(unknown)}")

    # ---- the call ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        content_image: ImageInput,
        style_image: ImageInput | None = None,
        num_inference_steps: int = 50,
        content_guidance_scale: float = 0.5,
        style_guidance_scale: float = 2.0,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        init_noise: Literal["gaussian", "uniform"] = "gaussian",
        style_size: int | None = 256,
        style_features: torch.Tensor | None = None,
        output_type: Literal["pil", "np", "pt", "latent"] = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict[str, Any]], dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        batch_guidance: bool = True,
        vae_tiling: bool | None = None,
        timestep_spacing: Literal["original", "leading"] = "original",
    ) -> ArtFusionPipelineOutput | tuple:
        r"""Stylize ``content_image`` in the style of ``style_image``.

        Args:
            content_image: PIL image (or list), array (H, W, 3)/(B, H, W, 3), or tensor (B, 3, H, W) in [0, 1].
                Sides are rounded to multiples of 32 for the network (a PIL image already at such a size is not
                resized) and the result is resized back to the content's own size.
            style_image: the style picture(s): one for all contents, or one per content.
            num_inference_steps (`int`, defaults to 50): DDIM steps (the original notebook used 250).
            content_guidance_scale (`float`, defaults to 0.5): s_c. 1 disables content guidance; below 1
                weakens the content and so strengthens the style; above 1 keeps more content. Useful range 0.25–4.
            style_guidance_scale (`float`, defaults to 2.0): s_s. 1 disables style guidance; higher is more
                stylized. Useful range 0.15–5.
            eta (`float`, defaults to 0.0): DDIM η in [0, 1]; 0 is deterministic given the start noise, 1 is
                the notebook's ancestral sampling.
            generator: `torch.Generator` (or one per sample) for the start noise and, with η > 0, the step noise.
            latents: start noise x_T in the model's normalised latent space, (B, 16, H/16, W/16) of the network
                size; drawn from ``generator`` when None.
            init_noise (`"gaussian"` or `"uniform"`): how x_T is drawn when ``latents`` is None. The original
                notebook draws uniform noise (``torch.rand_like``); Gaussian is the correct DDIM start.
            style_size (`int` or None, defaults to 256): the style image's shorter side for the VGG statistics
                (texture scale); None uses it as given.
            style_features: a precomputed style vector (B, 2944) instead of ``style_image``.
            output_type: ``"pil"``, ``"np"`` (B, H, W, 3), ``"pt"`` (B, 3, H, W), both in [0, 1], or ``"latent"``.
            return_dict: return an ``ArtFusionPipelineOutput`` rather than a tuple.
            callback_on_step_end: ``fn(pipe, step_index, timestep, callback_kwargs) -> dict`` called after each
                step with the tensors named in ``callback_on_step_end_tensor_inputs`` (``latents``,
                ``noise_pred``: the guided ε, ``pred_original_sample``); a returned ``latents`` replaces them.
            batch_guidance (`bool`, defaults to True): all guidance branches in one UNet call per step (False runs
                them one by one: the same result, slower; kept to measure what batching buys).
            vae_tiling (`bool` or None): encode/decode in overlapping tiles, so very large pictures fit in memory;
                None turns it on above 1024 px.
            timestep_spacing (`"original"` or `"leading"`, defaults to ``"original"``): the DDIM grid. The original
                code takes every c-th timestep from 0 with c = 1000 // steps, plus 1 (``original_timesteps``): where
                ``steps`` does not divide 1000 that is one evaluation more than diffusers' ``"leading"`` spacing
                (6 steps → 997, 831, …, 1: seven evaluations). Both are the same where ``steps`` divides 1000.
        """
        self._interrupt = False
        # 1. Check inputs
        self.check_inputs(
            num_inference_steps,
            content_guidance_scale,
            style_guidance_scale,
            eta,
            init_noise,
            output_type,
            list(callback_on_step_end_tensor_inputs),
            self._callback_tensor_inputs,
        )
        if style_image is None and style_features is None:
            raise ValueError("Pass style_image or style_features.")
        device = self._execution_device

        # 2. Content: network size, then the content condition
        first = content_image[0] if isinstance(content_image, list) else content_image
        if isinstance(first, PIL.Image.Image):
            original_size = first.size
        elif isinstance(content_image, np.ndarray):
            original_size = (content_image.shape[-2], content_image.shape[-3])
        else:
            original_size = (content_image.shape[-1], content_image.shape[-2])
        network_size = self.network_size(*original_size)
        if vae_tiling if vae_tiling is not None else max(network_size) > 1024:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()
        content = self.encode_content(self._to_pixels(content_image, network_size, device))
        batch = content.shape[0]

        # 3. Style: the VGG statistics (cached) and the null style
        if style_features is None:
            style_features = self.encode_style(self.prepare_style(style_image, style_size, device))
        style = style_features.to(device=device, dtype=torch.float32)
        if style.shape[0] == 1 and batch > 1:
            style = style.expand(batch, -1)
        null_style = self.unet.null_style.float().expand(batch, -1)

        # 4. Guidance branches, batched: [full, no content (if s_c ≠ 1), no style (if s_s ≠ 1)]
        contents, styles = [content], [style]
        if content_guidance_scale != 1.0:
            contents.append(torch.zeros_like(content))
            styles.append(style)
        if style_guidance_scale != 1.0:
            contents.append(content)
            styles.append(null_style)
        branches = len(contents)
        unet_dtype = self.unet.dtype  # looked up once: the property walks every submodule
        content_batch = torch.cat(contents).to(unet_dtype)
        style_batch = torch.cat(styles).to(unet_dtype)

        # 5. Timesteps and start noise
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if timestep_spacing == "original":  # the step ratio (used for the previous timestep) stays 1000 // steps
            self.scheduler.timesteps = original_timesteps(num_inference_steps, self.scheduler.config).to(device)
        elif timestep_spacing != "leading":
            raise ValueError(f"timestep_spacing must be 'original' or 'leading', not {timestep_spacing!r}")
        timesteps = self.scheduler.timesteps
        shape = tuple(content.shape)
        if latents is None:
            latents = self._initial_noise(shape, init_noise, generator, device)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} for this content, got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma

        # 6. Denoising loop (latents stay float32; the UNet runs in its own dtype)
        noise_pred = pred_original_sample = None
        compiled = is_compiled_module(self.unet)
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:  # set by a callback (a cancel): stop denoising here
                    break
                model_input = torch.cat([latents] * branches).to(unet_dtype)
                if compiled:
                    mark_step_begin()
                if batch_guidance:
                    eps_all = self.unet(model_input, t, content_batch, style_batch).sample.float()
                else:
                    eps_all = torch.cat(
                        [
                            self.unet(x, t, c, s).sample.float()
                            for x, c, s in zip(
                                model_input.chunk(branches),
                                content_batch.chunk(branches),
                                style_batch.chunk(branches),
                                strict=True,
                            )
                        ]
                    )
                if compiled:
                    eps_all = eps_all.clone()  # a CUDA-graph output is overwritten by the next replay
                eps, *unconditional = eps_all.chunk(branches)
                noise_pred = eps
                scales = []
                if content_guidance_scale != 1.0:
                    scales.append(content_guidance_scale)
                if style_guidance_scale != 1.0:
                    scales.append(style_guidance_scale)
                for scale, eps_null in zip(scales, unconditional, strict=True):
                    noise_pred = noise_pred + (scale - 1.0) * (eps - eps_null)
                step = self.scheduler.step(noise_pred, t, latents, eta=eta, generator=generator)
                latents, pred_original_sample = step.prev_sample, step.pred_original_sample

                values = {"latents": latents, "noise_pred": noise_pred, "pred_original_sample": pred_original_sample}
                latents = self.step_end(callback_on_step_end, i, t, callback_on_step_end_tensor_inputs, values)
                progress_bar.update()

        # 7. Decode, back to the content's own size, and format
        if output_type == "latent":
            images = latents
        else:
            mean, std = self._latent_normalisation(device)
            decoded = self.vae.decode((latents * std + mean).to(self.vae.dtype)).sample.float()
            images = ((decoded + 1.0) / 2.0).clamp(0.0, 1.0)
            if network_size != original_size:
                images = F.interpolate(
                    images, size=(original_size[1], original_size[0]), mode="bicubic", antialias=True
                ).clamp(0.0, 1.0)
            images = IMAGE_PROCESSOR.postprocess(images, output_type=output_type, do_denormalize=[False] * len(images))

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ArtFusionPipelineOutput(images=images)
