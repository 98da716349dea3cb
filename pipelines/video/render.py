"""Stylize a whole video: frames decoded, each stylized through the studio's core, blended for temporal
consistency, encoded with the source's sound; and an honest estimate of how long that takes, from one frame.

Each frame goes through ``pipelines.core.studio.run_here`` with one ``StyleRequest`` made once per video (only
its content changes), so every method works here exactly as it does for a picture, and per-frame overhead is a
request copy: the style image is loaded once and passed as the same picture, so the fast engine computes its style
vector once per video (its memo is keyed by the pixel digest). Diffusion methods get the same seed on every frame,
so every frame starts from the same noise. Frames are made in this process whatever the context's backend: a
round trip per frame to a remote GPU would cost more than it saves.
"""

from __future__ import annotations

import dataclasses
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.core.context import StudioContext, default_context
from pipelines.core.errors import GenerationCancelled, InvalidRequestError
from pipelines.core.images import DEFAULT_MAX_SIDE, ImageSource, load_image
from pipelines.core.method import StyleMethod
from pipelines.core.request import MAX_MAX_SIDE, MAX_SEED, MIN_MAX_SIDE, StyleRequest, check_fraction, check_int
from pipelines.core.result import APP_NAME, VERSION, StyleResult
from pipelines.core.studio import resolve_method, run_here
from pipelines.video.limits import VideoLimits
from pipelines.video.overlap import BackgroundWriter, prefetched
from pipelines.video.reading import VideoInfo, VideoSource, probe_video, read_frames
from pipelines.video.temporal import DEFAULT_SMOOTHNESS, TemporalBlender
from pipelines.video.writing import VideoWriter, output_format


@dataclass(frozen=True)
class VideoProgress:
    """One progress event, sent after each frame is written."""

    frames_done: int
    frames_total: int  # the header's estimate (raised if the video turns out longer)
    seconds_elapsed: float
    seconds_left: float  # estimate from the pace so far
    preview: Image.Image | None = None  # the first output frame, in the first event only

    @property
    def fraction(self) -> float:
        return min(1.0, self.frames_done / max(1, self.frames_total))


VideoProgressCallback = Callable[[VideoProgress], None]


@dataclass(frozen=True)
class VideoResult:
    """What ``stylize_video`` made. ``path`` is None only when it was cancelled before the first frame."""

    path: Path | None
    frames_done: int
    frames_total: int  # the number of frames the whole video has (an estimate when cancelled)
    cancelled: bool
    size: tuple[int, int]
    fps: Fraction
    has_audio: bool  # whether the written file has sound
    scene_cuts: tuple[int, ...]  # frames where the blender started over
    metadata: dict[str, Any]  # what the file's ``comment`` tag holds (``read_video_metadata``)
    seconds: float  # wall time of the whole call

    @property
    def frames_per_second(self) -> float:
        return self.frames_done / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class VideoEstimate:
    """How long ``stylize_video`` should take, from timing the first frame (each part measured on it)."""

    frames: int
    size: tuple[int, int]
    fps: Fraction
    method: str
    load_s: float  # loading the method's model (0 when it was loaded already); paid once
    decode_s: float  # per frame, from here on
    stylize_s: float
    temporal_s: float  # optical flow and blending
    encode_s: float
    preview: Image.Image  # the first frame, stylized

    @property
    def seconds_per_frame(self) -> float:
        return self.decode_s + self.stylize_s + self.temporal_s + self.encode_s

    @property
    def total_s(self) -> float:
        return self.load_s + self.frames * self.seconds_per_frame

    def summary(self) -> str:
        """E.g. ``about 3 min 20 s for 240 frames (0.83 s per frame with fast)``."""
        minutes, seconds = divmod(round(self.total_s), 60)
        length = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
        return f"about {length} for {self.frames} frames ({self.seconds_per_frame:.2f} s per frame with {self.method})"


@dataclass(frozen=True)
class _Job:
    """A checked video request: the file, the frame size, the method, and the per-frame request template."""

    info: VideoInfo
    size: tuple[int, int]
    method: StyleMethod
    template: StyleRequest
    smoothness: float
    max_side: int | None
    context: StudioContext

    def frame_request(self, rgb: np.ndarray) -> StyleRequest:
        return dataclasses.replace(self.template, content=Image.fromarray(rgb))


def stylize_video(
    source: VideoSource,
    style: ImageSource | None,
    output: VideoSource,
    *,
    method: str | None = "fast",
    strength: float = 0.7,
    steps: int | None = None,
    seed: int | None = None,
    smoothness: float = DEFAULT_SMOOTHNESS,
    max_side: int | None = None,
    preserve_color: bool = False,
    options: Mapping[str, Any] | None = None,
    context: StudioContext | None = None,
    progress: VideoProgressCallback | None = None,
    cancel: threading.Event | None = None,
    limits: VideoLimits = VideoLimits(),  # noqa: B008 (frozen, shared safely)
) -> VideoResult:
    """Stylize the video ``source`` in the style of ``style`` and write it to ``output``.

    Args:
        source: an MP4, MOV, MKV, WebM or GIF file.
        style: the style picture (path, bytes, PIL image or array), as for ``pipelines.stylize``.
        output: where to write; the extension picks the format (.mp4 H.264 + AAC, .webm VP9 + Opus, .gif,
            .mov, .mkv). The file appears when finished (written beside it under a hidden name until then).
        method, strength, steps, seed, preserve_color, options: as for ``pipelines.stylize``; one seed (drawn once
            when not given) serves every frame.
        smoothness: 0..1, how much of the previous output frame (moved along the motion) each frame keeps where
            the motion is reliable; 0 stylizes every frame independently. Default 0.7.
        max_side: long side of the frames made (never upscaled); default: the video's own size.
        context: the studio context (its pipeline cache keeps the model loaded between videos).
        progress: called with a ``VideoProgress`` after each frame (the first carries a preview picture).
        cancel: an ``Event``; once set, the video stops at the next frame (or step), the frames made so far are
            written out as a playable video, and the result says ``cancelled``.
        limits: the length and size budgets, checked before any work (``InvalidRequestError`` when over).

    Returns:
        a ``VideoResult`` (path, frames done, scene cuts, the metadata written into the file, timing).
    """
    started = time.perf_counter()
    # 1. Check everything that can be checked before any work: parameters, output name, the file, the limits.
    job = _prepare(
        source,
        style,
        output,
        method,
        strength,
        steps,
        seed,
        smoothness,
        max_side,
        preserve_color,
        options,
        context,
        limits,
    )
    info = job.info

    # 2. Frame by frame: stylize, blend with the previous output, write; the file opens with the first frame, so
    #    its metadata records the parameters as run (the method's default steps, the drawn seed).
    blender = TemporalBlender(job.smoothness)
    writer: BackgroundWriter | None = None
    metadata: dict[str, Any] = {}
    done, cancelled = 0, False
    try:
        with closing(prefetched(read_frames(info, job.size))) as frames:
            for frame in frames:
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                try:
                    styled = run_here(job.frame_request(frame.rgb), context=job.context, cancel=cancel)
                except GenerationCancelled:
                    cancelled = True
                    break
                out = blender.blend(frame.rgb, np.asarray(styled.image))
                if writer is None:
                    metadata = _metadata(job, styled)
                    video = VideoWriter(output, job.size, info.fps, audio_from=info, metadata=metadata)
                    writer = BackgroundWriter(video)
                writer.write(out, frame.seconds)
                done += 1
                if progress is not None:
                    preview = Image.fromarray(out) if done == 1 else None
                    progress(_progress_event(done, info.frame_count, started, preview))
        path = writer.close() if writer is not None else None
    except BaseException:
        if writer is not None:
            writer.discard()
        raise

    # 3. What was made.
    return VideoResult(
        path=path,
        frames_done=done,
        frames_total=info.frame_count if cancelled else done,
        cancelled=cancelled,
        size=job.size,
        fps=info.fps,
        has_audio=writer is not None and writer.writer.audio is not None,
        scene_cuts=tuple(blender.scene_cuts),
        metadata=metadata,
        seconds=time.perf_counter() - started,
    )


def estimate_video(
    source: VideoSource,
    style: ImageSource | None,
    *,
    method: str | None = "fast",
    strength: float = 0.7,
    steps: int | None = None,
    seed: int | None = None,
    smoothness: float = DEFAULT_SMOOTHNESS,
    max_side: int | None = None,
    preserve_color: bool = False,
    options: Mapping[str, Any] | None = None,
    output: VideoSource | None = None,
    context: StudioContext | None = None,
    limits: VideoLimits = VideoLimits(),  # noqa: B008 (frozen, shared safely)
) -> VideoEstimate:
    """How long ``stylize_video`` with these arguments would take: the first frame is stylized once and every
    per-frame part (decode, stylize, flow and blending, encode in ``output``'s format) is timed on it, then
    multiplied by the frame count. Model loading is reported apart (paid once). Same checks and errors as
    ``stylize_video``. ``output``: the path you mean to write (only its extension is used; default .mp4).

    The estimate errs long: the first frame also pays one-time work (the fast engine's style vector), and the
    real run overlaps decoding and encoding with stylizing, which this sum does not credit."""
    output = output if output is not None else "video.mp4"
    job = _prepare(
        source,
        style,
        output,
        method,
        strength,
        steps,
        seed,
        smoothness,
        max_side,
        preserve_color,
        options,
        context,
        limits,
    )
    # 1. Decode the first two frames (the second gives the flow something to do, and times decoding without the
    #    file's opening).
    began = time.perf_counter()
    with closing(read_frames(job.info, job.size)) as frames:
        first = next(frames)
        opened = time.perf_counter()
        second = next(frames, first)
    decode_s = time.perf_counter() - (opened if second is not first else began)
    # 2. Stylize the first frame (its model load timed apart by the core).
    began = time.perf_counter()
    styled = run_here(job.frame_request(first.rgb), context=job.context)
    load_s = styled.metadata.timings.load_s
    stylize_s = max(0.0, time.perf_counter() - began - load_s)
    fresh = np.asarray(styled.image)
    # 3. Temporal blending of the second frame onto the first (flow both ways, trust map, warp).
    blender = TemporalBlender(job.smoothness)
    outputs = [blender.blend(first.rgb, fresh)]
    began = time.perf_counter()
    outputs.append(blender.blend(second.rgb, fresh))
    temporal_s = time.perf_counter() - began
    # 4. Encode a few frames in the output's format (to a scratch file).
    encode_s = _time_encoding(Path(output).suffix, job, outputs)
    return VideoEstimate(
        frames=job.info.frame_count,
        size=job.size,
        fps=job.info.fps,
        method=job.method.name,
        load_s=load_s,
        decode_s=decode_s,
        stylize_s=stylize_s,
        temporal_s=temporal_s,
        encode_s=encode_s,
        preview=Image.fromarray(outputs[0]),
    )


def _prepare(
    source: VideoSource,
    style: ImageSource | None,
    output: VideoSource,
    method: str | None,
    strength: float,
    steps: int | None,
    seed: int | None,
    smoothness: float,
    max_side: int | None,
    preserve_color: bool,
    options: Mapping[str, Any] | None,
    context: StudioContext | None,
    limits: VideoLimits,
) -> _Job:
    """Every check that needs no model and no decoding past the first frame, in the order a person fixes them."""
    context = context or default_context()
    chosen = resolve_method(method, context)
    # 1. The parameters (the request validates its own), and the output's name.
    template = StyleRequest(
        content=None,
        style=None,
        method=chosen.name,
        strength=strength,
        steps=steps,
        seed=seed,
        preserve_color=preserve_color,
        options=options,
    )
    smoothness = check_fraction("smoothness", smoothness)
    if max_side is not None:
        max_side = check_int("max_side", max_side, MIN_MAX_SIDE, MAX_MAX_SIDE)
    output_format(output)
    if chosen.uses_style_image and style is None:
        raise InvalidRequestError(f"The {chosen.name} method needs a style image.")
    chosen.check_ready(chosen.check_options(template.options), context)
    # 2. The video, against the limits.
    info = probe_video(source)
    if Path(output).resolve() == info.path.resolve():
        raise InvalidRequestError(f"The output would overwrite the source video {info.path.name}: choose another name.")
    size = info.output_size(max_side)
    limits.check(info, size, chosen)
    # 3. What every frame's request shares: the style picture read once, one seed (every frame starts from the
    #    same noise), and a max side that does not shrink the frames again; the style picture is read at the size
    #    a picture request would read it (not shrunk to a small video's frames).
    frame_side = min(MAX_MAX_SIDE, max(DEFAULT_MAX_SIDE, *size))
    template = dataclasses.replace(
        template,
        style=load_image(style, role="style", max_side=frame_side) if style is not None else None,
        seed=secrets.randbelow(MAX_SEED + 1) if chosen.uses_seed and seed is None else seed,
        max_side=frame_side,
    )
    return _Job(info, size, chosen, template, smoothness, max_side, context)


def _metadata(job: _Job, first: StyleResult) -> dict[str, Any]:
    """The parameters as run (from the first frame's result), for the file's ``comment`` tag."""
    meta = first.metadata
    return {
        **meta.parameters,
        "max_side": job.max_side,  # the video's, not the per-frame request's
        "smoothness": job.smoothness,
        "weights": meta.weights,
        "device": meta.device,
        "style_digest": meta.style_digest,
        "source": job.info.path.name,
        "size": list(job.size),
        "fps": str(job.info.fps),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "app": APP_NAME,
        "version": VERSION,
    }


def _progress_event(done: int, estimate: int, started: float, preview: Image.Image | None) -> VideoProgress:
    elapsed = time.perf_counter() - started
    total = max(estimate, done)
    return VideoProgress(done, total, elapsed, elapsed / done * (total - done), preview)


def _time_encoding(suffix: str, job: _Job, outputs: list[np.ndarray]) -> float:
    """Seconds per frame to encode (and mux, with the sound) frames like ``outputs`` in the ``suffix`` format."""
    frames = [outputs[i % len(outputs)] for i in range(4)]  # alternating: as costly as real motion, or more
    with tempfile.TemporaryDirectory(prefix="style-studio-estimate-") as scratch:
        began = time.perf_counter()
        with VideoWriter(Path(scratch) / f"estimate{suffix}", job.size, job.info.fps, audio_from=job.info) as writer:
            for rgb in frames:
                writer.write(rgb)
        return (time.perf_counter() - began) / len(frames)
