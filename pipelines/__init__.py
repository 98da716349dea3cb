"""Style studio: content image + style image → stylized picture, with one API for every method.

>>> from pipelines import stylize
>>> result = stylize("photo.jpg", "painting.jpg", method="fast", strength=0.7, seed=0)
>>> result.save("out.png")   # PNG that carries every parameter

Front ends (``demo.py``, ``python -m pipelines``, ``modal_app.py``) only use what this module exports.
"""

from pipelines.artfusion.method import ArtFusionMethod
from pipelines.core.cache import PIPELINE_CACHE, PipelineCache, PipelineKey
from pipelines.core.device import DEVICE_CHOICES, resolve_device
from pipelines.core.errors import ImageInputError, InvalidRequestError, MethodUnavailableError, StudioError
from pipelines.core.images import DEFAULT_MAX_SIDE, load_image, preserve_content_color
from pipelines.core.method import (
    MethodInputs,
    OptionSpec,
    StepsSpec,
    StyleMethod,
    default_method_name,
    get_method,
    method_names,
    register_method,
)
from pipelines.core.png import read_png_metadata
from pipelines.core.request import StyleRequest
from pipelines.core.result import StyleResult
from pipelines.core.studio import VERSION, preload, request_from_metadata, run, stylize
from pipelines.fast import FastMethod
from pipelines.inst.method import InSTMethod

register_method(FastMethod())
register_method(ArtFusionMethod())
register_method(InSTMethod())

__version__ = VERSION
__all__ = [
    "DEFAULT_MAX_SIDE",
    "DEVICE_CHOICES",
    "PIPELINE_CACHE",
    "FastMethod",
    "ImageInputError",
    "InvalidRequestError",
    "MethodInputs",
    "MethodUnavailableError",
    "OptionSpec",
    "PipelineCache",
    "PipelineKey",
    "StepsSpec",
    "StudioError",
    "StyleMethod",
    "StyleRequest",
    "StyleResult",
    "default_method_name",
    "get_method",
    "load_image",
    "method_names",
    "preload",
    "preserve_content_color",
    "read_png_metadata",
    "register_method",
    "request_from_metadata",
    "resolve_device",
    "run",
    "stylize",
]
