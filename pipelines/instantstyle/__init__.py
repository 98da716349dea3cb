"""InstantStyle (Wang et al. 2024): an IP-Adapter image prompt injected only into SDXL's style blocks, content kept
with a Canny ControlNet; no training.

``from pipelines.instantstyle import InstantStylePipeline``; torch/diffusers are imported on first use.
"""

from pipelines.core.lazy import lazy_exports

_EXPORTS = {
    "InstantStylePipeline": "pipelines.instantstyle.pipeline_instantstyle",
    "InstantStylePipelineOutput": "pipelines.instantstyle.pipeline_instantstyle",
    "InstantStyleConditioning": "pipelines.instantstyle.pipeline_instantstyle",
    "BLOCK_PRESETS": "pipelines.instantstyle.pipeline_instantstyle",
    "canny_map": "pipelines.instantstyle.pipeline_instantstyle",
    "needs_cpu_offload": "pipelines.instantstyle.pipeline_instantstyle",
    "InstantStyleMethod": "pipelines.instantstyle.method",
    "strength_knobs": "pipelines.instantstyle.method",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
