"""ArtFusion's denoiser: a two-level UNet with adaLN-Zero conditioning and a content refiner.

Reading guide (all constants in ../shared/research/artfusion.md §2.4):
- ``emb = time_embedding(t) + style_embedding(style_vector)`` conditions every block through adaLN-Zero
  (a per-block Linear(SiLU(emb)) gives gate/scale/shift); there is no cross-attention.
- The content condition (the instance-normalised VAE latent of the content image) is modulated by the time
  embedding alone, refined by two 1×1 convs and concatenated to the noisy latent.
- The block topology and the names ``input_blocks``/``middle_block``/``output_blocks`` follow the original
  model, so the checkpoint converter only renames leaves inside blocks.
- Every GroupNorm runs in float32 whatever the model dtype (as the original ``GroupNorm32`` does), so a bf16
  model keeps its normalisation statistics exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (eps 1e-5, as in the original)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class AdaLNResBlock(nn.Module):
    """GN → SiLU → conv, then adaLN-Zero: gate · conv(SiLU(GN₀(h)·(1+scale)+shift)), plus the skip."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm_in = GroupNorm32(groups, in_channels, eps=1e-5)
        self.conv_in = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.modulation = nn.Linear(emb_dim, 3 * out_channels)  # chunks: gate, scale, shift
        self.norm_out = GroupNorm32(groups, out_channels, eps=1e-5, affine=False)
        self.conv_out = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(F.silu(self.norm_in(x)))
        gate, scale, shift = self.modulation(F.silu(emb)).chunk(3, dim=1)
        h = self.conv_out(F.silu(_modulate(self.norm_out(h), shift, scale)))
        return self.skip(x) + gate[:, :, None, None] * h


class AdaLNAttentionBlock(nn.Module):
    """Self-attention over all positions with adaLN-Zero; note the (shift, scale, gate) chunk order."""

    def __init__(self, channels: int, emb_dim: int, head_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = GroupNorm32(groups, channels, eps=1e-5, affine=False)
        self.modulation = nn.Linear(emb_dim, 3 * channels)  # chunks: shift, scale, gate
        self.attention = Attention(
            query_dim=channels, heads=channels // head_dim, dim_head=head_dim, bias=True, out_bias=True
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        shift, scale, gate = self.modulation(F.silu(emb)).chunk(3, dim=1)
        tokens = _modulate(self.norm(x), shift, scale).flatten(2).transpose(1, 2)
        attended = self.attention(tokens).transpose(1, 2).reshape(batch, channels, height, width)
        return x + gate[:, :, None, None] * attended


class FinalLayer(nn.Module):
    """Affine GN, modulation (shift, scale), then a bias-free 3×3 conv to ε."""

    def __init__(self, channels: int, out_channels: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = GroupNorm32(groups, channels, eps=1e-5)
        self.modulation = nn.Linear(emb_dim, 2 * channels)
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(F.silu(emb)).chunk(2, dim=1)
        return self.conv(_modulate(self.norm(x), shift, scale))


class Downsample(nn.Module):
    """Strided 3×3 conv (÷2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest ×2, then a 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class AdaLNSequential(nn.ModuleList):
    """A block: its layers in order; the conditioned ones also receive ``emb``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (AdaLNResBlock, AdaLNAttentionBlock)) else layer(x)
        return x


@dataclass
class ArtFusionUNetOutput(BaseOutput):
    sample: torch.Tensor  # predicted noise ε, shape of the input latent


class ArtFusionUNet(ModelMixin, ConfigMixin):
    """ε(x_t, t, content, style) of ArtFusion. The defaults are the released ``kl16_content12`` model.

    Also holds ``null_style``, the learned "no style" vector (EMA) used by style guidance.
    """

    _supports_gradient_checkpointing = False
    # affine GroupNorm weights stay float32 in a bf16 model (the norms are computed in float32 anyway)
    _keep_in_fp32_modules = ["norm_in", "norm"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,
        out_channels: int = 16,
        content_in_dim: int = 16,
        content_refined_dim: int = 12,
        model_channels: int = 384,
        channel_mult: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (1, 2),
        num_head_channels: int = 64,
        style_dim: int = 2944,
        hidden_time_embed_dim: int = 512,
        time_embed_dim: int = 1024,
        num_norm_groups: int = 32,
    ) -> None:
        super().__init__()
        groups, emb_dim = num_norm_groups, time_embed_dim

        # Conditioning: sinusoid [cos, sin] → MLP for t; MLP for the 2944-number style vector.
        self.time_proj = Timesteps(hidden_time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(hidden_time_embed_dim, emb_dim)
        self.style_embedding = TimestepEmbedding(style_dim, emb_dim)
        self.register_buffer("null_style", torch.zeros(1, style_dim))

        # Content refiner: FiLM from the time embedding only, then 1×1 conv → SiLU → 1×1 conv.
        self.content_modulation = nn.Sequential(
            nn.Linear(emb_dim, 2 * content_in_dim), nn.SiLU(), nn.Linear(2 * content_in_dim, 2 * content_in_dim)
        )
        self.content_refiner = nn.Sequential(
            nn.Conv2d(content_in_dim, content_refined_dim, 1),
            nn.SiLU(),
            nn.Conv2d(content_refined_dim, content_refined_dim, 1),
        )

        def res(cin: int, cout: int) -> AdaLNResBlock:
            return AdaLNResBlock(cin, cout, emb_dim, groups)

        def attn(channels: int) -> AdaLNAttentionBlock:
            return AdaLNAttentionBlock(channels, emb_dim, num_head_channels, groups)

        # Down path: a 3×3 conv in, then per level num_res_blocks × (res [+ attn]), then a downsample.
        channels = model_channels
        self.input_blocks = nn.ModuleList(
            [AdaLNSequential([nn.Conv2d(in_channels + content_refined_dim, channels, 3, padding=1)])]
        )
        skip_channels, resolution = [channels], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(channels, model_channels * mult)]
                channels = model_channels * mult
                if resolution in attention_resolutions:
                    layers.append(attn(channels))
                self.input_blocks.append(AdaLNSequential(layers))
                skip_channels.append(channels)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(AdaLNSequential([Downsample(channels)]))
                skip_channels.append(channels)
                resolution *= 2

        self.middle_block = AdaLNSequential([res(channels, channels), attn(channels), res(channels, channels)])

        # Up path: mirror image, each block concatenating one skip; an upsample ends every level but the top.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for index in range(num_res_blocks + 1):
                layers = [res(channels + skip_channels.pop(), model_channels * mult)]
                channels = model_channels * mult
                if resolution in attention_resolutions:
                    layers.append(attn(channels))
                if level and index == num_res_blocks:
                    layers.append(Upsample(channels))
                    resolution //= 2
                self.output_blocks.append(AdaLNSequential(layers))

        self.out = FinalLayer(channels, out_channels, emb_dim, groups)

    def set_attn_processor(self, processor: object) -> None:
        """Choose the attention backend of every attention layer (diffusers processors; SDPA is the default)."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.set_processor(processor)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        content: torch.Tensor,
        style: torch.Tensor,
        return_dict: bool = True,
    ) -> ArtFusionUNetOutput | tuple[torch.Tensor]:
        """Predict ε.

        Args:
            sample: noisy latent x_t, (B, 16, h, w) with h and w even.
            timestep: (B,) or a scalar, in [0, 1000).
            content: content condition, (B, 16, h, w): instance-normalised content latent (zeros = no content).
            style: style condition, (B, 2944): VGG statistics (``null_style`` = no style).
        """
        if sample.shape[-2] % 2 or sample.shape[-1] % 2:
            raise ValueError(
                f"latent height and width must be even (image sides multiples of 32); got {tuple(sample.shape)}"
            )
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        temb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        emb = temb + self.style_embedding(style.to(sample.dtype))

        shift, scale = self.content_modulation(temb).chunk(2, dim=1)
        content = self.content_refiner(_modulate(content.to(sample.dtype), shift, scale))

        h = torch.cat([sample, content], dim=1)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        eps = self.out(h, emb)
        return ArtFusionUNetOutput(sample=eps) if return_dict else (eps,)
