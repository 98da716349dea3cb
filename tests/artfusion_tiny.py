"""A tiny random-weight ArtFusion pipeline, built in-process (no downloads), with the real classes."""

import torch
from diffusers import AutoencoderKL

from pipelines.artfusion import ArtFusionPipeline, ArtFusionUNet, VGGStyleEncoder
from pipelines.artfusion.convert import KL16_CONTENT12, build_components

TINY_VGG = (8, 8, "M", 8, 8, "M", 8, 8, 8, "M", 8, 8, 8, "M", 8, 8, 8)  # style vector: 2·5·8 = 80 numbers


def tiny_pipeline(seed: int = 0) -> ArtFusionPipeline:
    torch.manual_seed(seed)
    params = dict(KL16_CONTENT12)
    _, _, _, scheduler = build_components(params)  # the real ArtFusion schedule
    unet = ArtFusionUNet(
        model_channels=16,
        num_head_channels=8,
        style_dim=80,
        hidden_time_embed_dim=32,
        time_embed_dim=32,
        num_norm_groups=8,
    )
    with torch.no_grad():  # a non-zero null style, and outputs of a useful magnitude
        unet.null_style.normal_(0, 0.5)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=8,
        scaling_factor=1.0,
        latents_mean=tuple(params["shift_values"]),
        latents_std=tuple(1.0 / v for v in params["scale_factors"]),
        force_upcast=False,
    )
    pipe = ArtFusionPipeline(unet.eval(), vae.eval(), VGGStyleEncoder(layout=TINY_VGG).eval(), scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe
