"""ArtFusion's style encoder: frozen VGG16 feature statistics.

The style vector is, for each of relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, the per-channel standard
deviation (unbiased) then the mean over the picture: 2·(64+128+256+512+512) = 2944 numbers. Inputs in [-1, 1]
first go through the LPIPS scaling layer. Weights come from the ArtFusion checkpoint (no torchvision download).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (3, 8, 15, 22, 29)  # indices in VGG16 ``features`` right after relu1_2 … relu5_3
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class VGGStyleEncoder(ModelMixin, ConfigMixin):
    """``forward(images in [-1, 1], (B, 3, H, W)) -> (B, 2944)`` style vectors (computed in float32)."""

    @register_to_config
    def __init__(self, layout: tuple = VGG16_LAYOUT) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in layout:  # same indices as torchvision's vgg16().features, so weights map one to one
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.register_buffer("input_shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("input_scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    @property
    def style_dim(self) -> int:
        return 2 * sum(self.features[i - 1].out_channels for i in TAPS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.features[0].weight.dtype
        h = ((images.float() - self.input_shift.float()) / self.input_scale.float()).to(dtype)
        statistics = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in TAPS:
                std, mean = torch.std_mean(h.float(), dim=(2, 3), unbiased=True)
                statistics += [std, mean]
            if index == TAPS[-1]:
                break
        return torch.cat(statistics, dim=1)
