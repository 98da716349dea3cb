"""``score_picture``: every score of one result, classical ones always, learned ones where their weights are.

A compare grid scores many cells against the same content and style pictures, so what depends only on those is
remembered by pixel digest: the style picture's colour histogram and Magenta vector, the content's luminance and
edges at the result's size (and, in ``Scorers``, the learned embeddings).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.core.context import StudioContext, default_context
from pipelines.core.errors import StudioError
from pipelines.core.memo import Memo
from pipelines.scores import classical
from pipelines.scores.pictures import ScoredPictures
from pipelines.scores.registry import SCORES, ScoreValue, check_names

if TYPE_CHECKING:
    from pipelines.scores.learned import Scorers

NO_STYLE_PICTURE = "there is no style picture to compare with (the method took no style image)"

_style_histograms: Memo[np.ndarray] = Memo(64)
_content_views: Memo[tuple[np.ndarray, np.ndarray]] = Memo(16)  # (luminance, edges) at one result size


def score_picture(
    result: Any,
    content: Any,
    style: Any,
    *,
    names: Iterable[str] | None = None,
    context: StudioContext | None = None,
    scorers: Scorers | None = None,
) -> dict[str, ScoreValue]:
    """Score ``result`` (stylized from ``content`` in the style of ``style``) on each of ``names`` (default: all
    of ``SCORES``), in the registry's order.

    Pictures: paths, bytes, arrays or PIL images (a ``StyleResult`` for ``result``); ``style`` may be ``None``,
    which makes the style scores ``None`` with a reason. ``context`` supplies the `fast` engine for
    ``style_distance`` (its loaded instance is reused). Learned scores come from ``scorers`` (``Scorers.load``,
    loaded once for a whole grid); without it, from models loaded once per process from the default locations
    (``default_locations``; DINOv2 is fetched from the Hub the first time where the Hub is reachable). A learned
    score whose weights are absent is ``ScoreValue(None, reason)``, never an exception.
    """
    wanted = check_names(names)
    context = context or default_context()
    pictures = ScoredPictures.read(result, content, style)
    learned = [name for name in wanted if SCORES[name].learned]
    if learned and scorers is None:
        from pipelines.scores.learned import default_scorers

        scorers = default_scorers(context, learned)

    scores: dict[str, ScoreValue] = {}
    for name in wanted:
        spec = SCORES[name]
        if spec.kind == "style" and pictures.style is None:
            scores[name] = ScoreValue.missing(NO_STYLE_PICTURE)
        elif spec.learned:
            assert scorers is not None
            scores[name] = scorers.score(name, pictures)
        else:
            scores[name] = _CLASSICAL[name](pictures, context)
    return scores


def _style_distance(pictures: ScoredPictures, context: StudioContext) -> ScoreValue:
    try:
        engine = magenta_engine(context)
    except Exception as exc:  # onnxruntime missing or broken: this score is unavailable, the others are not
        return ScoreValue.missing(f"the fast method's style network could not be loaded ({exc})")
    assert pictures.style is not None
    style_vector = engine.style_vector(pictures.style, pictures.style_digest)
    result_vector = engine.style_vector(pictures.result, pictures.result_digest)
    return ScoreValue(float(np.linalg.norm(np.ravel(result_vector) - np.ravel(style_vector))))


def _style_color_distance(pictures: ScoredPictures, context: StudioContext) -> ScoreValue:
    style = pictures.style
    assert style is not None and pictures.style_digest is not None
    style_histogram = _style_histograms.get(pictures.style_digest, lambda: classical.color_histogram(style))
    return ScoreValue(classical.hellinger_distance(classical.color_histogram(pictures.result), style_histogram))


def _content_view(pictures: ScoredPictures) -> tuple[np.ndarray, np.ndarray]:
    """The content's luminance and Canny edges at the result's size (remembered: the grid's cells share them)."""

    def compute() -> tuple[np.ndarray, np.ndarray]:
        grey = classical.luminance(pictures.content_at_result_size)
        return grey, classical.edge_map(grey)

    return _content_views.get(pictures.size_key, compute)


def _content_ssim(pictures: ScoredPictures, context: StudioContext) -> ScoreValue:
    content_grey, _ = _content_view(pictures)
    return ScoreValue(classical.ssim(classical.luminance(pictures.result), content_grey))


def _content_edge_f1(pictures: ScoredPictures, context: StudioContext) -> ScoreValue:
    _, content_edges = _content_view(pictures)
    result_edges = classical.edge_map(classical.luminance(pictures.result))
    return ScoreValue(classical.edge_f1(content_edges, result_edges))


_CLASSICAL: dict[str, Callable[[ScoredPictures, StudioContext], ScoreValue]] = {
    "style_distance": _style_distance,
    "style_color_distance": _style_color_distance,
    "content_ssim": _content_ssim,
    "content_edge_f1": _content_edge_f1,
}

_own_engine: Any = None
_own_engine_lock = threading.Lock()


def magenta_engine(context: StudioContext) -> Any:
    """The `fast` method's engine (whose style predictor gives ``style_distance``): the instance loaded in the
    context's pipeline cache, so scoring shares its style-vector memo with stylizing; when that cache cannot
    serve it (other weights configured for `fast`, a remembered failure), one built here once per process."""
    global _own_engine
    from pipelines.core.studio import loaded_model

    try:
        engine, _ = loaded_model("fast", context)
        return engine
    except StudioError:
        pass
    with _own_engine_lock:
        if _own_engine is None:
            from pipelines.fast.engine import FastEngine

            _own_engine = FastEngine()
        return _own_engine
