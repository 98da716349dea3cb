"""InstantStylePipeline: SDXL + an IP-Adapter image prompt injected only into the style blocks (Wang et al. 2024).

Spec with every measured detail: ../shared/fixtures/instantstyle/SPEC.md. In short, InstantStyle is IP-Adapter
(``ip-adapter_sdxl``, ViT-bigG image encoder) with two training-free changes, on an otherwise stock SDXL pipeline:

1. block-selective injection: the decoupled image cross-attention
   ``Y = softmax(Q Kᵀ/√d) V + s_ℓ · softmax(Q K_ipᵀ/√d) V_ip`` runs only in the cross-attention layers whose name
   contains one of ``target_blocks`` (a substring test on the full processor name, as the original does); "style"
   is ``up_blocks.0.attentions.1``, "style + layout" adds ``down_blocks.2.attentions.1``. Elsewhere s_ℓ = 0 and
   the image branch is not computed at all;
2. content subtraction (optional): ``e_cond = e − λ · pooled_text_embedding(neg_content_prompt)`` on the CLIP
   image embedding ``e`` (not normalised) before it is projected to the 4 image tokens; the unconditional
   embedding is 0.

Content comes in through a Canny ControlNet (``cv2.Canny`` 50/200 on the content picture), whose residuals see the
text only. The IP-Adapter itself is diffusers' own (``load_ip_adapter``, ``set_ip_adapter_scale``); this module
adds the original's semantics around it: the substring rule → per-block scales, its default prompts, the content
subtraction, the Canny map, and every intermediate reachable as a method (see ``prepare_conditioning``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import IPAdapterMixin
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import (
    CLIPImageProcessorPil,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from pipelines.core.pipeline_mixins import InterruptibleMixin, check_output_type
from pipelines.instantstyle.weights import (
    DEFAULT_CONTROLNET,
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_IP_ADAPTER,
    DEFAULT_SDXL,
    hub_location,
    ip_adapter_location,
)

ImageInput = PIL.Image.Image | np.ndarray

# The original's substitutes for a prompt / negative prompt of None (SPEC §5 #3, #4).
ORIGINAL_PROMPT = "best quality, high quality"
ORIGINAL_NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"

STYLE_BLOCKS = ("up_blocks.0.attentions.1",)
LAYOUT_BLOCKS = ("down_blocks.2.attentions.1",)
BLOCK_PRESETS: dict[str, tuple[str, ...]] = {
    "style": STYLE_BLOCKS,
    "style+layout": STYLE_BLOCKS + LAYOUT_BLOCKS,
    "all": ("blocks",),  # every cross-attention layer, mid block included: plain IP-Adapter (SPEC §3)
}
CANNY_THRESHOLDS = (50, 200)

# ---- memory (see ``estimate_memory_bytes``) -------------------------------------------------------------------
GIB = 1024**3
MEGAPIXEL = 1024 * 1024
# Activation peaks per megapixel of output in a 2-byte dtype (twice that in float32). The UNet and the ControlNet
# run the CFG batch of 2 with SDPA attention (no score matrices are kept); the VAE decoder's full-resolution
# feature maps (256 and 128 channels at the output size) dominate, and VAE tiling (always on, as in the original)
# caps the decoder at one 1024² tile. Estimates from the tensor sizes, with margin; not measured on a GPU.
DENOISER_BYTES_PER_MEGAPIXEL = int(1.5 * GIB)
DECODER_BYTES_PER_MEGAPIXEL = 3 * GIB
DECODER_TILE_PIXELS = 1024 * 1024
# Kept free on top of the estimate: CUDA context, cuBLAS workspaces, allocator fragmentation.
MEMORY_RESERVE_BYTES = int(1.5 * GIB)

IMAGE_PROCESSOR = VaeImageProcessor(do_resize=False)  # diffusers' [0, 1] ↔ PIL/np/pt conversions


@dataclass
class InstantStylePipelineOutput(BaseOutput):
    """``images``: list of PIL images, an array (B, H, W, 3) or a tensor (B, 3, H, W) in [0, 1], or the final
    latents (B, 4, H/8, W/8) for ``output_type="latent"``."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


# ---- target blocks → IP-Adapter scales -------------------------------------------------------------------------


def resolve_target_blocks(target_blocks: str | Sequence[str]) -> tuple[str, ...]:
    """A preset name ("style", "style+layout", "all") or block-name substrings → the substrings."""
    blocks = (
        BLOCK_PRESETS.get(target_blocks, (target_blocks,)) if isinstance(target_blocks, str) else tuple(target_blocks)
    )
    if not all(isinstance(block, str) and block for block in blocks):
        raise ValueError(f"target_blocks must be non-empty strings, got {target_blocks!r}")
    return blocks


def ip_processor_names(unet: UNet2DConditionModel) -> list[str]:
    """Names of the cross-attention processors that carry IP-Adapter weights, in the UNet's order."""
    names = [name for name, processor in unet.attn_processors.items() if hasattr(processor, "to_k_ip")]
    if not names:
        raise ValueError("this UNet has no IP-Adapter loaded (call load_ip_adapter first)")
    return names


def target_scales(processor_names: Sequence[str], target_blocks: Sequence[str], scale: float) -> dict[str, float]:
    """The original's rule: a processor gets the image branch, at ``scale``, iff one of ``target_blocks`` is a
    substring of its full name (so "blocks" selects every layer: every name contains "transformer_blocks")."""
    return {name: float(scale) if any(block in name for block in target_blocks) else 0.0 for name in processor_names}


def _attention_of(processor_name: str) -> tuple[str, int, int]:
    """("down" | "up" | "mid", block index, attention index) of a processor name such as
    ``up_blocks.0.attentions.1.transformer_blocks.2.attn2.processor``."""
    parts = processor_name.split(".")
    if parts[0] == "mid_block":
        return "mid", 0, int(parts[2])
    return parts[0].removesuffix("_blocks"), int(parts[1]), int(parts[3])


def ip_adapter_scale_config(
    processor_names: Sequence[str], target_blocks: Sequence[str], scale: float
) -> float | dict[str, Any] | None:
    """The ``set_ip_adapter_scale`` argument that gives ``target_scales``, or None when none can.

    diffusers sets scales per attention (Transformer2DModel): ``{"down": {"block_2": [0, s]}, "up": {"block_0":
    [0, s, 0]}, "mid": s}``, anything not given 0, a plain number for every layer. A target that selects only some
    transformer blocks of one attention (e.g. ``"...attentions.1.transformer_blocks.0"``) has no such spelling:
    None, and the caller sets those processors by hand.
    """
    wanted = target_scales(processor_names, target_blocks, scale)
    active = {name for name, value in wanted.items() if value != 0.0}
    if len(active) == len(wanted) or not active:
        return float(scale) if active else 0.0
    attentions: dict[tuple[str, int, int], set[bool]] = {}
    for name in processor_names:
        attentions.setdefault(_attention_of(name), set()).add(name in active)
    if any(len(flags) > 1 for flags in attentions.values()):
        return None
    config: dict[str, Any] = {}
    for kind in ("down", "up"):
        blocks = sorted({block for k, block, _ in attentions if k == kind})
        for block in blocks:
            indices = sorted(index for k, b, index in attentions if k == kind and b == block)
            flags = [True in attentions[(kind, block, index)] for index in indices]
            if any(flags):
                config.setdefault(kind, {})[f"block_{block}"] = [float(scale) if flag else 0.0 for flag in flags]
    if any(True in flags for (kind, _, _), flags in attentions.items() if kind == "mid"):
        config["mid"] = float(scale)
    return config


# ---- content: the Canny map --------------------------------------------------------------------------------


def canny_map(image: ImageInput, low: int = CANNY_THRESHOLDS[0], high: int = CANNY_THRESHOLDS[1]) -> np.ndarray:
    """The ControlNet's control image: ``cv2.Canny`` on the BGR picture (as ``cv2.imread`` gives it), as (H, W, 3)
    uint8 with three equal channels (0 or 255)."""
    try:
        import cv2
    except ImportError as exc:  # a dependency of this method only
        raise ImportError("InstantStyle's content path needs OpenCV: pip install opencv-python-headless") from exc
    rgb = np.asarray(to_rgb(image), dtype=np.uint8)
    edges = cv2.Canny(np.ascontiguousarray(rgb[:, :, ::-1]), low, high)
    return np.repeat(edges[:, :, None], 3, axis=2)


def to_rgb(image: ImageInput) -> PIL.Image.Image:
    """A PIL image or a (H, W, 3) uint8 array as an RGB PIL image (an alpha channel is dropped, as OpenCV does)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"an image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        image = PIL.Image.fromarray(image)
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"expected a PIL image or a uint8 array, got {type(image).__name__}")
    return image.convert("RGB")


# ---- memory --------------------------------------------------------------------------------------------------


def estimate_memory_bytes(
    parameter_bytes: int, height: int, width: int, dtype_bytes: int = 2, upcast_vae: bool = False
) -> int:
    """Device memory a run at ``height`` × ``width`` needs with every model on the device: the weights plus the
    activation peaks (``DENOISER_BYTES_PER_MEGAPIXEL``, ``DECODER_BYTES_PER_MEGAPIXEL``, per 2-byte element).
    ``upcast_vae``: the decoder runs in float32 (float16 SDXL VAE, ``force_upcast``)."""
    megapixels = height * width / MEGAPIXEL
    decoder_megapixels = min(height * width, DECODER_TILE_PIXELS) / MEGAPIXEL
    denoiser = DENOISER_BYTES_PER_MEGAPIXEL * megapixels * dtype_bytes / 2
    decoder = DECODER_BYTES_PER_MEGAPIXEL * decoder_megapixels * (4 if upcast_vae else dtype_bytes) / 2
    return int(parameter_bytes + denoiser + decoder)


def needs_cpu_offload(free_bytes: int, needed_bytes: int, reserve_bytes: int = MEMORY_RESERVE_BYTES) -> bool:
    """Whether to use model CPU offload: the device's free memory does not hold the estimate plus the reserve."""
    return free_bytes < needed_bytes + reserve_bytes


# ---- conditioning --------------------------------------------------------------------------------------------


@dataclass
class PromptEmbeddings:
    """Stock SDXL text conditioning: ``[h1[-2]; h2[-2]]`` (1, 77, C) and text_encoder_2's pooled output (1, P),
    for the prompt and for the negative prompt."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor


@dataclass
class StyleEmbeddings:
    """The style image's CLIP embedding ``image_embeds`` (1, D), what goes into the image projection for the
    conditional (``cond``, after content subtraction) and unconditional (``uncond``, zeros) branches, and the
    subtracted pooled text embedding before its scale (``neg_content_pooled``, None without subtraction)."""

    image_embeds: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    neg_content_pooled: torch.Tensor | None = None


@dataclass
class InstantStyleConditioning:
    """Everything the denoising loop needs, computed once per call by ``prepare_conditioning``."""

    prompt: PromptEmbeddings
    style: StyleEmbeddings
    ip_scales: dict[str, float]  # per cross-attention processor: the image branch's scale (0: not computed)
    height: int
    width: int
    add_time_ids: torch.Tensor  # (1, 6): (H, W, 0, 0, H, W)
    guidance_scale: float
    control_map: np.ndarray | None = None  # (H, W, 3) uint8 Canny map, None without a content image
    control_image: torch.Tensor | None = None  # (1, 3, H, W) in [0, 1]
    controlnet_conditioning_scale: float = 0.0

    @property
    def do_classifier_free_guidance(self) -> bool:
        """CFG runs only for a guidance scale above 1 (then the batch is [uncond; cond])."""
        return self.guidance_scale > 1.0

    def batch(self, uncond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.cat([uncond, cond]) if self.do_classifier_free_guidance else cond


class InstantStylePipeline(InterruptibleMixin, DiffusionPipeline, IPAdapterMixin):
    r"""InstantStyle (Wang et al. 2024, arXiv 2404.02733) on SDXL with diffusers' IP-Adapter.

    Components: the SDXL ones (``vae``, ``text_encoder``, ``text_encoder_2``, ``tokenizer``, ``tokenizer_2``,
    ``unet``, ``scheduler``), the IP-Adapter's ``image_encoder`` (``CLIPVisionModelWithProjection``) with its
    ``feature_extractor`` (CLIP preprocessing, PIL backend, as the original), and an optional Canny ``controlnet``.
    ``from_pretrained`` assembles all of them and loads the IP-Adapter weights into the UNet.

    ``memory_mode`` says where the models live after ``place``: ``"device"`` (all on the device) or
    ``"model_cpu_offload"`` (each model moves to the GPU when it runs). Each call sets the IP-Adapter scales of its
    ``target_blocks`` on the UNet: one call at a time per pipeline.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->image_encoder->unet->vae"  # controlnet: iterated with unet
    _optional_components = ["controlnet"]
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        image_encoder: CLIPVisionModelWithProjection,
        feature_extractor: CLIPImageProcessorPil,
        controlnet: ControlNetModel | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            controlnet=controlnet,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # As the original scripts do; inert up to the VAE's sample_size (1024 px for SDXL), tiles above it.
        self.vae.enable_tiling()
        self.memory_mode = "device"

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path = DEFAULT_SDXL,
        *,
        ip_adapter: str | Path | Mapping[str, Any] = DEFAULT_IP_ADAPTER,
        image_encoder: str | Path | CLIPVisionModelWithProjection = DEFAULT_IMAGE_ENCODER,
        controlnet: str | Path | ControlNetModel | None = DEFAULT_CONTROLNET,
        dtype: torch.dtype | None = None,
        local_files_only: bool | None = None,
        **kwargs: Any,
    ) -> InstantStylePipeline:
        """Assemble the pipeline: SDXL, the IP-Adapter weights, its image encoder and the ControlNet.

        Args:
            pretrained_model_name_or_path: an SDXL base folder or Hub id (``stabilityai/stable-diffusion-xl-base-1.0``).
            ip_adapter: the ``ip-adapter_sdxl`` weights: a local ``.safetensors``/``.bin`` file, a folder holding one,
                ``owner/repo/path/file`` on the Hub, or a state dict ``{"image_proj": …, "ip_adapter": …}``.
            image_encoder: its CLIP image encoder: a folder, ``owner/repo[/subfolder]`` or a loaded model
                (``h94/IP-Adapter/sdxl_models/image_encoder``, ViT-bigG-14, for ``ip-adapter_sdxl``).
            controlnet: a Canny SDXL ControlNet (folder, Hub id or model), or None for text-to-image only.
            dtype: the models' dtype (float32 when None).
            local_files_only: do not contact the Hub (local folders and the local cache only).
            kwargs: passed on to ``StableDiffusionXLPipeline.from_pretrained`` (e.g. ``variant``).
        """
        dtype = dtype or kwargs.pop("torch_dtype", None)
        hub = {"local_files_only": local_files_only} if local_files_only is not None else {}
        load = {**hub, **({"dtype": dtype} if dtype is not None else {})}
        sdxl = StableDiffusionXLPipeline.from_pretrained(
            str(pretrained_model_name_or_path), add_watermarker=False, **load, **kwargs
        )
        if not isinstance(image_encoder, torch.nn.Module):
            repo, subfolder = hub_location(str(image_encoder))
            image_encoder = CLIPVisionModelWithProjection.from_pretrained(repo, subfolder=subfolder, **load)
        if controlnet is not None and not isinstance(controlnet, torch.nn.Module):
            repo, subfolder = hub_location(str(controlnet))
            controlnet = ControlNetModel.from_pretrained(repo, subfolder=subfolder or None, **load)
        pipe = cls(
            vae=sdxl.vae,
            text_encoder=sdxl.text_encoder,
            text_encoder_2=sdxl.text_encoder_2,
            tokenizer=sdxl.tokenizer,
            tokenizer_2=sdxl.tokenizer_2,
            unet=sdxl.unet,
            scheduler=sdxl.scheduler,
            image_encoder=image_encoder,
            # The original builds CLIPImageProcessor() with its defaults; the PIL backend computes it exactly (the
            # torchvision backend of transformers 5 differs by up to 0.028 in the pixels, SPEC §5 #12).
            feature_extractor=CLIPImageProcessorPil(),
            controlnet=controlnet,
        )
        if isinstance(ip_adapter, Mapping):
            pipe.load_ip_adapter(dict(ip_adapter), subfolder="", weight_name="", image_encoder_folder=None)
        else:
            folder, subfolder, weight_name = ip_adapter_location(str(ip_adapter))
            pipe.load_ip_adapter(folder, subfolder=subfolder, weight_name=weight_name, image_encoder_folder=None, **hub)
        pipe.set_style_blocks(STYLE_BLOCKS, 1.0)
        return pipe

    # ---- placement ---------------------------------------------------------------------------------------

    def parameter_bytes(self) -> int:
        """Bytes of every model's weights (the IP-Adapter's included: they live in the UNet)."""
        return sum(
            p.numel() * p.element_size()
            for module in self.components.values()
            if isinstance(module, torch.nn.Module)
            for p in module.parameters()
        )

    def memory_needed(self, height: int = 1024, width: int = 1024) -> int:
        """Estimated device memory for a run at this size with every model on the device."""
        upcast = self.vae.dtype == torch.float16 and bool(self.vae.config.get("force_upcast", False))
        return estimate_memory_bytes(self.parameter_bytes(), height, width, self.unet.dtype.itemsize, upcast)

    def place(
        self,
        device: str | torch.device,
        offload: Literal["auto", "never", "always"] = "auto",
        height: int = 1024,
        width: int = 1024,
    ) -> str:
        """Put the models on ``device``; on CUDA with ``offload="auto"``, model CPU offload when the free memory does
        not hold a run at ``height`` × ``width`` (``needs_cpu_offload``). Returns and records ``memory_mode``."""
        device = torch.device(device)
        offloaded = False
        if device.type == "cuda" and offload != "never":
            if offload == "always":
                offloaded = True
            else:
                free_bytes, _ = torch.cuda.mem_get_info(device)
                offloaded = needs_cpu_offload(free_bytes, self.memory_needed(height, width))
        if offloaded:
            self.enable_model_cpu_offload(device=device)
        else:
            self.to(device)
        self.memory_mode = "model_cpu_offload" if offloaded else "device"
        return self.memory_mode

    # ---- text and style ----------------------------------------------------------------------------------

    def encode_text(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL text conditioning of one prompt: (penultimate hidden states of both encoders, concatenated
        (1, 77, C); text_encoder_2's projected pooled output ``text_embeds`` (1, P)), in the UNet's dtype."""
        device, dtype = self._execution_device, self.unet.dtype
        hidden = []
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(
                prompt,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            output = encoder(ids.to(device), output_hidden_states=True)
            hidden.append(output.hidden_states[-2])
        return torch.cat(hidden, dim=-1).to(dtype), output.text_embeds.to(dtype)  # output: text_encoder_2's

    def encode_prompts(self, prompt: str | None, negative_prompt: str | None) -> PromptEmbeddings:
        """Both prompts, with the original's substitutes for None (the negative prompt is always encoded: an
        all-zero negative conditioning is what diffusers would use instead, SPEC §5 #3)."""
        embeds, pooled = self.encode_text(ORIGINAL_PROMPT if prompt is None else prompt)
        negative = ORIGINAL_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
        negative_embeds, negative_pooled = self.encode_text(negative)
        return PromptEmbeddings(embeds, pooled, negative_embeds, negative_pooled)

    def style_pixel_values(self, style_image: ImageInput) -> torch.Tensor:
        """CLIP preprocessing of the style picture at its own size: (1, 3, 224, 224)."""
        return self.feature_extractor(images=to_rgb(style_image), return_tensors="pt").pixel_values

    def encode_style(
        self, style_image: ImageInput, neg_content_prompt: str | None = None, neg_content_scale: float = 0.5
    ) -> StyleEmbeddings:
        """The style's CLIP image embedding (``image_embeds``, not normalised) and the projection inputs:
        ``cond = e − neg_content_scale · pooled(neg_content_prompt)`` (just ``e`` without a content prompt),
        ``uncond = 0``."""
        encoder = self.image_encoder
        pixels = self.style_pixel_values(style_image).to(self._execution_device, encoder.dtype)
        image_embeds = encoder(pixels).image_embeds
        cond, neg_content_pooled = image_embeds, None
        if neg_content_prompt is not None:
            _, neg_content_pooled = self.encode_text(neg_content_prompt)
            cond = image_embeds - neg_content_scale * neg_content_pooled.to(image_embeds.dtype)
        return StyleEmbeddings(image_embeds, cond, torch.zeros_like(image_embeds), neg_content_pooled)

    def image_tokens(self, embeds: torch.Tensor) -> torch.Tensor:
        """The IP-Adapter projection ``LayerNorm(reshape(W e + b))``: (B, D) embeddings → (B, 4, C) image tokens
        (what the UNet computes from ``added_cond_kwargs["image_embeds"]`` at every step)."""
        projection = self.unet.encoder_hid_proj
        weight = next(projection.parameters())
        return projection([embeds[:, None, :].to(weight.device, weight.dtype)])[0].flatten(1, 2)

    def set_style_blocks(self, target_blocks: str | Sequence[str], scale: float) -> dict[str, float]:
        """Give the image branch ``scale`` in the layers ``target_blocks`` selects (the original's substring rule)
        and 0 (not computed) everywhere else, through ``set_ip_adapter_scale``. Returns the scale per layer."""
        blocks = resolve_target_blocks(target_blocks)
        names = ip_processor_names(self.unet)
        wanted = target_scales(names, blocks, scale)
        config = ip_adapter_scale_config(names, blocks, scale)
        self.set_ip_adapter_scale(0.0 if config is None else config)
        processors = self.unet.attn_processors
        if config is None:  # targets inside one attention (single transformer blocks): no dict spells them
            for name, value in wanted.items():
                processors[name].scale = [value]
        got = {name: float(processors[name].scale[0]) for name in names}
        if got != wanted:  # diffusers' expansion of the dict changed: never run with the wrong layers
            raise RuntimeError(f"IP-Adapter scales {got} differ from the requested {wanted}")
        return wanted

    # ---- content -----------------------------------------------------------------------------------------

    def output_size(self, content_image: ImageInput | None, height: int | None, width: int | None) -> tuple[int, int]:
        """(height, width) of the picture: as given, else the content's size rounded down to multiples of 8,
        else the UNet's default (1024 for SDXL)."""
        multiple = self.vae_scale_factor
        if content_image is not None:
            content_width, content_height = to_rgb(content_image).size
            height = height or max(multiple, content_height // multiple * multiple)
            width = width or max(multiple, content_width // multiple * multiple)
        default = self.unet.config.sample_size * multiple
        height, width = height or default, width or default
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple}, got {height}×{width}")
        return height, width

    def prepare_control_image(
        self, content_image: ImageInput, height: int, width: int
    ) -> tuple[np.ndarray, torch.Tensor]:
        """The Canny map of the content at the output size (the content is resized first, so the edges are
        those of the picture at that size), and the ControlNet's input (1, 3, H, W) in [0, 1]."""
        content = to_rgb(content_image)
        if content.size != (width, height):
            content = content.resize((width, height), PIL.Image.Resampling.LANCZOS)
        edges = canny_map(content)
        pixels = torch.from_numpy(edges.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        return edges, pixels.to(self._execution_device, self.controlnet.dtype)

    def prepare_conditioning(
        self,
        style_image: ImageInput,
        prompt: str | None = "",
        negative_prompt: str | None = None,
        content_image: ImageInput | None = None,
        target_blocks: str | Sequence[str] = STYLE_BLOCKS,
        style_scale: float = 1.0,
        controlnet_conditioning_scale: float = 0.6,
        neg_content_prompt: str | None = None,
        neg_content_scale: float = 0.5,
        guidance_scale: float = 5.0,
        height: int | None = None,
        width: int | None = None,
    ) -> InstantStyleConditioning:
        """Steps 2–4 of ``__call__`` (same arguments): size, text, style embeddings, per-layer scales and the
        control image. Sets the IP-Adapter scales on the UNet (pipeline state: one call at a time per pipeline)."""
        if content_image is not None and self.controlnet is None:
            raise ValueError("content_image needs a ControlNet: load the pipeline with controlnet=...")
        height, width = self.output_size(content_image, height, width)
        prompt_embeddings = self.encode_prompts(prompt, negative_prompt)
        style = self.encode_style(style_image, neg_content_prompt, neg_content_scale)
        ip_scales = self.set_style_blocks(target_blocks, style_scale)
        control_map = control_image = None
        if content_image is not None:
            control_map, control_image = self.prepare_control_image(content_image, height, width)
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=self.unet.dtype)
        return InstantStyleConditioning(
            prompt=prompt_embeddings,
            style=style,
            ip_scales=ip_scales,
            height=height,
            width=width,
            add_time_ids=time_ids.to(self._execution_device),
            guidance_scale=guidance_scale,
            control_map=control_map,
            control_image=control_image,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
        )

    # ---- denoising ---------------------------------------------------------------------------------------

    def prepare_latents(
        self,
        conditioning: InstantStyleConditioning,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_T = init_noise_sigma · z in float32 (call after ``scheduler.set_timesteps``); z is ``latents`` or drawn
        from ``generator`` (1, 4, H/8, W/8)."""
        shape = (
            1,
            self.unet.config.in_channels,
            conditioning.height // self.vae_scale_factor,
            conditioning.width // self.vae_scale_factor,
        )
        device = self._execution_device
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} for a {conditioning.width}×{conditioning.height} image")
        return latents.to(device, torch.float32) * self.scheduler.init_noise_sigma

    def scale_model_input(
        self, latents: torch.Tensor, t: torch.Tensor, conditioning: InstantStyleConditioning
    ) -> torch.Tensor:
        """The denoisers' input at ``t``: the (CFG-doubled) latents scaled by the scheduler."""
        return self.scheduler.scale_model_input(conditioning.batch(latents, latents), t)

    def _added_conditions(self, conditioning: InstantStyleConditioning) -> dict[str, torch.Tensor]:
        prompt = conditioning.prompt
        time_ids = conditioning.add_time_ids
        return {
            "text_embeds": conditioning.batch(prompt.negative_pooled_prompt_embeds, prompt.pooled_prompt_embeds),
            "time_ids": conditioning.batch(time_ids, time_ids),
        }

    def control_residuals(
        self, model_input: torch.Tensor, t: torch.Tensor, conditioning: InstantStyleConditioning
    ) -> tuple[tuple[torch.Tensor, ...] | None, torch.Tensor | None]:
        """The ControlNet's (down residuals, mid residual), already × ``controlnet_conditioning_scale``; it sees the
        text conditioning only, never the image tokens. (None, None) without a control image."""
        if conditioning.control_image is None:
            return None, None
        prompt = conditioning.prompt
        control_image = conditioning.control_image
        down, mid = self.controlnet(
            model_input.to(self.controlnet.dtype),
            t,
            encoder_hidden_states=conditioning.batch(prompt.negative_prompt_embeds, prompt.prompt_embeds),
            controlnet_cond=conditioning.batch(control_image, control_image),
            conditioning_scale=conditioning.controlnet_conditioning_scale,
            added_cond_kwargs=self._added_conditions(conditioning),
            return_dict=False,
        )
        return down, mid

    def predict_noise(
        self, model_input: torch.Tensor, t: torch.Tensor, conditioning: InstantStyleConditioning
    ) -> torch.Tensor:
        """The UNet's ε for the batch ([uncond; cond] with CFG), before guidance, ControlNet residuals included.
        The image embeddings go in as ``added_cond_kwargs["image_embeds"]``; the UNet projects them to tokens."""
        prompt, style = conditioning.prompt, conditioning.style
        down, mid = self.control_residuals(model_input, t, conditioning)
        image_embeds = conditioning.batch(style.uncond, style.cond)[:, None, :].to(self.unet.dtype)
        return self.unet(
            model_input.to(self.unet.dtype),
            t,
            encoder_hidden_states=conditioning.batch(prompt.negative_prompt_embeds, prompt.prompt_embeds),
            added_cond_kwargs={**self._added_conditions(conditioning), "image_embeds": [image_embeds]},
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0].float()

    @staticmethod
    def guide(noise_batch: torch.Tensor, conditioning: InstantStyleConditioning) -> torch.Tensor:
        """ε = ε_u + g (ε_c − ε_u) with CFG; the conditional ε as is without."""
        if not conditioning.do_classifier_free_guidance:
            return noise_batch
        uncond, cond = noise_batch.chunk(2)
        return uncond + conditioning.guidance_scale * (cond - uncond)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → pictures (B, 3, H, W) in [0, 1]. A float16 VAE with ``force_upcast`` decodes in float32."""
        vae = self.vae
        upcast = vae.dtype == torch.float16 and bool(vae.config.get("force_upcast", False))
        if upcast:
            vae.to(torch.float32)
        mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
        if mean is not None and std is not None:
            mean = torch.tensor(mean, device=latents.device).view(1, -1, 1, 1)
            std = torch.tensor(std, device=latents.device).view(1, -1, 1, 1)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        try:
            decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0].float()
        finally:
            if upcast:
                vae.to(torch.float16)
        return (decoded * 0.5 + 0.5).clamp(0.0, 1.0)

    @staticmethod
    def check_inputs(
        num_inference_steps: int,
        style_scale: float,
        controlnet_conditioning_scale: float,
        guidance_scale: float,
        neg_content_scale: float,
        output_type: str,
        callback_on_step_end_tensor_inputs: Sequence[str],
        tensor_inputs: Sequence[str],
    ) -> None:
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        for name, value in (
            ("style_scale", style_scale),
            ("controlnet_conditioning_scale", controlnet_conditioning_scale),
            ("guidance_scale", guidance_scale),
            ("neg_content_scale", neg_content_scale),
        ):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if style_scale < 0 or controlnet_conditioning_scale < 0:
            raise ValueError("style_scale and controlnet_conditioning_scale must not be negative")
        check_output_type(output_type)
        unknown = set(callback_on_step_end_tensor_inputs) - set(tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs may only name {tensor_inputs}, not {sorted(unknown)}")

    # ---- the call ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        style_image: ImageInput,
        prompt: str | None = "",
        negative_prompt: str | None = None,
        content_image: ImageInput | None = None,
        target_blocks: str | Sequence[str] = STYLE_BLOCKS,
        style_scale: float = 1.0,
        controlnet_conditioning_scale: float = 0.6,
        neg_content_prompt: str | None = None,
        neg_content_scale: float = 0.5,
        guidance_scale: float = 5.0,
        num_inference_steps: int = 30,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: Literal["pil", "np", "pt", "latent"] = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, Any, dict[str, Any]], dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> InstantStylePipelineOutput | tuple:
        r"""Generate a picture in the style of ``style_image`` (and with the layout of ``content_image``).

        Args:
            style_image: the style reference (PIL image or (H, W, 3) uint8 array), used at its own size: CLIP
                preprocessing resizes its short side to 224 and centre-crops.
            prompt (`str`, defaults to ""): what to draw. None: the original's default "best quality, high quality".
            negative_prompt (`str`, optional): None: the original's default "monochrome, lowres, bad anatomy, worst
                quality, low quality" (diffusers would use an all-zero negative conditioning instead).
            content_image: optional picture whose Canny edges (OpenCV, thresholds 50/200) drive the ControlNet; it
                sets the output size (rounded down to multiples of 8) unless ``height``/``width`` are given, when it
                is resized to that size before its edges are taken. Needs a pipeline with a ControlNet.
            target_blocks (defaults to ``("up_blocks.0.attentions.1",)``): the layers that get the image prompt,
                as the original names them: any substrings of the cross-attention processor names (``["blocks"]``
                selects every layer), or a preset name: "style", "style+layout", "all".
            style_scale (`float`, defaults to 1.0): the IP-Adapter scale in the target layers (0 turns the image
                prompt off: plain SDXL).
            controlnet_conditioning_scale (`float`, defaults to 0.6): weight of the ControlNet residuals.
            neg_content_prompt (`str`, optional): content subtraction: what the style image shows that should not
                carry over (e.g. "a rabbit"); its pooled text embedding × ``neg_content_scale`` is subtracted from
                the style's image embedding (conditional branch only).
            neg_content_scale (`float`, defaults to 0.5): λ of the content subtraction.
            guidance_scale (`float`, defaults to 5.0): classifier-free guidance scale; ≤ 1 turns CFG off.
            num_inference_steps (`int`, defaults to 30): sampler steps (the scheduler's own: Euler for SDXL base).
            height, width: the output size, multiples of 8 (defaults: the content's size, else 1024).
            generator: `torch.Generator` for the start noise (and the scheduler's noise, if it draws any).
            latents: the start noise z (1, 4, H/8, W/8), unscaled (multiplied by the scheduler's init sigma);
                drawn from ``generator`` when None.
            output_type: ``"pil"``, ``"np"`` (B, H, W, 3) or ``"pt"`` (B, 3, H, W) in [0, 1], or ``"latent"``.
            return_dict: return an ``InstantStylePipelineOutput`` rather than a tuple.
            callback_on_step_end: ``fn(pipe, step_index, timestep, tensors) -> dict`` after each step with the
                tensors named in ``callback_on_step_end_tensor_inputs`` (``latents``, ``noise_pred``: the guided
                ε); a returned ``latents`` replaces them. Setting ``pipe._interrupt = True`` stops the loop there
                (the latents reached so far are decoded).
        """
        self._interrupt = False
        # 1. Check inputs
        self.check_inputs(
            num_inference_steps,
            style_scale,
            controlnet_conditioning_scale,
            guidance_scale,
            neg_content_scale,
            output_type,
            callback_on_step_end_tensor_inputs,
            self._callback_tensor_inputs,
        )

        # 2-4. Conditioning: text, the style's image embeddings, the per-layer scales, the Canny map
        conditioning = self.prepare_conditioning(
            style_image,
            prompt,
            negative_prompt,
            content_image,
            target_blocks,
            style_scale,
            controlnet_conditioning_scale,
            neg_content_prompt,
            neg_content_scale,
            guidance_scale,
            height,
            width,
        )

        # 5. Timesteps, then the start noise (its scale depends on the schedule)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        timesteps = self.scheduler.timesteps
        latents = self.prepare_latents(conditioning, generator, latents)

        # 6. Denoising loop (latents stay float32; the models run in their own dtype)
        noise_pred = None
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:  # set by a callback (a cancel): stop denoising here
                    break
                model_input = self.scale_model_input(latents, t, conditioning)
                noise_pred = self.guide(self.predict_noise(model_input, t, conditioning), conditioning)
                latents = self.scheduler.step(noise_pred, t, latents, generator=generator, return_dict=False)[0]
                values = {"latents": latents, "noise_pred": noise_pred}
                latents = self.step_end(callback_on_step_end, i, t, callback_on_step_end_tensor_inputs, values)
                progress_bar.update()

        # 7. Decode and format
        if output_type == "latent":
            images = latents
        else:
            images = IMAGE_PROCESSOR.postprocess(
                self.decode_latents(latents), output_type=output_type, do_denormalize=[False] * len(latents)
            )
        self.maybe_free_model_hooks()
        return InstantStylePipelineOutput(images=images) if return_dict else (images,)
