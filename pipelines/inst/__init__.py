"""InST (Zhang et al., CVPR 2023): learn a style from one image, then apply it to any content.

``from pipelines.inst import InSTPipeline, StyleMapper``; torch/diffusers are imported on first use.
"""

from pipelines.core.lazy import lazy_exports

_EXPORTS = {
    "InSTPipeline": "pipelines.inst.pipeline_inst",
    "StyleConditioning": "pipelines.inst.pipeline_inst",
    "StyleMapper": "pipelines.inst.mapper",
    "load_official_embeddings": "pipelines.inst.official",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
