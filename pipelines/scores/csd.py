"""CSD, contrastive style descriptors (Somepalli et al. 2024, "Measuring Style Similarity in Diffusion Models"):
a CLIP ViT image encoder whose final class-token feature goes through a learned style projection; two pictures'
style similarity is the cosine of their projections.

Folder layout (a local folder, or a Hub repo holding it; ``convert_csd`` writes one)::

    csd/
      vision/       a transformers ``CLIPVisionModel`` (config.json + model.safetensors), projection-free
      style_head/   a ``CSDStyleHead`` (config.json + diffusion_pytorch_model.safetensors): Linear(hidden → 768)

The embedding is ``normalize(style_head(vision(pixels).pooler_output))``; ``pooler_output`` is the post-layernorm
class token, which is exactly the feature the original takes from OpenAI CLIP's ViT-L/14 with its projection
removed. Pictures are prepared as the original does: shorter side to the model's ``image_size`` (bicubic),
centre crop, CLIP's mean and standard deviation.

No repository in this layout is published on the Hub. The authors' checkpoint is ``pytorch_model.bin`` of
``tomg-group-umd/CSD-ViT-L`` (the original training checkpoint, OpenAI-CLIP key names); convert it once with
``pipelines.scores.convert_csd(that_file, "~/.cache/style-studio/scores/csd")``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_FOLDER = "vision"
HEAD_FOLDER = "style_head"


class CSDStyleHead(ModelMixin, ConfigMixin):
    """The style projection: class-token feature (``in_features``) → unit-length style descriptor."""

    @register_to_config
    def __init__(self, in_features: int = 1024, out_features: int = 768) -> None:
        super().__init__()
        self.projection = nn.Linear(in_features, out_features, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(features), dim=-1)


def convert_csd(
    checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, heads: int | None = None
) -> Path:
    """Write a CSD folder (layout above) from the authors' checkpoint (``model_state_dict`` or a bare state dict,
    keys ``[module.]backbone.*`` in OpenAI CLIP's naming plus ``last_layer_style``); returns the folder.

    The architecture is read from the tensors; ``heads`` defaults to width / 64 (OpenAI CLIP's rule: 16 for
    ViT-L/14). Pickled extras (the training ``args``) are read inertly, never executed."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from pipelines.core.checkpoints import load_checkpoint

    loaded = load_checkpoint(checkpoint, what="CSD checkpoint")
    state = loaded.get("model_state_dict", loaded.get("state_dict", loaded))
    state = {_strip_prefixes(key): value for key, value in state.items() if hasattr(value, "shape")}
    if "last_layer_style" not in state or "backbone.conv1.weight" not in state:
        raise ValueError(
            f"{Path(checkpoint).name} is not a CSD checkpoint: it has no last_layer_style / backbone.conv1.weight "
            "(expected pytorch_model.bin from tomg-group-umd/CSD-ViT-L)."
        )
    backbone = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
    config = _vision_config(backbone, heads, CLIPVisionConfig)
    vision = CLIPVisionModel(config)
    weights = openai_to_transformers(backbone, config.num_hidden_layers)
    if any(key.startswith("vision_model.") for key in vision.state_dict()):  # transformers 4 nests the tower
        weights = {f"vision_model.{key}": value for key, value in weights.items()}
    vision.load_state_dict(weights, strict=True)
    style = state["last_layer_style"]  # (width, 768), used as feature @ matrix
    head = CSDStyleHead(in_features=int(style.shape[0]), out_features=int(style.shape[1]))
    head.load_state_dict({"projection.weight": style.t().contiguous()}, strict=True)
    out = Path(out_dir).expanduser()
    vision.save_pretrained(out / VISION_FOLDER)
    head.save_pretrained(out / HEAD_FOLDER)
    return out


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "model."):
        key = key.removeprefix(prefix)
    return key


def _vision_config(backbone: dict[str, torch.Tensor], heads: int | None, config_class: Any) -> Any:
    width, _, patch, _ = backbone["conv1.weight"].shape
    positions = backbone["positional_embedding"].shape[0]
    layers = 1 + max(int(key.split(".")[2]) for key in backbone if key.startswith("transformer.resblocks."))
    return config_class(
        hidden_size=int(width),
        intermediate_size=int(backbone["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        num_hidden_layers=layers,
        num_attention_heads=heads or int(width) // 64,
        patch_size=int(patch),
        image_size=int(patch) * math.isqrt(positions - 1),
        hidden_act="quick_gelu",  # OpenAI CLIP's activation
        layer_norm_eps=1e-5,
    )


def openai_to_transformers(backbone: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """OpenAI CLIP ``VisionTransformer`` keys → transformers' CLIP vision tower keys (``embeddings.…``,
    ``encoder.layers.N.…``): the fused attention input projection split into q, k, v; the output projection
    ``proj`` dropped, as CSD does."""
    out = {
        "embeddings.patch_embedding.weight": backbone["conv1.weight"],
        "embeddings.class_embedding": backbone["class_embedding"],
        "embeddings.position_embedding.weight": backbone["positional_embedding"],
    }
    for ours, theirs in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for part in ("weight", "bias"):
            out[f"{ours}.{part}"] = backbone[f"{theirs}.{part}"]
    renamed = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    renamed["attn.out_proj"] = "self_attn.out_proj"
    for layer in range(layers):
        theirs, ours = f"transformer.resblocks.{layer}", f"encoder.layers.{layer}"
        for part in ("weight", "bias"):
            for old, new in renamed.items():
                out[f"{ours}.{new}.{part}"] = backbone[f"{theirs}.{old}.{part}"]
            fused = backbone[f"{theirs}.attn.in_proj_{part}"]
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), fused.chunk(3, dim=0), strict=True):
                out[f"{ours}.self_attn.{name}.{part}"] = chunk
    return out
