"""ArtFusion (Chen 2023): arbitrary style transfer with a dual-conditional latent diffusion model.

``from pipelines.artfusion import ArtFusionPipeline``; torch/diffusers are imported on first use.
"""

from pipelines.core.lazy import lazy_exports

_EXPORTS = {
    "ArtFusionPipeline": "pipelines.artfusion.pipeline_artfusion",
    "ArtFusionPipelineOutput": "pipelines.artfusion.pipeline_artfusion",
    "ArtFusionUNet": "pipelines.artfusion.unet",
    "VGGStyleEncoder": "pipelines.artfusion.style_encoder",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
