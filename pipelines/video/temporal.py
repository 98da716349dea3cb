"""Temporal consistency: each new stylized frame is blended with the previous *output* frame, carried onto the
new frame along the optical flow of the *input* frames, wherever that flow can be trusted.

A style network paints every frame afresh, and tiny input changes (sensor noise, compression) change its
brushwork: played back, the picture boils. Following the previous output along the motion keeps still things
still and lets moving things carry their paint. Per frame (``TemporalBlender.blend``):

1. Scene cut? The mean absolute difference of tiny greyscale versions of the two input frames
   (``CUT_SIDE`` px on the long side, 0..1) above ``CUT_THRESHOLD`` starts over from the fresh stylization.
2. DIS optical flow (OpenCV) both ways between the input frames, on copies at most ``FLOW_SIDE`` px on the long
   side (fast, and plenty for where the paint goes), scaled up to the output size.
3. Trust map: a pixel keeps the warped previous output only where the backward and forward flows agree (the
   forward–backward check of Sundaram et al. 2010, as used for video style transfer by Ruder et al. 2016), where
   it came from inside the previous frame, and where the input's colour along the flow barely changed. Newly
   revealed areas behind a moving object fail these checks; they, and a small margin around them, take the
   fresh stylization. The map is softened so no seam shows.
4. ``output = w · warped_previous_output + (1 − w) · fresh`` with ``w = smoothness × trust``.

With ``smoothness`` s, a still area becomes an exponential moving average of its fresh stylizations: the
frame-to-frame change shrinks by about (1 − s)/√(1 + s) (0.23 at s = 0.7), while a revealed or changed area shows
its fresh paint at once. The default, 0.7, comes from the benchmark's sweep (bench/results/video_cpu_480p.json):
measured flicker on the still part 0.42 / 0.33 / 0.24 / 0.16 / 0.09 of per-frame stylization at s = 0.5 … 0.9,
fine detail kept about 95 % throughout; 0.7 is well inside the ≤ 0.5 goal while a change the checks let through
(a slow lighting change, say) fades in over about 1/(1 − s) ≈ 3 frames rather than the 10 of s = 0.9.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.core.request import check_fraction

DEFAULT_SMOOTHNESS = 0.7  # chosen by measurement: see the module docstring and bench/results/video_cpu_480p.json
FLOW_SIDE = 480  # long side of the frame copies the flow is computed on
CUT_SIDE = 64  # long side of the tiny frames compared for scene cuts
# Mean absolute difference (0..1) of the tiny greyscale frames above which two frames are different shots.
# On the synthetic clips sensor noise scores about 0.005, the moving object 0.01, the cut 0.15 (bench/video.py);
# fast camera motion in real footage can reach a few hundredths. A cut this misses (two similar shots) is still
# mostly caught by the trust map's colour check.
CUT_THRESHOLD = 0.1
# Forward–backward check (in flow pixels): |b + f|² ≤ FB_RELATIVE·(|b|² + |f|²) + FB_ABSOLUTE.
FB_RELATIVE, FB_ABSOLUTE = 0.05, 0.5
COLOUR_CHANGE = 24  # levels in any RGB channel: more than this along the flow is a new thing, not the old one moved
MARGIN = 2  # flow pixels of fresh stylization around untrusted areas (flow is soft at object edges)


@dataclass(frozen=True)
class BlendStep:
    """What the blender did with one frame."""

    index: int
    reset: bool  # no previous output was used: the first frame, a scene cut, or smoothness 0
    scene_cut: bool  # a cut was detected before this frame
    kept: float  # share of the frame that took in the previous output (0 on a reset)
    cut_score: float  # the tiny frames' mean absolute difference (0..1) from the previous input frame


class TemporalBlender:
    """Blends each fresh stylization with the previous output warped along the input's motion (see the module
    docstring). Feed frames in order; ``steps`` records what happened to each (``scene_cuts`` lists the cuts)."""

    def __init__(
        self,
        smoothness: float = DEFAULT_SMOOTHNESS,
        *,
        flow_side: int = FLOW_SIDE,
        cut_threshold: float = CUT_THRESHOLD,
    ) -> None:
        self.smoothness = check_fraction("smoothness", smoothness)
        self.cut_threshold = cut_threshold
        self.flow_side = flow_side
        self._flow = FlowField()
        self._previous_input: FlowFrame | None = None
        self._previous_output: np.ndarray | None = None  # float32, kept unrounded so the average does not drift
        self.steps: list[BlendStep] = []

    @property
    def last(self) -> BlendStep | None:
        return self.steps[-1] if self.steps else None

    @property
    def scene_cuts(self) -> list[int]:
        """Indices of the frames where a scene cut was detected (the blender started over there)."""
        return [step.index for step in self.steps if step.scene_cut]

    def reset(self) -> None:
        """Forget the previous frame: the next one is taken as freshly stylized."""
        self._previous_input = None
        self._previous_output = None

    def blend(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        """The output frame (uint8, the stylized frame's size) for input ``frame`` and its fresh ``stylized``
        version (both RGB uint8 arrays; the input may be any size, the flow is scaled to the stylized one)."""
        current = FlowFrame(frame, self.flow_side)
        previous, self._previous_input = self._previous_input, current
        cut_score = current.difference(previous) if previous is not None else 0.0
        scene_cut = previous is not None and cut_score > self.cut_threshold
        fresh = stylized.astype(np.float32)
        last = self._previous_output
        if previous is None or scene_cut or self.smoothness == 0.0 or last is None or last.shape != fresh.shape:
            self._record(True, scene_cut, 0.0, cut_score)
            return self._emit(fresh)
        height, width = stylized.shape[:2]
        backward, trust = self._flow.trusted_backward(previous, current)
        warped = warp(last, backward, (width, height))
        weight = cv2.resize(trust, (width, height), interpolation=cv2.INTER_LINEAR) * np.float32(self.smoothness)
        blended = cv2.blendLinear(warped, fresh, weight, 1.0 - weight)  # one pass: w·warped + (1 − w)·fresh
        self._record(False, False, cv2.mean(trust)[0], cut_score)
        return self._emit(blended)

    def _emit(self, output: np.ndarray) -> np.ndarray:
        self._previous_output = output
        return cv2.convertScaleAbs(cv2.max(output, 0.0))  # rounded, saturated at 255 (cubic warps overshoot a bit)

    def _record(self, reset: bool, scene_cut: bool, kept: float, cut_score: float) -> None:
        self.steps.append(BlendStep(len(self.steps), reset, scene_cut, kept, cut_score))


class FlowFrame:
    """An input frame as the flow sees it: colour and greyscale copies at most ``side`` px on the long side, and a
    tiny greyscale one for cut detection."""

    def __init__(self, rgb: np.ndarray, side: int = FLOW_SIDE) -> None:
        self.colour = _fit(rgb, side)
        self.grey = cv2.cvtColor(self.colour, cv2.COLOR_RGB2GRAY)
        self.tiny = _fit(self.grey, CUT_SIDE).astype(np.float32) / 255.0

    def difference(self, other: FlowFrame) -> float:
        """Mean absolute difference (0..1) of the tiny greyscale frames: the scene-cut score."""
        if other.tiny.shape != self.tiny.shape:
            return 1.0
        return float(np.abs(self.tiny - other.tiny).mean())


class FlowField:
    """DIS optical flow between two frames, with the map of where to trust it."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def trusted_backward(self, previous: FlowFrame, current: FlowFrame) -> tuple[np.ndarray, np.ndarray]:
        """The backward flow (for each pixel of ``current``, where it was in ``previous``) and a 0..1 map of where
        to trust it; both at the flow frames' size."""
        backward = self._dis.calc(current.grey, previous.grey, None)
        forward = self._dis.calc(previous.grey, current.grey, None)
        height, width = current.grey.shape
        source = _grid(width, height) + backward  # where each current pixel was in the previous frame
        # Forward–backward: following the flow back and then forth again should land where it started.
        forward_there = cv2.remap(forward, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        bx, by = cv2.split(backward)
        fx, fy = cv2.split(forward_there)
        mismatch = np.square(bx + fx) + np.square(by + fy)
        agree = mismatch <= FB_RELATIVE * (bx * bx + by * by + fx * fx + fy * fy) + FB_ABSOLUTE
        # It came from inside the previous frame (within a pixel: the border is replicated that far).
        sx, sy = cv2.split(source)
        inside = (sx >= -1) & (sx <= width) & (sy >= -1) & (sy <= height)
        # And it looks like what was there: in colour, since a new thing can match the old one's brightness.
        colour_there = cv2.remap(previous.colour, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        same_thing = cv2.absdiff(colour_there, current.colour).max(axis=-1) <= COLOUR_CHANGE
        trusted = (agree & inside & same_thing).astype(np.uint8)
        # Widen the untrusted areas by MARGIN, then soften the edge so the blend shows no seam.
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MARGIN + 1, 2 * MARGIN + 1))
        trust = cv2.blur(cv2.erode(trusted, kernel).astype(np.float32), (3, 3))
        return backward, trust


def warp(image: np.ndarray, backward: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (the previous frame, at ``size``) carried onto the current frame along ``backward`` flow computed
    at another resolution (scaled up here: flow vectors grow with the picture)."""
    width, height = size
    flow_h, flow_w = backward.shape[:2]
    if (flow_w, flow_h) != (width, height):
        backward = cv2.resize(backward, (width, height), interpolation=cv2.INTER_LINEAR)
        backward *= np.array([width / flow_w, height / flow_h], dtype=np.float32)
    # Bicubic: the output is resampled again every frame, and bilinear would soften it a little each time.
    return cv2.remap(image, _grid(width, height) + backward, None, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def flicker(
    frames_in: Sequence[np.ndarray],
    frames_out: Sequence[np.ndarray],
    *,
    still_below: float = 0.5,
    flow_side: int = FLOW_SIDE,
) -> float:
    """Temporal flicker of a stylized video: the mean absolute difference (grey levels, 0..255, over RGB) between
    each output frame and the previous output warped onto it (flow from the *input* frames), counted only where
    the input does not move (flow under ``still_below`` input pixels and passing the forward–backward check).
    Pairs across a scene cut are skipped. Lower is steadier; compare runs on the same input."""
    if len(frames_in) != len(frames_out):
        raise ValueError(f"flicker needs as many output frames as input frames ({len(frames_out)} ≠ {len(frames_in)})")
    flow = FlowField()
    total, counted = 0.0, 0
    previous: FlowFrame | None = None
    for index, (frame, output) in enumerate(zip(frames_in, frames_out, strict=True)):
        current = FlowFrame(frame, flow_side)
        if previous is not None and current.difference(previous) <= CUT_THRESHOLD:
            backward, trust = flow.trusted_backward(previous, current)
            # Flow is measured in flow pixels; the threshold is in input pixels.
            flow_scale = frame.shape[1] / backward.shape[1]
            still = (np.hypot(backward[..., 0], backward[..., 1]) * flow_scale < still_below) & (trust >= 1.0)
            height, width = output.shape[:2]
            still = cv2.resize(still.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
            if still.any():
                warped = warp(frames_out[index - 1].astype(np.float32), backward, (width, height))
                difference = np.abs(output.astype(np.float32) - warped).mean(-1)
                total += float(difference[still].sum())
                counted += int(still.sum())
        previous = current
    return total / counted if counted else 0.0


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = side / max(width, height)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@functools.lru_cache(maxsize=8)
def _grid(width: int, height: int) -> np.ndarray:
    """Pixel coordinates (x, y) as float32, height × width × 2 (cached: the same few sizes recur every frame;
    read-only, since every caller adds to it)."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    grid = np.dstack([xs, ys])
    grid.flags.writeable = False
    return grid
