"""Random-weight Stable Diffusion 1.x components and a CLIP image encoder, built in-process and saved in the
standard layouts (so they load through the same ``from_pretrained`` calls as the real models).

``size="tiny"`` is what the tests use; ``size="full"`` has the real SD 1.x / CLIP ViT-L shapes (benchmarks).
"""

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

WIDTH = 32  # the tiny text width (the official tiny fixture's mapper is 32-d too)

SIZES = {
    "tiny": {
        "unet": {
            "block_out_channels": (16, 32),
            "layers_per_block": 1,
            "sample_size": 16,
            "attention_head_dim": 2,
            "norm_num_groups": 8,
            "cross_attention_dim": WIDTH,
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        },
        "vae": {
            "block_out_channels": (8, 16),
            "norm_num_groups": 8,
            "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2,
        },
        "text": {"hidden_size": WIDTH, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        "vision": {
            "hidden_size": WIDTH,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": WIDTH,
        },
        "processor": {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}},
    },
    "full": {
        "unet": {"cross_attention_dim": 768, "sample_size": 64},  # diffusers' defaults are the SD 1.x UNet
        "vae": {
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "sample_size": 512,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
        },
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
        "vision": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "projection_dim": 768,
        },
        "processor": {},
    },
}


def tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every character is a token; "*" is id 265 as in SD."""
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def save_tiny_models(folder: Path, seed: int = 0, size: str = "tiny") -> tuple[Path, Path]:
    """Write ``folder/sd`` (an SD 1.x layout) and ``folder/clip`` (image encoder); return both paths."""
    dims = SIZES[size]
    torch.manual_seed(seed)
    base, clip = folder / "sd", folder / "clip"
    UNet2DConditionModel(in_channels=4, out_channels=4, **dims["unet"]).save_pretrained(base / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **dims["vae"]).save_pretrained(base / "vae")
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(base / "tokenizer")
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **dims["text"],
        )
    ).save_pretrained(base / "text_encoder")
    DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ).save_pretrained(base / "scheduler")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**dims["vision"])).save_pretrained(clip)
    CLIPImageProcessor(**dims["processor"]).save_pretrained(clip)
    return base, clip
