"""InST's style mapper ("Attentions" in the original): CLIP image embedding → one token embedding.

Layout and names match the official ``embeddings.pt`` module (``attn1``, ``attn2``, ``net``), so official
weights load key for key: 3,737,856 parameters at dim 768. With the sequence length of 1 that InST uses, both
softmaxes are identically 1, so the output is ``net(attn2.to_out(attn2.to_v(x)))``: an affine map. ``attn1``
and the query/key weights never receive a gradient, but they are kept for checkpoint compatibility.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class MapperAttention(nn.Module):
    """LDM-style cross-attention: bias-free q/k/v projections, Linear + Dropout out, no norm, no residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.scale = heads, head_dim**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        batch, length, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        weights = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return self.to_out((weights @ v).transpose(1, 2).reshape(batch, length, -1))


class StyleMapper(ModelMixin, ConfigMixin):
    """``forward(image_embeds (B, dim) or (B, 1, dim)) -> token embedding (B, dim)``."""

    @register_to_config
    def __init__(self, dim: int = 768, heads: int = 8, head_dim: int = 64, dropout: float = 0.05) -> None:
        super().__init__()
        self.attn1 = MapperAttention(dim, heads, head_dim, dropout)
        self.attn2 = MapperAttention(dim, heads, head_dim, dropout)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        x = image_embeds.reshape(image_embeds.shape[0], 1, -1)
        # The original passes x as both query source of attn1 and context of attn2 (its second argument is ignored).
        return self.net(self.attn2(self.attn1(x), context=x))[:, 0]
