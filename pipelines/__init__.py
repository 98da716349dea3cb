"""Style studio: content image + style image → stylized picture, with one API for every method.

>>> import pipelines
>>> result = pipelines.stylize("photo.jpg", "painting.jpg", method="fast", strength=0.7)
>>> result.save("out.png")   # PNG that carries every parameter
>>> result.metadata.summary()

This module is the one door: the front ends (``demo.py``, ``python -m pipelines``, ``modal_app.py``) use only
what it exports. Settings travel in a ``StudioContext`` built at the edge (``StudioContext.from_environment``).
"""

from pipelines.artfusion.method import ArtFusionMethod
from pipelines.backends import ModalBackend, RemoteBackendError
from pipelines.compare import COMPARE_MAX_SIDE, Cell, Comparison, compare
from pipelines.core.availability import Availability
from pipelines.core.cache import PipelineCache, PipelineKey
from pipelines.core.compiling import COMPILE_HELP, COMPILE_MODES, check_compile_setting
from pipelines.core.context import (
    BACKENDS,
    StudioContext,
    default_context,
    parse_score_weights,
    parse_weights,
    set_default_context,
)
from pipelines.core.device import (
    DEVICE_CHOICES,
    PRECISION_HELP,
    PRECISIONS,
    check_device_name,
    cuda_available,
    resolve_device,
)
from pipelines.core.errors import (
    FRONT_ENDS,
    GenerationCancelled,
    ImageInputError,
    InvalidRequestError,
    MethodUnavailableError,
    OutOfMemoryError,
    StudioError,
    WeightsFix,
    describe_error,
)
from pipelines.core.images import DEFAULT_MAX_SIDE, image_digest, load_image, preserve_content_color
from pipelines.core.lazy import lazy_exports
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
from pipelines.core.request import MAX_SEED, REQUEST_PARAMETERS, Parameter, StyleRequest, get_request_parameter
from pipelines.core.result import VERSION, ResultMetadata, StyleResult, Timings
from pipelines.core.studio import (
    prefetch,
    preload,
    request_from_metadata,
    resolve_method,
    retry_method,
    run,
    run_here,
    stylize,
)
from pipelines.evaluate import EVALUATE_STRENGTHS, Evaluation, evaluate, evaluation_pairs
from pipelines.fast import FastMethod
from pipelines.inst.learning import (
    CLIP_MODES,
    LearnEvent,
    LearningRun,
    import_style,
    learn_style,
    style_library,
)
from pipelines.inst.library import StyleEntry, StyleLibrary
from pipelines.inst.method import InSTMethod
from pipelines.inst.presets import DEFAULT_RESOLUTION as LEARN_RESOLUTION
from pipelines.inst.presets import PRESETS as LEARN_PRESETS
from pipelines.instantstyle.method import InstantStyleMethod
from pipelines.styleid.method import StyleIDMethod

register_method(FastMethod())
register_method(ArtFusionMethod())
register_method(InSTMethod())
register_method(StyleIDMethod())
register_method(InstantStyleMethod())


def read_metadata(source) -> ResultMetadata:  # noqa: ANN001 (a path or bytes, as read_png_metadata)
    """The typed metadata of a result PNG (``read_png_metadata`` gives the raw dict)."""
    return ResultMetadata.from_dict(read_png_metadata(source))


def convert_artfusion(checkpoint, out_dir, original_config=None):  # noqa: ANN001, ANN201
    """Convert an original ArtFusion ``.ckpt`` into a diffusers folder (atomically); returns the folder."""
    from pipelines.artfusion.weights import convert_to_folder

    return convert_to_folder(checkpoint, out_dir, original_config)


# Video, batches and the web endpoint load PyAV, OpenCV and FastAPI: imported on first use, so that
# ``import pipelines`` stays quick for a picture.
_LAZY = {
    "VIDEO_PARAMETERS": "pipelines.video",
    "VIDEO_OUTPUT_FORMATS": "pipelines.video",
    "READABLE_VIDEOS": "pipelines.video",
    "VideoEstimate": "pipelines.video",
    "VideoLimits": "pipelines.video",
    "VideoProgress": "pipelines.video",
    "VideoResult": "pipelines.video",
    "estimate_video": "pipelines.video",
    "probe_video": "pipelines.video",
    "read_video_metadata": "pipelines.video",
    "stylize_video": "pipelines.video",
    "BatchSummary": "pipelines.batch",
    "expand_inputs": "pipelines.batch",
    "read_manifest": "pipelines.batch",
    "stylize_batch": "pipelines.batch",
    "SCORES": "pipelines.scores",
    "ScoreSpec": "pipelines.scores",
    "ScoreValue": "pipelines.scores",
    "Scorers": "pipelines.scores",
    "describe_scores": "pipelines.scores",
    "score_picture": "pipelines.scores",
    "WebSettings": "pipelines.web",
    "create_web_app": "pipelines.web",
}
__getattr__ = lazy_exports(__name__, _LAZY)

__version__ = VERSION
__all__ = [
    *_LAZY,
    "COMPARE_MAX_SIDE",
    "EVALUATE_STRENGTHS",
    "Cell",
    "Comparison",
    "Evaluation",
    "compare",
    "evaluate",
    "evaluation_pairs",
    "BACKENDS",
    "CLIP_MODES",
    "COMPILE_HELP",
    "COMPILE_MODES",
    "DEFAULT_MAX_SIDE",
    "DEVICE_CHOICES",
    "PRECISIONS",
    "PRECISION_HELP",
    "FRONT_ENDS",
    "LEARN_PRESETS",
    "LEARN_RESOLUTION",
    "MAX_SEED",
    "REQUEST_PARAMETERS",
    "Availability",
    "FastMethod",
    "GenerationCancelled",
    "ImageInputError",
    "InstantStyleMethod",
    "InvalidRequestError",
    "LearnEvent",
    "LearningRun",
    "MethodInputs",
    "MethodUnavailableError",
    "ModalBackend",
    "OptionSpec",
    "OutOfMemoryError",
    "Parameter",
    "PipelineCache",
    "PipelineKey",
    "RemoteBackendError",
    "ResultMetadata",
    "StepsSpec",
    "StudioContext",
    "StudioError",
    "StyleEntry",
    "StyleIDMethod",
    "StyleLibrary",
    "StyleMethod",
    "StyleRequest",
    "StyleResult",
    "Timings",
    "WeightsFix",
    "check_compile_setting",
    "check_device_name",
    "convert_artfusion",
    "cuda_available",
    "default_context",
    "default_method_name",
    "describe_error",
    "get_method",
    "get_request_parameter",
    "image_digest",
    "import_style",
    "learn_style",
    "load_image",
    "method_names",
    "parse_score_weights",
    "parse_weights",
    "prefetch",
    "preload",
    "preserve_content_color",
    "read_metadata",
    "read_png_metadata",
    "register_method",
    "request_from_metadata",
    "resolve_device",
    "resolve_method",
    "retry_method",
    "run",
    "run_here",
    "set_default_context",
    "style_library",
    "stylize",
]
