"""StyleID (Chung, Hyun & Heo, CVPR 2024): training-free style transfer by attention injection in Stable Diffusion.

``from pipelines.styleid import StyleIDPipeline``; torch/diffusers are imported on first use.
"""

from pipelines.core.lazy import lazy_exports

_EXPORTS = {
    "StyleIDPipeline": "pipelines.styleid.pipeline_styleid",
    "StyleIDPipelineOutput": "pipelines.styleid.pipeline_styleid",
    "StyleIDSchedule": "pipelines.styleid.pipeline_styleid",
    "StyleIDInversion": "pipelines.styleid.pipeline_styleid",
    "StyleInjectionProcessor": "pipelines.styleid.pipeline_styleid",
    "StyleIDMethod": "pipelines.styleid.method",
    "injection_schedule": "pipelines.styleid.method",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
