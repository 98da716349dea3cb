"""How long and how large a video one request may be, checked from the file's header before any work.

Two budgets: one for the ``fast`` method (about a tenth of a second per frame on a laptop CPU: ten minutes of
1080p is an evening, but it finishes) and a much smaller one for the diffusion methods (seconds to minutes per
frame). A method with diffusion steps gets the diffusion budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.core.errors import InvalidRequestError
from pipelines.core.method import StyleMethod
from pipelines.video.reading import VideoInfo


@dataclass(frozen=True)
class VideoBudget:
    """The most one video may be: length, frame count, and pixels per frame made (after ``max_side``)."""

    max_seconds: float
    max_frames: int
    max_pixels: int


@dataclass(frozen=True)
class VideoLimits:
    """The budgets by kind of method (pass your own to ``stylize_video`` to allow more, e.g. on a GPU server)."""

    fast: VideoBudget = VideoBudget(max_seconds=600.0, max_frames=600 * 60, max_pixels=1920 * 1080)
    diffusion: VideoBudget = VideoBudget(max_seconds=10.0, max_frames=300, max_pixels=1024 * 576)

    def budget_for(self, method: StyleMethod) -> VideoBudget:
        return self.fast if method.steps is None else self.diffusion

    def check(self, info: VideoInfo, size: tuple[int, int], method: StyleMethod) -> None:
        """Refuse a video over the method's budget, saying what is over and how to bring it within."""
        budget = self.budget_for(method)
        name = info.path.name
        if info.duration_s > budget.max_seconds:
            raise InvalidRequestError(
                f"{name} is {_duration(info.duration_s)} long; the {method.name} method takes videos of at most "
                f"{_duration(budget.max_seconds)}. Trim it to that length (or split it) and try again."
            )
        if info.frame_count > budget.max_frames:
            raise InvalidRequestError(
                f"{name} has about {info.frame_count} frames ({float(info.fps):.3g} per second); the {method.name} "
                f"method takes at most {budget.max_frames} frames per video. Trim it, or lower its frame rate first."
            )
        width, height = size
        if width * height > budget.max_pixels:
            fitting = largest_side_within(info, budget.max_pixels)
            raise InvalidRequestError(
                f"Frames of {width}×{height} pixels are more than the {method.name} method takes "
                f"({budget.max_pixels:,} pixels per frame). Set max_side to {fitting} or less."
            )


def largest_side_within(info: VideoInfo, max_pixels: int) -> int:
    """A round ``max_side`` (a multiple of 16) whose frames for this video have at most ``max_pixels`` pixels."""
    long_side = max(info.width, info.height)
    side = long_side // 16 * 16
    while side > 16:
        width, height = info.output_size(side)
        if width * height <= max_pixels:
            break
        side -= 16
    return side


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
