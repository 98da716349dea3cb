"""What each score is: its name, what it measures, its range and which way is better; and one score's value.

No numerics here (and no torch): front ends read this to label columns and sort, and ``describe_scores`` writes
the table the app and the README show.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.core.errors import InvalidRequestError

Direction = Literal["higher", "lower"]
Kind = Literal["style", "content"]


@dataclass(frozen=True)
class ScoreSpec:
    """One score, documented.

    Attributes:
        name: the key in ``SCORES`` and in every result (``style_distance``, ``content_ssim``, …).
        label: a short column heading.
        description: what it measures and how, in a sentence or two.
        range: the values it can take, in words (e.g. ``"0 … 2"``).
        better: ``"higher"`` or ``"lower"``.
        kind: ``"style"`` (against the style picture) or ``"content"`` (against the content picture).
        learned: whether it needs downloaded network weights (see ``Scorers``); classical scores always work.
        perfect: the value of a picture compared with itself.
    """

    name: str
    label: str
    description: str
    range: str
    better: Direction
    kind: Kind
    learned: bool
    perfect: float


@dataclass(frozen=True)
class ScoreValue:
    """One score of one picture: ``value``, or ``None`` with the ``reason`` it could not be computed."""

    value: float | None
    reason: str | None = None

    @classmethod
    def missing(cls, reason: str) -> ScoreValue:
        return cls(None, reason)

    @property
    def ok(self) -> bool:
        return self.value is not None

    def text(self, digits: int = 3) -> str:
        """The value rounded for a table cell, or ``"n/a"``."""
        return "n/a" if self.value is None else f"{self.value:.{digits}f}"

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "reason": self.reason}


_SPECS = (
    ScoreSpec(
        "style_distance",
        "Style distance (Magenta)",
        "Euclidean (L2) distance between the 100-number style vectors that the `fast` method's Magenta "
        "style-prediction network computes for the result and for the style picture (centre square at 256 px). "
        "L2 because the stylization network uses the vector linearly; it captures texture and palette as that "
        "network sees them.",
        "0 … unbounded (0: the same style vector; about 2 … 6 between a photo and a painting)",
        "lower",
        "style",
        False,
        0.0,
    ),
    ScoreSpec(
        "style_color_distance",
        "Colour distance",
        "Hellinger distance between the joint RGB colour histograms (8 bins per channel) of the result and of "
        "the style picture: how far the result's palette is from the painting's, wherever the colours sit.",
        "0 … 1 (0: the same colour proportions)",
        "lower",
        "style",
        False,
        0.0,
    ),
    ScoreSpec(
        "style_csd",
        "Style similarity (CSD)",
        "Cosine similarity of CSD style descriptors (Somepalli et al. 2024: a CLIP ViT image encoder with a "
        "style projection head trained so that pictures in one artistic style lie close) of the result and "
        "the style picture.",
        "−1 … 1 (1: the same style descriptor)",
        "higher",
        "style",
        True,
        1.0,
    ),
    ScoreSpec(
        "content_ssim",
        "Structure kept (SSIM)",
        "Structural similarity (Wang et al. 2004; Gaussian window 11 px, σ 1.5, standard constants) of the "
        "luminance of the result and of the content picture resized to the result's size.",
        "−1 … 1 (1: identical luminance)",
        "higher",
        "content",
        False,
        1.0,
    ),
    ScoreSpec(
        "content_edge_f1",
        "Edges kept (F1)",
        "F1 of the result's Canny edges against the content's (at the result's size), an edge counting as "
        "matched within 2 px: high when the outlines of the photo survive and few new ones appear.",
        "0 … 1 (1: the same edges)",
        "higher",
        "content",
        False,
        1.0,
    ),
    ScoreSpec(
        "content_lpips",
        "Perceptual distance (LPIPS)",
        "LPIPS (Zhang et al. 2018, VGG16 variant): distance between normalised VGG16 features of the result and "
        "the content, weighted per channel by learned 1×1 layers, averaged over space and summed over five "
        "layers; both pictures at 256 px on the long side.",
        "0 … about 1 (0: perceptually identical)",
        "lower",
        "content",
        True,
        0.0,
    ),
    ScoreSpec(
        "content_dino",
        "Content similarity (DINOv2)",
        "Cosine similarity of the DINOv2 class-token features of the result and of the content picture "
        "(centre crop at 224 px): whether the same things are still in the picture.",
        "−1 … 1 (1: the same features)",
        "higher",
        "content",
        True,
        1.0,
    ),
)

SCORES: dict[str, ScoreSpec] = {spec.name: spec for spec in _SPECS}
CLASSICAL_SCORES = tuple(name for name, spec in SCORES.items() if not spec.learned)
LEARNED_SCORES = tuple(name for name, spec in SCORES.items() if spec.learned)


def better(name: str) -> Direction:
    """``"higher"`` or ``"lower"``: which way the named score improves."""
    return get_score(name).better


def get_score(name: str) -> ScoreSpec:
    """The spec of a score, or an error that lists the score names."""
    try:
        return SCORES[name]
    except KeyError:
        raise InvalidRequestError(f"Unknown score {name!r}; the scores are {', '.join(SCORES)}.") from None


def check_names(names: Iterable[str] | None) -> tuple[str, ...]:
    """The score names asked for, in the registry's order (all of them for ``None``); unknown names fail."""
    if names is None:
        return tuple(SCORES)
    if isinstance(names, str):
        names = [names]
    wanted = set()
    for name in names:
        get_score(name)
        wanted.add(name)
    return tuple(name for name in SCORES if name in wanted)


def is_better(name: str, value: float, than: float) -> bool:
    """Whether ``value`` is strictly better than ``than`` on the named score."""
    return value > than if better(name) == "higher" else value < than


def describe_scores() -> str:
    """A markdown table of every score (for the app and the README)."""
    lines = [
        "| Score | Measures | Range | Better | Needs weights |",
        "|---|---|---|---|---|",
    ]
    for spec in SCORES.values():
        weights = "yes (see `Scorers`)" if spec.learned else "no"
        lines.append(f"| `{spec.name}` | {spec.description} | {spec.range} | {spec.better} | {weights} |")
    return "\n".join(lines)
