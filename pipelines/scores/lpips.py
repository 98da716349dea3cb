"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), VGG16
variant, as a diffusers model: ``LPIPSNetwork.from_pretrained(folder)``.

The network: VGG16's convolutional stages (ReLU after every 3×3 convolution, 2×2 max-pooling before stages 2–5),
tapped after the last ReLU of each stage; each tap is normalised to unit length along channels, the squared
difference of the two pictures' taps is weighted per channel by a 1×1 convolution without bias (the learned "lin"
layers), averaged over space, and the five layers are summed.

Folder layout (what ``save_pretrained`` writes and ``convert_lpips`` produces)::

    lpips/
      config.json                            {"channels": [64, 128, 256, 512, 512], "convs_per_stage": [2, 2, 3, 3, 3]}
      diffusion_pytorch_model.safetensors    convs.0 … convs.12 (weight, bias), lins.0 … lins.4 (weight)

No such folder is published on the Hub. To make one from the official weights (no torchvision needed here):

1. VGG16's ImageNet weights as torchvision saves them: ``vgg16-397923af.pth`` (download.pytorch.org/models/,
   or ``~/.cache/torch/hub/checkpoints/`` on a machine where torchvision fetched it);
2. LPIPS's lin layers: ``lpips/weights/v0.1/vgg.pth`` inside the ``lpips`` pip package (or the
   PerceptualSimilarity repository);
3. ``pipelines.scores.convert_lpips("vgg16-397923af.pth", "vgg.pth", "~/.cache/style-studio/scores/lpips")``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# LPIPS's "ScalingLayer": inputs in [-1, 1] are shifted and scaled to what its VGG expects.
INPUT_SHIFT = (-0.030, -0.088, -0.188)
INPUT_SCALE = (0.458, 0.448, 0.450)
NORMALISE_EPS = 1e-10
VGG16_CHANNELS = (64, 128, 256, 512, 512)
VGG16_CONVS_PER_STAGE = (2, 2, 3, 3, 3)


class LPIPSNetwork(ModelMixin, ConfigMixin):
    """LPIPS-VGG; ``channels``/``convs_per_stage`` default to VGG16 (tests build a narrow one)."""

    @register_to_config
    def __init__(
        self,
        channels: tuple[int, ...] = VGG16_CHANNELS,
        convs_per_stage: tuple[int, ...] = VGG16_CONVS_PER_STAGE,
    ) -> None:
        super().__init__()
        if len(channels) != len(convs_per_stage):
            raise ValueError(f"one width per stage: {len(channels)} widths for {len(convs_per_stage)} stages")
        convs, width_in = [], 3
        for width, count in zip(channels, convs_per_stage, strict=True):
            for _ in range(count):
                convs.append(nn.Conv2d(width_in, width, kernel_size=3, padding=1))
                width_in = width
        self.convs = nn.ModuleList(convs)
        self.lins = nn.ModuleList(nn.Conv2d(width, 1, kernel_size=1, bias=False) for width in channels)
        for lin, width in zip(self.lins, channels, strict=True):
            # Trained lin weights are non-negative (LPIPS clamps them), so a distance is never below 0; before
            # weights are loaded, each layer averages its channels.
            nn.init.constant_(lin.weight, 1.0 / width)
        self.register_buffer("shift", torch.tensor(INPUT_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(INPUT_SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The normalised taps of pictures in [-1, 1] (N×3×H×W), one per stage."""
        hidden = (pixels - self.shift) / self.scale
        taps, index = [], 0
        for stage, count in enumerate(self.config.convs_per_stage):
            if stage:
                hidden = F.max_pool2d(hidden, kernel_size=2, stride=2)
            for _ in range(count):
                hidden = F.relu(self.convs[index](hidden))
                index += 1
            norm = hidden.pow(2).sum(dim=1, keepdim=True).sqrt()
            taps.append(hidden / (norm + NORMALISE_EPS))
        return taps

    def distance(self, first: list[torch.Tensor], second: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between two pictures' taps (from ``features``): one value per picture in the batch."""
        layers = [lin((a - b).pow(2)).mean(dim=(2, 3)) for lin, a, b in zip(self.lins, first, second, strict=True)]
        return torch.stack(layers).sum(dim=0).flatten()

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(first), self.features(second))


def torchvision_conv_indices(convs_per_stage: tuple[int, ...] = VGG16_CONVS_PER_STAGE) -> list[int]:
    """Where each convolution sits in torchvision's ``vgg16().features`` (a ReLU after each, a pool per stage)."""
    indices, position = [], 0
    for stage, count in enumerate(convs_per_stage):
        if stage:
            position += 1  # the max-pool
        for _ in range(count):
            indices.append(position)
            position += 2  # the convolution and its ReLU
    return indices


def convert_lpips(
    vgg16_weights: str | os.PathLike[str], lin_weights: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> Path:
    """Write an ``LPIPSNetwork`` folder from torchvision's VGG16 state dict (``features.N.weight``/``bias``) and
    LPIPS's lin-layer state dict (``linK.model.1.weight``); returns the folder. Widths come from the files."""
    from pipelines.core.checkpoints import load_checkpoint

    vgg = load_checkpoint(vgg16_weights, what="VGG16 weights file")
    lins = load_checkpoint(lin_weights, what="LPIPS lin-layer weights file")
    indices = torchvision_conv_indices()
    try:
        conv_weights = [(vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"]) for i in indices]
        lin_tensors = [_lin_weight(lins, k) for k in range(len(VGG16_CHANNELS))]
    except KeyError as exc:
        raise ValueError(
            f"{exc.args[0]} is missing: expected torchvision's vgg16 state dict and LPIPS v0.1's vgg.pth"
        ) from None
    stage_ends = [sum(VGG16_CONVS_PER_STAGE[: s + 1]) - 1 for s in range(len(VGG16_CONVS_PER_STAGE))]
    channels = tuple(int(conv_weights[end][0].shape[0]) for end in stage_ends)
    network = LPIPSNetwork(channels=channels, convs_per_stage=VGG16_CONVS_PER_STAGE)
    state = {}
    for n, (weight, bias) in enumerate(conv_weights):
        state[f"convs.{n}.weight"], state[f"convs.{n}.bias"] = weight, bias
    for k, weight in enumerate(lin_tensors):
        state[f"lins.{k}.weight"] = weight
    network.load_state_dict(state, strict=True)
    out = Path(out_dir).expanduser()
    network.save_pretrained(out)
    return out


def _lin_weight(state: dict, k: int) -> torch.Tensor:
    """LPIPS saves ``linK.model.1.weight`` (a dropout precedes the conv); ``linK.model.0.weight`` without it."""
    for key in (f"lin{k}.model.1.weight", f"lin{k}.model.0.weight"):
        if key in state:
            return state[key]
    raise KeyError(f"lin{k}.model.1.weight")
