"""ArtFusion (Chen 2023): arbitrary style transfer with a dual-conditional latent diffusion model."""

from pipelines.artfusion.pipeline_artfusion import ArtFusionPipeline, ArtFusionPipelineOutput
from pipelines.artfusion.style_encoder import VGGStyleEncoder
from pipelines.artfusion.unet import ArtFusionUNet

__all__ = ["ArtFusionPipeline", "ArtFusionPipelineOutput", "ArtFusionUNet", "VGGStyleEncoder"]
