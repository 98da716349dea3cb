"""The attention kernel for ArtFusion's self-attention layers on the CPU.

The classic kernel (scores materialised: one batched matmul, softmax, matmul) measured 0.88× the time of
PyTorch SDPA on the CPU at 256 px (`python -m bench`), but its score matrix grows with the square of the
token count: ArtFusion attends at the full latent resolution, so a 2048 px picture has 16,384 tokens and the
scores alone would take 3 branches × 6 heads × 16384² × 4 bytes ≈ 19 GB. Above ``CLASSIC_MAX_TOKENS`` the
processor therefore hands over to SDPA, whose CPU flash kernel works in blocks. On CUDA, SDPA is used
throughout (flash / memory-efficient kernels).
"""

from __future__ import annotations

from typing import Any

from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

CLASSIC_MAX_TOKENS = 4096  # 1024 px: scores of 3 × 6 × 4096² floats ≈ 1.2 GB, still fine on a CPU


class SizeAwareAttnProcessor:
    """Classic attention up to ``max_tokens`` tokens, SDPA above (chosen per call, so it is safe under
    concurrent requests of different sizes)."""

    def __init__(self, max_tokens: int = CLASSIC_MAX_TOKENS) -> None:
        self.max_tokens = max_tokens
        self.classic = AttnProcessor()
        self.sdpa = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        processor = self.classic if hidden_states.shape[1] <= self.max_tokens else self.sdpa
        return processor(attn, hidden_states, *args, **kwargs)
