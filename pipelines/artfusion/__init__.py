"""ArtFusion (Chen 2023): arbitrary style transfer with a dual-conditional latent diffusion model.

``from pipelines.artfusion import ArtFusionPipeline``. The heavy modules (torch, diffusers) are imported on
first use, so that ``import pipelines`` stays fast for the CLI and the fast engine.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ArtFusionPipeline": "pipelines.artfusion.pipeline_artfusion",
    "ArtFusionPipelineOutput": "pipelines.artfusion.pipeline_artfusion",
    "ArtFusionUNet": "pipelines.artfusion.unet",
    "VGGStyleEncoder": "pipelines.artfusion.style_encoder",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
