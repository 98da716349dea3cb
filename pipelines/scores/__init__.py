"""Quality scores for a stylized picture: how much of the style it took, how much of the content it kept.

>>> from pipelines.scores import score_picture, better
>>> scores = score_picture(result.image, "photo.jpg", "painting.jpg")
>>> scores["content_ssim"].value, better("content_ssim")      # (0.61, "higher")
>>> scores["style_csd"].reason                                 # why a learned score is None, if it is

``SCORES`` documents each score (``describe_scores()`` as a markdown table). Classical scores
(``style_distance``, ``style_color_distance``, ``content_ssim``, ``content_edge_f1``) need nothing but the
bundled `fast` networks; learned ones (``style_csd``, ``content_lpips``, ``content_dino``) need weights, loaded
once with ``Scorers.load(...)`` (see ``pipelines.scores.learned`` for locations and layouts).

Modules: ``registry`` (specs, values, the table), ``classical`` (SSIM, edges, histograms on arrays),
``pictures`` (the decoded trio), ``scoring`` (``score_picture``), ``learned`` (``Scorers``), ``lpips`` and ``csd``
(the two networks defined here, with converters from the official weights). torch loads only with a learned model.
"""

from pipelines.core.lazy import lazy_exports
from pipelines.scores.learned import (
    DEFAULT_DINO,
    Scorers,
    check_locations,
    default_locations,
    default_scorers,
    forget_default_scorers,
)
from pipelines.scores.registry import (
    CLASSICAL_SCORES,
    LEARNED_SCORES,
    SCORES,
    ScoreSpec,
    ScoreValue,
    better,
    check_names,
    describe_scores,
    get_score,
    is_better,
)
from pipelines.scores.scoring import score_picture

# The two networks import torch and diffusers: loaded on first use.
_LAZY = {
    "LPIPSNetwork": "pipelines.scores.lpips",
    "convert_lpips": "pipelines.scores.lpips",
    "CSDStyleHead": "pipelines.scores.csd",
    "convert_csd": "pipelines.scores.csd",
}
__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    *_LAZY,
    "CLASSICAL_SCORES",
    "DEFAULT_DINO",
    "LEARNED_SCORES",
    "SCORES",
    "ScoreSpec",
    "ScoreValue",
    "Scorers",
    "better",
    "check_locations",
    "check_names",
    "default_locations",
    "default_scorers",
    "describe_scores",
    "forget_default_scorers",
    "get_score",
    "is_better",
    "score_picture",
]
