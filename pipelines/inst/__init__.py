"""InST (Zhang et al., CVPR 2023): learn a style from one image, then apply it to any content.

``from pipelines.inst import InSTPipeline, StyleMapper``; torch/diffusers are imported on first use.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "InSTPipeline": "pipelines.inst.pipeline_inst",
    "StyleConditioning": "pipelines.inst.pipeline_inst",
    "StyleMapper": "pipelines.inst.mapper",
    "load_official_embeddings": "pipelines.inst.official",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
