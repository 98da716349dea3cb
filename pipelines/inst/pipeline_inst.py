"""InSTPipeline: apply a learned InST style to a content image (Zhang et al., CVPR 2023).

Spec: ../shared/research/inst.md §3. The algorithm ("stochastic inversion", then DDIM with CFG):
1. the style token = mapper(CLIP image embedding of the style), put in place of ``*`` in the prompt;
2. z = 0.18215 · VAE posterior *sample* of the content (optionally AdaIN'd to the style latent);
3. T = int(strength·1000): x_T = √ᾱ_T·z + √(1−ᾱ_T)·n, ε̂ = ε(x_T, T, c) (one conditional call, no CFG),
   then z_enc = √ᾱ_T·z + √(1−ᾱ_T)·ε̂ (re-noise the clean latent with the *predicted* noise);
4. DDIM (η = 0) over the last int(strength·steps) of ``steps`` timesteps with CFG (uncond prompt ""), decode.

``timestep_mode="faithful"`` reproduces the original's noise-level mismatch (noised at index 700, first
denoised as t = 681 for strength 0.7 / 50 steps); ``"aligned"`` noises at the first decode timestep instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from pipelines.core.pipeline_mixins import InterruptibleMixin
from pipelines.inst.mapper import StyleMapper

PLACEHOLDER = "*"
SIZE_MULTIPLE = 8
ClipInputMode = Literal["paper", "code"]


@dataclass
class InSTPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


@dataclass
class StyleConditioning:
    """Everything inference needs from a learned style; the style image itself is no longer needed.

    ``image_embeds``: the L2-normalised CLIP image embedding of the style image (in ``clip_mode``);
    ``latent_mean``/``latent_std``: the VAE posterior of the style image (for AdaIN, and because the original
    draws a style latent sample first: keeping that draw keeps seeds compatible with the original).
    """

    mapper: StyleMapper
    image_embeds: torch.Tensor  # (1, dim)
    latent_mean: torch.Tensor  # (1, 4, h, w), unscaled
    latent_std: torch.Tensor
    clip_mode: ClipInputMode


# diffusers' own image conversions (no resizing: sizes are chosen by the pipeline). Its preprocessing computes
# what the original does (x/255 in float32, then 2x − 1), bit for bit.
IMAGE_PROCESSOR = VaeImageProcessor(do_resize=False)


def image_to_pixels(image: PIL.Image.Image) -> torch.Tensor:
    """PIL → (1, 3, H, W) float32 in [-1, 1]."""
    return IMAGE_PROCESSOR.preprocess(image.convert("RGB"))


def clip_input(image: PIL.Image.Image, mode: ClipInputMode) -> np.ndarray:
    """The uint8 picture handed to the CLIP image processor.

    ``paper``: the true pixels. ``code``: what the official code really feeds CLIP: its [-1, 1] float image cast
    to uint8, which maps −1 (pixel 0) → 255, +1 (pixel 255) → 1 and everything else → 0. Written out
    explicitly, because the float → uint8 cast of negative numbers differs between platforms.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if mode == "paper":
        return pixels
    if mode != "code":
        raise ValueError(f"clip mode must be 'paper' or 'code', got {mode!r}")
    out = np.zeros_like(pixels)
    out[pixels == 0] = 255
    out[pixels == 255] = 1
    return out


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-channel AdaIN on latents: content statistics replaced by the style's (unbiased var + eps)."""
    c_mean, s_mean = content.mean((2, 3), keepdim=True), style.mean((2, 3), keepdim=True)
    c_std = (content.var((2, 3), keepdim=True, unbiased=True) + eps).sqrt()
    s_std = (style.var((2, 3), keepdim=True, unbiased=True) + eps).sqrt()
    return (content - c_mean) / c_std * s_std + s_mean


class InSTPipeline(InterruptibleMixin, DiffusionPipeline):
    r"""Stable Diffusion 1.x + a CLIP image encoder + an InST style mapper.

    Components: ``vae``, ``text_encoder``, ``tokenizer``, ``unet``, ``scheduler`` (DDIM, SD config) from any SD 1.x
    model, and ``image_encoder`` (``CLIPVisionModelWithProjection``) with ``feature_extractor``
    (``CLIPImageProcessor``), by default ``openai/clip-vit-large-patch14``. The mapper is per style and is
    passed to the calls (see ``StyleConditioning``).
    """

    model_cpu_offload_seq = "image_encoder->text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: DDIMScheduler,
        image_encoder: CLIPVisionModelWithProjection,
        feature_extractor: CLIPImageProcessor,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
        )

    @classmethod
    def from_parts(
        cls, base_model: str, clip_model: str, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> InSTPipeline:
        """Assemble from an SD 1.x repo id or folder and a CLIP image-encoder repo id or folder."""
        load = {"dtype": dtype} if dtype is not None else {}
        return cls(
            vae=AutoencoderKL.from_pretrained(base_model, subfolder="vae", **load, **kwargs),
            text_encoder=CLIPTextModel.from_pretrained(base_model, subfolder="text_encoder", **load, **kwargs),
            tokenizer=CLIPTokenizer.from_pretrained(base_model, subfolder="tokenizer", **kwargs),
            unet=UNet2DConditionModel.from_pretrained(base_model, subfolder="unet", **load, **kwargs),
            scheduler=DDIMScheduler.from_pretrained(base_model, subfolder="scheduler", **kwargs),
            image_encoder=CLIPVisionModelWithProjection.from_pretrained(clip_model, **load, **kwargs),
            feature_extractor=CLIPImageProcessor.from_pretrained(clip_model, **kwargs),
        )

    # ---- conditioning ----------------------------------------------------------------------------------

    @property
    def placeholder_id(self) -> int:
        ids = self.tokenizer(PLACEHOLDER)["input_ids"]
        if len(ids) != 3:
            raise ValueError(f"the tokenizer splits {PLACEHOLDER!r} into several tokens: {ids}")
        return ids[1]

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def clip_image_embeds(self, image: PIL.Image.Image, mode: ClipInputMode) -> torch.Tensor:
        """L2-normalised CLIP image embedding (1, dim), as ``CLIPModel.image_embeds`` gives it."""
        pixel_values = self.feature_extractor(images=clip_input(image, mode), return_tensors="pt").pixel_values
        encoder = self.image_encoder
        embeds = encoder(pixel_values.to(encoder.device, encoder.dtype)).image_embeds.float()
        return embeds / embeds.norm(dim=-1, keepdim=True)

    def token_ids(self, prompt: str) -> torch.Tensor:
        return self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.text_encoder.device)

    def encode_prompt(self, prompt: str, token: torch.Tensor | None) -> torch.Tensor:
        """Text-encoder hidden states (1, 77, dim) with every ``*`` input embedding replaced by ``token``.

        Differentiable in ``token`` (training uses this too).
        """
        ids = self.token_ids(prompt)
        embedding = self.text_encoder.get_input_embeddings()

        def substitute(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            mask = (args[0] == self.placeholder_id)[..., None]
            return torch.where(mask, token.to(output.dtype)[:, None, :], output)

        hook = embedding.register_forward_hook(substitute) if token is not None else None
        try:
            return self.text_encoder(ids)[0]
        finally:
            if hook is not None:
                hook.remove()

    @torch.no_grad()
    def encode_style(
        self, style_image: PIL.Image.Image, mapper: StyleMapper, clip_mode: ClipInputMode
    ) -> StyleConditioning:
        """Everything inference needs from a style image (CLIP embedding, VAE posterior) with its mapper."""
        pixels = image_to_pixels(style_image).to(self.vae.device, self.vae.dtype)
        posterior = self.vae.encode(pixels).latent_dist
        return StyleConditioning(
            mapper=mapper,
            image_embeds=self.clip_image_embeds(style_image, clip_mode),
            latent_mean=posterior.mean.float(),
            latent_std=posterior.std.float(),
            clip_mode=clip_mode,
        )

    # ---- the call ----------------------------------------------------------------------------------------

    def inversion_timesteps(self, strength: float, num_inference_steps: int) -> tuple[int, torch.Tensor]:
        """(noising index T, the DDIM timesteps to run), as the original computes them."""
        if not 0.0 < strength < 1.0:
            raise ValueError(f"strength must be in (0, 1) for InST (1.0 would index past the schedule), got {strength}")
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        decode_steps = int(strength * num_inference_steps)  # int() truncates, as the original does
        timesteps = self.scheduler.timesteps[num_inference_steps - decode_steps :]
        return int(strength * self.scheduler.config.num_train_timesteps), timesteps

    @torch.no_grad()
    def __call__(
        self,
        content_image: PIL.Image.Image,
        style: StyleConditioning,
        strength: float = 0.7,
        num_inference_steps: int = 50,
        guidance_scale: float = 10.0,
        prompt: str = PLACEHOLDER,
        negative_prompt: str = "",
        use_adain: bool = False,
        timestep_mode: Literal["faithful", "aligned"] = "faithful",
        inversion: Literal["stochastic", "plain"] = "stochastic",
        generator: torch.Generator | None = None,
        output_type: Literal["pil", "np", "pt", "latent"] = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict[str, Any]], dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> InSTPipelineOutput | tuple:
        r"""Stylize ``content_image`` with a learned style.

        Args:
            content_image: the picture to restyle; sides are rounded to multiples of 8 (a PIL image already at
                such a size is used as is) and the result comes back at the content's own size.
            style: the learned style (``StyleConditioning``; see ``encode_style`` and the style library).
            strength (`float`, defaults to 0.7): in (0, 1); more is more style and less content. Noising index
                int(strength·1000); DDIM runs the last int(strength·steps) timesteps.
            num_inference_steps (`int`, defaults to 50): DDIM steps of the full schedule.
            guidance_scale (`float`, defaults to 10.0): CFG scale (the original hard-codes 10).
            prompt / negative_prompt: the conditional prompt must contain ``*`` (the style token); the
                unconditional one is "" in the original.
            use_adain: give the content latent the style latent's per-channel mean and std first.
            timestep_mode: ``"faithful"`` (the original's index mismatch) or ``"aligned"``.
            inversion: ``"stochastic"`` (InST) or ``"plain"``: ordinary img2img noising with random noise at the
                first DDIM timestep (no style sample is drawn unless AdaIN needs it), for comparisons.
            generator: draws, in the original's order, the style posterior sample, the content posterior
                sample and the inversion noise. A CPU generator seeded like the original's ``seed_everything``
                reproduces its CPU runs.
            output_type: ``"pil"``, ``"np"``/``"pt"`` in [0, 1], or ``"latent"``.
            callback_on_step_end: ``fn(pipe, step_index, timestep, tensors) -> dict`` after each DDIM step with
                ``latents`` and/or ``noise_pred`` (the guided ε).
        """
        if inversion not in ("stochastic", "plain"):
            raise ValueError(f"inversion must be 'stochastic' or 'plain', got {inversion!r}")
        if timestep_mode not in ("faithful", "aligned"):
            raise ValueError(f"timestep_mode must be 'faithful' or 'aligned', got {timestep_mode!r}")
        if PLACEHOLDER not in prompt:
            raise ValueError(f"the prompt must contain the style token {PLACEHOLDER!r}, got {prompt!r}")
        device, dtype = self._execution_device, self.unet.dtype

        self._interrupt = False
        # 1. Timesteps: noising index and the DDIM steps that follow
        noise_index, timesteps = self.inversion_timesteps(strength, num_inference_steps)
        if timestep_mode == "aligned":
            noise_index = int(timesteps[0])

        # 2. Conditioning: the style token in the prompt, and the unconditional prompt
        style.mapper.eval()
        token = style.mapper(style.image_embeds.to(style.mapper.device, style.mapper.dtype)).to(device)
        cond = self.encode_prompt(prompt, token).to(dtype)
        uncond = self.encode_prompt(negative_prompt, token).to(dtype)

        # 3. Latents: style sample first (the original's RNG order), then the content sample
        original_size = content_image.size
        multiple = max(SIZE_MULTIPLE, self.vae_scale_factor)
        size = tuple(max(multiple, round(side / multiple) * multiple) for side in original_size)
        if size != original_size:
            content_image = content_image.resize(size, PIL.Image.Resampling.LANCZOS)
        scaling = self.vae.config.scaling_factor

        def draw(shape: torch.Size) -> torch.Tensor:
            return randn_tensor(tuple(shape), generator=generator, device=device, dtype=torch.float32)

        style_latent = None
        if inversion == "stochastic" or use_adain:  # the original always draws the style sample first
            mean, std = style.latent_mean.to(device), style.latent_std.to(device)
            style_latent = scaling * (mean + std * draw(mean.shape))
        posterior = self.vae.encode(image_to_pixels(content_image).to(device, self.vae.dtype)).latent_dist
        content_latent = scaling * (posterior.mean.float() + posterior.std.float() * draw(posterior.mean.shape))
        init = adain(content_latent, style_latent) if use_adain else content_latent

        # 4. Stochastic inversion: noise, predict that noise with the style prompt, re-noise with the prediction
        if inversion == "plain":
            latents = self.scheduler.add_noise(init, draw(init.shape), timesteps[:1])
        else:
            alpha = self.scheduler.alphas_cumprod[noise_index].to(device)
            x_noisy = alpha.sqrt() * init + (1 - alpha).sqrt() * draw(init.shape)
            t_noise = torch.tensor([noise_index], device=device)
            eps_hat = self.unet(x_noisy.to(dtype), t_noise, encoder_hidden_states=cond).sample.float()
            latents = alpha.sqrt() * init + (1 - alpha).sqrt() * eps_hat

        # 5. DDIM with classifier-free guidance, both branches in one batched call
        context = torch.cat([uncond, cond])
        noise_pred = None
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:  # set by a callback (a cancel): stop denoising here
                    break
                eps_uncond, eps_cond = (
                    self.unet(torch.cat([latents] * 2).to(dtype), t, encoder_hidden_states=context)
                    .sample.float()
                    .chunk(2)
                )
                noise_pred = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
                latents = self.scheduler.step(noise_pred, t, latents, eta=0.0).prev_sample
                values = {"latents": latents, "noise_pred": noise_pred}
                latents = self.step_end(callback_on_step_end, i, t, callback_on_step_end_tensor_inputs, values)
                progress_bar.update()

        # 6. Decode, back to the content's size
        if output_type == "latent":
            images = latents
        else:
            decoded = self.vae.decode((latents / scaling).to(self.vae.dtype)).sample.float()
            images = ((decoded + 1) / 2).clamp(0, 1)
            if size != original_size:
                images = F.interpolate(images, size=original_size[::-1], mode="bicubic", antialias=True).clamp(0, 1)
            images = IMAGE_PROCESSOR.postprocess(images, output_type=output_type, do_denormalize=[False] * len(images))
        self.maybe_free_model_hooks()
        return InSTPipelineOutput(images=images) if return_dict else (images,)
