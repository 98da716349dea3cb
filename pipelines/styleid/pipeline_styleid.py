"""StyleIDPipeline: training-free style transfer by attention injection in Stable Diffusion 1.x.

StyleID (Chung, Hyun & Heo, CVPR 2024). Spec with every quirk of the reference code:
../shared/fixtures/styleid/SPEC.md. In short:
1. content and style are VAE-encoded (posterior *sample*) and DDIM-inverted with the empty prompt up to t = 999,
   saving the self-attention q (content) and k, v (style) of output blocks 6–11 at every sampling timestep;
2. the start latent is AdaIN(content z_T, style z_T) (per channel, unbiased std);
3. DDIM sampling with, in those blocks' self-attention, the query q̂ = γ·q_content + (1−γ)·q_current, the style's
   keys and values, and the logits multiplied by the temperature T;
4. decode.

The injection is an attention processor (``StyleInjectionProcessor``) on the ``attn1`` of the mapped up-block
transformers only; it records during the inversion and injects during sampling, and the UNet's own processors
come back after every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from transformers import CLIPTextModel, CLIPTokenizer

from pipelines.core.memo import Memo, array_digest
from pipelines.core.pipeline_mixins import InterruptibleMixin, check_output_type

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor
Mode = Literal["original", "general"]
DEFAULT_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
ORIGINAL_SIZE = 512  # the reference's hard-coded square (load_img)
FEAT_MERGE_LENGTH = 50  # the reference's hard-coded feature-merge list length (SPEC §5)
PAPER_LAYERS = (6, 7, 8, 9, 10, 11)
# Inversions are per picture and per settings. Saved features are large (SD at 512 px, 50 steps, bf16: about
# 0.6 GB of content queries, 1.2 GB of style keys and values), so only a few are kept.
INVERSION_MEMO_SIZE = 4

IMAGE_PROCESSOR = VaeImageProcessor(do_resize=False)  # diffusers' [0, 1] ↔ PIL/np/pt conversions


@dataclass
class StyleIDPipelineOutput(BaseOutput):
    """``images``: list of PIL images, an array (B, H, W, 3) or a tensor (B, 3, H, W) in [0, 1], or the final
    latents. ``intermediates``: with ``return_intermediates=True``, what the run computed on the way (see
    ``StyleIDPipeline.__call__``); otherwise None."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    intermediates: dict[str, Any] | None = None


@dataclass(frozen=True)
class StyleIDSchedule:
    """Which UNet calls a run makes, derived once from the step counts, ``start_step`` and the mode.

    - ``inversion_timesteps``/``inversion_targets``: each inversion step evaluates ε at t and moves to its
      target; the last target is 999. Only the steps up to the one at ``feature_timesteps[0]`` are listed:
      later ones (the reference runs them when the grids differ) influence nothing.
    - ``feature_timesteps``: the descending sampling grid g_0 > g_1 > …; features for sampling position i are
      saved by the inversion step at g_i.
    - ``feature_index``: inversion step → feature index i, for the steps whose t is in the sampling grid.
    - ``sampling_positions``: the executed positions i of the sampling grid (the first N − s are skipped).
    - ``injected``: for each executed position, whether its UNet call gets the saved features.
    """

    inversion_timesteps: tuple[int, ...]
    inversion_targets: tuple[int, ...]
    feature_timesteps: tuple[int, ...]
    feature_index: Mapping[int, int]
    sampling_positions: tuple[int, ...]
    injected: tuple[bool, ...]

    @property
    def sampling_timesteps(self) -> tuple[int, ...]:
        return tuple(self.feature_timesteps[i] for i in self.sampling_positions)


@dataclass
class StyleIDInversion:
    """One picture's DDIM inversion.

    ``latents``: [0] the VAE latent, [k] the latent after inversion step k; ``noise_preds``: ε of each step;
    ``start_latent``: the latent after the step at the first sampling timestep (t = 999 when the grids agree);
    ``features``: feature index → output block L → {"q"/"k"/"v": (heads, tokens, d_head)}, the kinds kept.
    """

    latents: list[torch.Tensor]
    noise_preds: list[torch.Tensor]
    start_latent: torch.Tensor
    features: dict[int, dict[int, dict[str, torch.Tensor]]]


class InversionInterrupted(Exception):
    """The interrupt flag was set during an inversion (nothing is remembered)."""


@dataclass
class StyleAttentionState:
    """What the ``StyleInjectionProcessor``s of one pipeline do on the next UNet call.

    - ``record``: a dict to fill, output block → {kind: tensor} for the kinds in ``keep``, or None;
    - ``inject``: output block → (content q, style k, style v), or None; blocks without an entry attend plainly;
    - ``gamma``/``temperature``: the query blend and the logit multiplier of injected blocks;
    - ``capture``: for debugging, a dict that each processor fills with its input, current and blended query,
      attention probabilities (injected blocks) and output, or None.
    """

    record: dict[int, dict[str, torch.Tensor]] | None = None
    keep: tuple[str, ...] = ()
    inject: Mapping[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    gamma: float = 0.75
    temperature: float = 1.5
    capture: dict[int, dict[str, torch.Tensor]] | None = None


class StyleInjectionProcessor:
    """Self-attention processor of one injectable ``attn1`` (output block ``layer``) for StyleID.

    Computes the ordinary attention, except that with features for its block in ``state.inject`` the query is
    γ·q_content + (1−γ)·q_current, the keys and values are the style's (replacing the current ones), and the logits
    are multiplied by T; with ``state.record`` set it stores its q, k, v first (layout (batch·heads, tokens, d),
    as ``Attention.head_to_batch_dim`` gives).
    """

    def __init__(self, layer: int, state: StyleAttentionState) -> None:
        self.layer = layer
        self.state = state

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or attn.spatial_norm is not None:
            raise ValueError("StyleInjectionProcessor only serves plain self-attention (attn1 of SD 1.x)")
        state = self.state
        residual = hidden_states
        context = hidden_states
        if attn.group_norm is not None:
            context = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(context))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        if state.record is not None:
            tensors = {"q": query, "k": key, "v": value}
            state.record[self.layer] = {kind: tensors[kind] for kind in state.keep}

        current_query, scale = query, attn.scale
        injected = state.inject.get(self.layer) if state.inject is not None else None
        if injected is not None:
            content_query, key, value = injected
            query = state.gamma * content_query + (1.0 - state.gamma) * current_query
            scale = attn.scale * state.temperature
        out = F.scaled_dot_product_attention(query, key, value, scale=scale)
        if state.capture is not None:
            captured = {"hidden_in": hidden_states, "q_cs": current_query, "q_hat": query}
            if injected is not None:
                captured["attn_probs"] = (query @ key.transpose(-1, -2) * scale).softmax(dim=-1)
            state.capture[self.layer] = captured

        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(out)))
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor
        if state.capture is not None:
            state.capture[self.layer]["out"] = out
        return out


def adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The reference's AdaIN of latents: per channel over (0, 2, 3), unbiased std, no ε in the denominator.

    (A std of exactly 0, a perfectly flat latent, is the one case guarded: it would give NaN.)
    """
    content_std, content_mean = torch.std_mean(content, dim=(0, 2, 3), keepdim=True)
    style_std, style_mean = torch.std_mean(style, dim=(0, 2, 3), keepdim=True)
    content_std = content_std.clamp_min(torch.finfo(content_std.dtype).tiny)
    return (content - content_mean) / content_std * style_std + style_mean


def to_pil(image: ImageInput) -> PIL.Image.Image:
    """One picture as an RGB PIL image: PIL as is; arrays (H, W, 3) uint8 or [0, 1] floats; tensors (3, H, W) or
    (1, 3, H, W) in [0, 1]."""
    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        tensor = image.detach().float().cpu()
        if tensor.ndim == 4:
            if tensor.shape[0] != 1:
                raise ValueError(f"StyleID takes one picture at a time, got a batch of {tensor.shape[0]}")
            tensor = tensor[0]
        image = tensor.permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        array = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"expected a picture (H, W, 3), got an array of shape {image.shape}")
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return PIL.Image.fromarray(array)
    raise TypeError(f"expected a PIL image, an array or a tensor, got {type(image).__name__}")


def centre_crop_square(image: PIL.Image.Image) -> PIL.Image.Image:
    """torchvision's ``CenterCrop(min(w, h))``: offsets int(round((side − s)/2)), round half to even."""
    side = min(image.size)
    left = int(round((image.width - side) / 2.0))
    top = int(round((image.height - side) / 2.0))
    return image.crop((left, top, left + side, top + side))


class StyleIDPipeline(InterruptibleMixin, DiffusionPipeline):
    # ``interrupt`` (set from a callback): during the denoising loop it stops there; during an inversion it skips
    # sampling.
    r"""StyleID (Chung, Hyun & Heo, CVPR 2024) on Stable Diffusion 1.x.

    Components: ``vae``, ``text_encoder``, ``tokenizer``, ``unet`` and ``scheduler`` of any SD 1.x model. The
    scheduler is always turned into the reference's DDIM (scaled-linear betas of the model, ``set_alpha_to_one``
    False, ``steps_offset`` 1, "leading" spacing). A full SD folder or repo loads as it is: its
    ``safety_checker``, ``feature_extractor`` and ``image_encoder`` are not loaded (StyleID does not use them).

    ``pipe.inversion_memo`` remembers each picture's inversion (start latent and saved features) by its pixels, its
    size, the schedule, the injected layers and the VAE noise, so a second photo in a style already seen inverts
    only the photo. Results are bit-identical with and without it.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["safety_checker", "feature_extractor", "image_encoder"]
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: Any,
        safety_checker: Any = None,
        feature_extractor: Any = None,
        image_encoder: Any = None,
        requires_safety_checker: bool = False,
    ) -> None:
        super().__init__()
        scheduler = DDIMScheduler.from_config(
            scheduler.config,
            set_alpha_to_one=False,
            steps_offset=1,
            timestep_spacing="leading",
            clip_sample=False,
            thresholding=False,
        )
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,  # accepted so that full SD folders load, and dropped
            feature_extractor=None,
            image_encoder=None,
        )
        self.inversion_memo: Memo[StyleIDInversion] = Memo(INVERSION_MEMO_SIZE)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any = DEFAULT_REPO, **kwargs: Any) -> StyleIDPipeline:
        """``DiffusionPipeline.from_pretrained`` from an SD 1.x folder or repo id; the safety checker, feature
        extractor and image encoder a full SD layout lists are neither downloaded nor loaded."""
        for name in cls._optional_components:
            kwargs.setdefault(name, None)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # ---- sizes and pictures ----------------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Sides are multiples of this in general mode: the VAE's factor times the UNet's downsampling."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def network_size(self, width: int, height: int, area: int | None = None) -> tuple[int, int]:
        """(width, height) rounded to multiples of ``size_multiple`` (at least one multiple); with ``area``, first
        scaled (aspect kept) to about that many pixels."""
        if area is not None:
            scale = math.sqrt(area / (width * height))
            width, height = width * scale, height * scale
        multiple = self.size_multiple
        return tuple(max(multiple, round(side / multiple) * multiple) for side in (width, height))

    def preprocess_image(
        self,
        image: ImageInput,
        mode: Mode,
        height: int | None = None,
        width: int | None = None,
        area: int | None = None,
    ) -> PIL.Image.Image:
        """The picture as the network sees it.

        ``original``: centre crop to the shorter side, LANCZOS to ``width``×``height`` (default 512×512), as the
        reference's ``load_img``. ``general``: no crop; the picture's own size (or ``width``×``height``; or scaled to
        ``area`` pixels) rounded to multiples of ``size_multiple``, LANCZOS when that changes it.
        """
        picture = to_pil(image)
        if mode == "original":
            size = (width or ORIGINAL_SIZE, height or ORIGINAL_SIZE)
            return centre_crop_square(picture).resize(size, PIL.Image.Resampling.LANCZOS)
        if width is not None or height is not None:
            size = self.network_size(width or picture.width, height or picture.height)
        else:
            size = self.network_size(picture.width, picture.height, area)
        return picture if picture.size == size else picture.resize(size, PIL.Image.Resampling.LANCZOS)

    def prepare_images(
        self,
        content_image: ImageInput,
        style_image: ImageInput,
        mode: Mode,
        height: int | None = None,
        width: int | None = None,
    ) -> tuple[PIL.Image.Image, PIL.Image.Image]:
        """(content, style) at network size. In general mode the style is scaled to about the content's area
        (aspect kept), so its texture scale relative to the picture stays what the reference's 512² pairs give."""
        content = self.preprocess_image(content_image, mode, height, width)
        if mode == "original":
            style = self.preprocess_image(style_image, mode, height, width)
        else:
            style = self.preprocess_image(style_image, mode, area=content.width * content.height)
        return content, style

    def latent_shape(self, picture: PIL.Image.Image) -> tuple[int, int, int, int]:
        """The latent shape of a picture at network size (the shape of its VAE noise)."""
        factor = self.vae_scale_factor
        return (1, self.vae.config.latent_channels, picture.height // factor, picture.width // factor)

    # ---- conditioning and encoding ---------------------------------------------------------------------

    def prompt_token_ids(self, prompt: str = "") -> torch.Tensor:
        return self.tokenizer(
            prompt, padding="max_length", max_length=self.tokenizer.model_max_length, return_tensors="pt"
        ).input_ids

    @torch.no_grad()
    def encode_prompt(self, prompt: str = "", device: torch.device | None = None) -> torch.Tensor:
        """Text-encoder last hidden state (1, 77, D); StyleID conditions every call on the empty prompt."""
        device = device or self._execution_device
        return self.text_encoder(self.prompt_token_ids(prompt).to(device))[0]

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z₀ = scaling · (posterior mean + posterior std · noise): the posterior *sample*, with its noise given."""
        posterior = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist
        sample = posterior.mean.float() + posterior.std.float() * noise.to(posterior.mean.device, torch.float32)
        return self.vae.config.scaling_factor * sample

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE decode of ``latents`` / scaling, before any clamping (float32)."""
        scaled = latents / self.vae.config.scaling_factor
        return self.vae.decode(scaled.to(self.vae.dtype)).sample.float()

    # ---- schedule ----------------------------------------------------------------------------------------

    def make_schedule(
        self,
        num_inference_steps: int,
        num_inversion_steps: int,
        start_step: int,
        mode: Mode,
        attention_injection: bool = True,
        injection_fraction: float = 1.0,
    ) -> StyleIDSchedule:
        """The run's UNet calls (see ``StyleIDSchedule``).

        ``original`` reproduces the reference, including its errors as ``ValueError``: the inversion grid is
        1 + (1000 // N_inv)·i ending at 999; the inversion stops when its step counter exceeds the *timestep*
        g[N_inv − 1 − s]; positions with index N − 1 − i ≥ s are skipped; features are injected only from
        position 50 − s on (the hard-coded 50 of ``feat_merge``).
        ``general``: the inversion visits the union of both grids (so every sampling step has its features),
        never stops early, s is capped at N − 1 (the default keeps "every step but the first" at any N), and every
        executed step is injected.
        In both, ``injection_fraction`` < 1 keeps the injection on the first (noisiest) share of the injected
        steps only.
        """
        total = self.scheduler.config.num_train_timesteps
        steps, inversion_steps = num_inference_steps, num_inversion_steps
        grid = tuple(1 + (total // steps) * j for j in range(steps))[::-1]  # descending sampling grid
        position_of = {t: i for i, t in enumerate(grid)}
        inversion_grid = [1 + (total // inversion_steps) * i for i in range(inversion_steps)]

        if mode == "original":
            end_index = inversion_steps - 1 - start_step
            if not 0 <= end_index < steps:
                raise ValueError(
                    f"the original fails (KeyError) for {inversion_steps} inversion steps with start_step "
                    f"{start_step}: num_inversion_steps − 1 − start_step must lie in [0, {steps - 1}]"
                )
            end_step = grid[end_index]  # a timestep, compared with the step counter (SPEC §4)
            inversion_grid = [t for i, t in enumerate(inversion_grid) if i <= end_step]
            skip = start_step
        else:
            inversion_grid = sorted(set(inversion_grid) | set(grid))
            skip = min(start_step, steps - 1)
        if grid[0] not in inversion_grid:
            raise ValueError(
                f"the inversion never reaches the first sampling timestep {grid[0]} (the original fails with "
                f"KeyError 'z_enc'): use num_inversion_steps = num_inference_steps and start_step < it"
            )
        inversion_grid = inversion_grid[: inversion_grid.index(grid[0]) + 1]  # later steps influence nothing
        targets = [*inversion_grid[1:], total - 1]
        feature_index = {k: position_of[t] for k, t in enumerate(inversion_grid) if t in position_of}

        positions = tuple(i for i in range(steps) if steps - 1 - i < skip)
        if not attention_injection:
            injected = [False] * len(positions)
        elif mode == "original":
            injected = [i >= FEAT_MERGE_LENGTH - start_step for i in positions]
        else:
            injected = [True] * len(positions)
        kept = round(injection_fraction * sum(injected))
        injected = [flag and sum(injected[:n]) < kept for n, flag in enumerate(injected)]
        saved = set(feature_index.values())
        missing = [positions[n] for n, flag in enumerate(injected) if flag and positions[n] not in saved]
        if missing:
            raise ValueError(
                f"no saved features for sampling positions {missing} (the original fails with KeyError): "
                "use num_inversion_steps = num_inference_steps"
            )
        return StyleIDSchedule(
            inversion_timesteps=tuple(inversion_grid),
            inversion_targets=tuple(targets),
            feature_timesteps=grid,
            feature_index=feature_index,
            sampling_positions=positions,
            injected=tuple(injected),
        )

    # ---- attention ---------------------------------------------------------------------------------------

    def attention_layer_names(self, layers: Sequence[int]) -> dict[int, str]:
        """Output block L → its self-attention module name (``up_blocks.{L // n}.attentions.{L % n}
        .transformer_blocks.0.attn1``, n = output blocks per up block). Blocks without attention (0–2 in SD) are
        left out, as the reference ignores them silently."""
        per_block = len(self.unet.up_blocks[0].resnets)
        count = per_block * len(self.unet.up_blocks)
        names = {}
        for layer in sorted(set(layers)):
            if not 0 <= layer < count:
                raise ValueError(f"injection layer {layer} does not exist (output blocks 0–{count - 1})")
            block = self.unet.up_blocks[layer // per_block]
            if getattr(block, "attentions", None):
                names[layer] = (
                    f"up_blocks.{layer // per_block}.attentions.{layer % per_block}.transformer_blocks.0.attn1"
                )
        return names

    @contextmanager
    def style_attention(self, layers: Sequence[int]) -> Iterator[StyleAttentionState]:
        """Within the block, the self-attention of output blocks ``layers`` runs ``StyleInjectionProcessor``s that
        share the yielded state; the UNet's own processors are restored on exit."""
        state = StyleAttentionState()
        saved = self.unet.attn_processors
        processors = dict(saved)
        for layer, name in self.attention_layer_names(layers).items():
            processors[f"{name}.processor"] = StyleInjectionProcessor(layer, state)
        self.unet.set_attn_processor(processors)
        try:
            yield state
        finally:
            self.unet.set_attn_processor(dict(saved))

    # ---- the three stages ----------------------------------------------------------------------------------

    @torch.no_grad()
    def invert(
        self,
        latent: torch.Tensor,
        schedule: StyleIDSchedule,
        layers: Sequence[int] = PAPER_LAYERS,
        keep: tuple[str, ...] = ("q", "k", "v"),
        prompt_embeds: torch.Tensor | None = None,
        callback: Callable[[DiffusionPipeline, int, int], None] | None = None,
    ) -> StyleIDInversion:
        """DDIM inversion of a VAE latent with the empty prompt, saving the kinds ``keep`` of q/k/v of ``layers``.

        Each step: ε = UNet(x, t), x ← √ā_next·(x − √(1−ā_t)·ε)/√ā_t + √(1−ā_next)·ε. ``callback(pipe, index,
        total)`` after each step; raises ``InversionInterrupted`` when the interrupt flag is set.
        """
        device = self._execution_device
        prompt_embeds = self.encode_prompt(device=device) if prompt_embeds is None else prompt_embeds
        unet_dtype = self.unet.dtype
        alphas = self.scheduler.alphas_cumprod.to(device)
        x = latent.to(device, torch.float32)
        latents, noise_preds, features = [x], [], {}
        start_latent = None
        total = len(schedule.inversion_timesteps)
        first_position = schedule.feature_timesteps[0]
        with self.style_attention(layers if keep else ()) as attention:
            attention.keep = keep
            for step, (t, target) in enumerate(
                zip(schedule.inversion_timesteps, schedule.inversion_targets, strict=True)
            ):
                if self.interrupt:
                    raise InversionInterrupted
                index = schedule.feature_index.get(step)
                attention.record = {} if index is not None and keep else None
                eps = self.unet(x.to(unet_dtype), t, encoder_hidden_states=prompt_embeds.to(unet_dtype)).sample
                eps = eps.float()
                if attention.record is not None:
                    features[index] = attention.record
                alpha, alpha_next = alphas[t], alphas[target]
                x = alpha_next.sqrt() * (x - (1 - alpha).sqrt() * eps) / alpha.sqrt() + (1 - alpha_next).sqrt() * eps
                latents.append(x)
                noise_preds.append(eps)
                if t == first_position:
                    start_latent = x
                if callback is not None:
                    callback(self, step, total)
        return StyleIDInversion(latents, noise_preds, start_latent, features)

    @staticmethod
    def prepare_start_latent(
        content: StyleIDInversion, style: StyleIDInversion, adain_init: bool = True
    ) -> torch.Tensor:
        """x_T: AdaIN(content start latent, style start latent), or the content's start latent."""
        if not adain_init:
            return content.start_latent
        return adain(content.start_latent, style.start_latent.to(content.start_latent.device))

    @staticmethod
    def injected_features(
        content: StyleIDInversion, style: StyleIDInversion, position: int, layers: Sequence[int]
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """For sampling position ``position``: output block → (content q, style k, style v)."""
        content_features, style_features = content.features[position], style.features[position]
        return {
            layer: (content_features[layer]["q"], style_features[layer]["k"], style_features[layer]["v"])
            for layer in layers
            if layer in content_features
        }

    @torch.no_grad()
    def denoise(
        self,
        latents: torch.Tensor,
        schedule: StyleIDSchedule,
        content: StyleIDInversion | None,
        style: StyleIDInversion | None,
        layers: Sequence[int] = PAPER_LAYERS,
        gamma: float = 0.75,
        temperature: float = 1.5,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        prompt_embeds: torch.Tensor | None = None,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict[str, Any]], dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> torch.Tensor:
        """DDIM (η-)sampling from ``latents`` over the schedule's executed positions, injecting the saved features
        where the schedule says; honours the interrupt flag between steps."""
        device = self._execution_device
        prompt_embeds = self.encode_prompt(device=device) if prompt_embeds is None else prompt_embeds
        unet_dtype = self.unet.dtype
        context = prompt_embeds.to(unet_dtype)
        self.scheduler.set_timesteps(len(schedule.feature_timesteps), device=device)
        timesteps = self.scheduler.timesteps
        latents = latents.to(device, torch.float32)
        with (
            self.style_attention(layers if any(schedule.injected) else ()) as attention,
            self.progress_bar(total=len(schedule.sampling_positions)) as progress_bar,
        ):
            attention.gamma, attention.temperature = gamma, temperature
            for n, (position, injected) in enumerate(zip(schedule.sampling_positions, schedule.injected, strict=True)):
                if self.interrupt:  # set by a callback (a cancel): stop denoising here
                    break
                t = timesteps[position]
                attention.inject = self.injected_features(content, style, position, layers) if injected else None
                noise_pred = self.unet(latents.to(unet_dtype), t, encoder_hidden_states=context).sample.float()
                latents = self.scheduler.step(noise_pred, t, latents, eta=eta, generator=generator).prev_sample
                values = {"latents": latents, "noise_pred": noise_pred}
                latents = self.step_end(callback_on_step_end, n, t, callback_on_step_end_tensor_inputs, values)
                progress_bar.update()
            attention.inject = None
        return latents

    # ---- remembered inversions -------------------------------------------------------------------------------

    def _inversion(
        self,
        pixels: torch.Tensor,
        noise: torch.Tensor,
        schedule: StyleIDSchedule,
        layers: Sequence[int],
        keep: tuple[str, ...],
        prompt_embeds: torch.Tensor,
        callback: Callable[[DiffusionPipeline, int, int], None] | None,
    ) -> tuple[StyleIDInversion, bool]:
        """The picture's inversion, from ``inversion_memo`` when it was computed before; (inversion, hit)."""
        layers = tuple(sorted(self.attention_layer_names(layers))) if keep else ()
        key = array_digest(
            pixels,
            array_digest(noise),
            schedule.inversion_timesteps,
            schedule.inversion_targets,
            tuple(sorted(schedule.feature_index.items())),
            layers,
            keep,
            str(self.unet.dtype),
            str(self.vae.dtype),
        )
        hits = self.inversion_memo.hits

        def compute() -> StyleIDInversion:
            latent = self.encode_image(pixels, noise)
            return self.invert(latent, schedule, layers, keep, prompt_embeds, callback)

        inversion = self.inversion_memo.get(key, compute)
        return inversion, self.inversion_memo.hits > hits

    # ---- the call ----------------------------------------------------------------------------------------

    @staticmethod
    def check_inputs(
        num_inference_steps: int,
        num_inversion_steps: int,
        start_step: int,
        gamma: float,
        temperature: float,
        eta: float,
        mode: str,
        output_type: str,
        injection_fraction: float,
        callback_on_step_end_tensor_inputs: Sequence[str],
        tensor_inputs: Sequence[str],
        num_train_timesteps: int,
    ) -> None:
        for name, value in (("num_inference_steps", num_inference_steps), ("num_inversion_steps", num_inversion_steps)):
            if not isinstance(value, int) or not 1 <= value < num_train_timesteps:
                raise ValueError(f"{name} must be an integer from 1 to {num_train_timesteps - 1}, got {value!r}")
        if not isinstance(start_step, int) or start_step < (0 if mode == "original" else 1):
            raise ValueError(f"start_step must be a positive integer, got {start_step!r}")
        if mode == "general" and num_inference_steps < 2:
            raise ValueError("general mode needs num_inference_steps ≥ 2 (the first grid step is skipped)")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if not 0.0 <= injection_fraction <= 1.0:
            raise ValueError(f"injection_fraction must be in [0, 1], got {injection_fraction}")
        if mode not in ("original", "general"):
            raise ValueError(f"mode must be 'original' or 'general', got {mode!r}")
        check_output_type(output_type)
        unknown = set(callback_on_step_end_tensor_inputs) - set(tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs may only name {tensor_inputs}, not {sorted(unknown)}")

    def _noise(
        self, noise: torch.Tensor | None, shape: tuple[int, ...], generator: torch.Generator | None, name: str
    ) -> torch.Tensor:
        if noise is None:
            return randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        if tuple(noise.shape) != shape:
            raise ValueError(f"{name} must have the latent shape {shape}, got {tuple(noise.shape)}")
        return noise.to(self._execution_device, torch.float32)

    @torch.no_grad()
    def __call__(
        self,
        content_image: ImageInput,
        style_image: ImageInput,
        num_inference_steps: int = 50,
        num_inversion_steps: int = 50,
        start_step: int = 49,
        gamma: float = 0.75,
        temperature: float = 1.5,
        injection_layers: Sequence[int] = PAPER_LAYERS,
        adain_init: bool = True,
        attention_injection: bool = True,
        eta: float = 0.0,
        mode: Mode = "original",
        height: int | None = None,
        width: int | None = None,
        content_noise: torch.Tensor | None = None,
        style_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        output_type: Literal["pil", "np", "pt", "latent"] = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict[str, Any]], dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        callback_on_inversion_step: Callable[[DiffusionPipeline, str, int, int], None] | None = None,
        injection_fraction: float = 1.0,
        return_intermediates: bool = False,
    ) -> StyleIDPipelineOutput | tuple:
        r"""Paint ``content_image`` in the style of ``style_image``.

        Args:
            content_image, style_image: one picture each: PIL, array (H, W, 3) uint8 or [0, 1], or tensor
                (1, 3, H, W)/(3, H, W) in [0, 1].
            num_inference_steps (`int`, defaults to 50): N, the DDIM grid 1 + (1000 // N)·j for saving features and
                sampling.
            num_inversion_steps (`int`, defaults to 50): N_inv, the inversion grid 1 + (1000 // N_inv)·i (its last
                step goes to t = 999).
            start_step (`int`, defaults to 49): s; the first N − s grid steps are skipped, so sampling starts at
                g[N − s] *from the t = 999 latent* (the reference's schedule: 49 steps from t = 961). In general mode
                s is capped at N − 1.
            gamma (`float`, defaults to 0.75): query preservation γ in [0, 1]: q̂ = γ·q_content + (1−γ)·q_current.
                Lower is more style.
            temperature (`float`, defaults to 1.5): T > 0, multiplies the logits of the injected attention. Higher
                is sharper attention to the style, i.e. more style.
            injection_layers (defaults to (6, …, 11)): output blocks L whose self-attention is injected
                (``up_blocks.{L // 3}.attentions.{L % 3}`` in SD); blocks 0–2 have none and are ignored.
            adain_init (`bool`, defaults to True): start from AdaIN(content z_T, style z_T), else from content z_T.
            attention_injection (`bool`, defaults to True): False is plain DDIM from the start latent.
            eta (`float`, defaults to 0.0): DDIM η; above 0 the step noise comes from ``generator``.
            mode (`"original"` or `"general"`, defaults to "original"):
                ``"original"`` reproduces the reference run (``run_styleid.py`` at d4ea655) with its quirks: the
                centre crop and LANCZOS resize to a square ``width``×``height`` (default 512), features injected
                only from sampling position 50 − s on (so with N < 26 and s = N − 1 nothing is injected), the
                reference's early stop and its crashes as ``ValueError``, and PIL output truncated to uint8.
                ``"general"`` is the studio's StyleID, the same math with these deviations: no crop, any aspect
                ratio (the picture's own size, or ``width``×``height``, rounded to multiples of ``size_multiple``,
                64 for SD; the style scaled to about the content's area), every executed step injected at any N,
                the inversion visiting both grids, s capped at N − 1, the result resized back to the content's
                size, and PIL output rounded (diffusers' convention).
            height, width: the network size (see ``mode``); None: 512² in original mode, the picture's own size in
                general mode.
            content_noise, style_noise: the ε of the VAE posterior samples, of the latent shape (1, 4, H/8, W/8);
                drawn from ``generator`` when None, the style's first (the reference's order).
            generator: `torch.Generator` for those draws and the η > 0 step noise.
            output_type: ``"pil"``, ``"np"`` (B, H, W, 3), ``"pt"`` (B, 3, H, W), both in [0, 1], or ``"latent"``
                (the final latent at network size).
            return_dict: return a ``StyleIDPipelineOutput`` rather than a tuple.
            callback_on_step_end: ``fn(pipe, step_index, timestep, tensors) -> dict`` after each executed sampling
                step with the tensors named in ``callback_on_step_end_tensor_inputs`` (``latents``,
                ``noise_pred``); a returned ``latents`` replaces them. Setting ``pipe._interrupt`` stops the loop.
            callback_on_inversion_step: ``fn(pipe, "style"/"content", step_index, total)`` after each inversion
                step (inversions found in ``inversion_memo`` make no steps). Setting ``pipe._interrupt`` there skips
                the rest: nothing is sampled and the prepared content comes back (None for ``"latent"``).
            injection_fraction (`float`, defaults to 1.0): not in the paper; the share of the injected steps (the
                first, noisiest ones) that keep their injection. 1 is StyleID.
            return_intermediates: also return, in ``output.intermediates``, the ``schedule``, the ``content`` and
                ``style`` inversions and whether they came from the memo (``content_memo_hit``, ``style_memo_hit``),
                the network-size pictures, ``x_T``, ``final_latent`` and ``decoded`` (before clamping).
        """
        self._interrupt = False
        # 1. Check inputs
        self.check_inputs(
            num_inference_steps,
            num_inversion_steps,
            start_step,
            gamma,
            temperature,
            eta,
            mode,
            output_type,
            injection_fraction,
            callback_on_step_end_tensor_inputs,
            self._callback_tensor_inputs,
            self.scheduler.config.num_train_timesteps,
        )
        layers = tuple(injection_layers)
        schedule = self.make_schedule(
            num_inference_steps, num_inversion_steps, start_step, mode, attention_injection, injection_fraction
        )
        device = self._execution_device

        # 2. Pictures at network size, and the VAE noises (style first, as the reference draws them)
        original_size = to_pil(content_image).size
        content, style = self.prepare_images(content_image, style_image, mode, height, width)
        style_noise = self._noise(style_noise, self.latent_shape(style), generator, "style_noise")
        content_noise = self._noise(content_noise, self.latent_shape(content), generator, "content_noise")
        content_pixels = IMAGE_PROCESSOR.preprocess(content).to(device)
        style_pixels = IMAGE_PROCESSOR.preprocess(style).to(device)

        # 3. The only conditioning: the empty prompt
        prompt_embeds = self.encode_prompt(device=device)

        # 4. Inversions, remembered per picture: the style's keys and values, the content's queries
        def inversion_callback(role: str) -> Callable[[DiffusionPipeline, int, int], None] | None:
            if callback_on_inversion_step is None:
                return None
            return lambda pipe, index, total: callback_on_inversion_step(pipe, role, index, total)

        injecting = any(schedule.injected)
        try:
            style_inversion, style_hit = self._inversion(
                style_pixels,
                style_noise,
                schedule,
                layers,
                ("k", "v") if injecting else (),
                prompt_embeds,
                inversion_callback("style"),
            )
            content_inversion, content_hit = self._inversion(
                content_pixels,
                content_noise,
                schedule,
                layers,
                ("q",) if injecting else (),
                prompt_embeds,
                inversion_callback("content"),
            )
        except InversionInterrupted:  # a cancel during an inversion: nothing to sample
            images = (
                None
                if output_type == "latent"
                else IMAGE_PROCESSOR.postprocess(
                    (content_pixels + 1.0) / 2.0, output_type=output_type, do_denormalize=[False]
                )
            )
            self.maybe_free_model_hooks()
            return StyleIDPipelineOutput(images=images) if return_dict else (images,)

        # 5. Start latent
        x_t = self.prepare_start_latent(content_inversion, style_inversion, adain_init)

        # 6. Sampling with injection
        latents = self.denoise(
            x_t,
            schedule,
            content_inversion,
            style_inversion,
            layers,
            gamma,
            temperature,
            eta,
            generator,
            prompt_embeds,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )

        # 7. Decode and format (general mode: back to the content's own size)
        decoded = None
        if output_type == "latent":
            images = latents
        else:
            decoded = self.decode_latents(latents)
            images = ((decoded + 1.0) / 2.0).clamp(0.0, 1.0)
            if mode == "general" and content.size != original_size:
                images = F.interpolate(
                    images, size=original_size[::-1], mode="bicubic", antialias=True, align_corners=False
                ).clamp(0.0, 1.0)
            if output_type == "pil" and mode == "original":
                # the reference writes uint8(255·image) by truncation
                array = (images.permute(0, 2, 3, 1).cpu().numpy() * 255.0).astype(np.uint8)
                images = [PIL.Image.fromarray(item) for item in array]
            else:
                images = IMAGE_PROCESSOR.postprocess(
                    images, output_type=output_type, do_denormalize=[False] * len(images)
                )

        intermediates = None
        if return_intermediates:
            intermediates = {
                "schedule": schedule,
                "content_image": content,
                "style_image": style,
                "content": content_inversion,
                "style": style_inversion,
                "content_memo_hit": content_hit,
                "style_memo_hit": style_hit,
                "x_T": x_t,
                "final_latent": latents,
                "decoded": decoded,
            }
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return StyleIDPipelineOutput(images=images, intermediates=intermediates)
