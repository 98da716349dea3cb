"""Reading videos with PyAV (FFmpeg's libraries, bundled in its wheel; no system ``ffmpeg``): what a file holds
(``probe_video``) and its frames as upright RGB arrays (``read_frames``).

Anything FFmpeg cannot read becomes an ``InvalidRequestError`` that says what to do, never a PyAV traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.core.errors import InvalidRequestError
from pipelines.core.images import MIN_SIDE

VideoSource = str | os.PathLike[str]
READABLE_VIDEOS = "an MP4, MOV, MKV, WebM or GIF file"
DEFAULT_FPS = Fraction(25)  # for the rare stream that declares no rate at all


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. ``width``/``height`` are as displayed (a phone's rotation flag applied)."""

    path: Path
    container: str  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    width: int
    height: int
    fps: Fraction
    frame_count: int  # an estimate where the container does not say (WebM, MKV): duration × fps
    duration_s: float
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    rotation: int = 0  # degrees counter-clockwise the stored frames are turned for display

    def output_size(self, max_side: int | None = None) -> tuple[int, int]:
        """The frame size the studio works and writes at: fitted to ``max_side`` (never upscaled) and rounded down
        to even sides, which H.264 and VP9 in yuv420p need."""
        scale = 1.0 if max_side is None else min(1.0, max_side / max(self.width, self.height))
        width, height = int(self.width * scale) // 2 * 2, int(self.height * scale) // 2 * 2
        if min(width, height) < MIN_SIDE:
            raise InvalidRequestError(
                f"The video's frames would be {width}×{height} pixels; each side needs at least {MIN_SIDE} px. "
                "Use a larger max side or a less elongated video."
            )
        return width, height


@dataclass(frozen=True)
class DecodedFrame:
    index: int
    seconds: float  # presentation time in the source
    rgb: np.ndarray  # height × width × 3, uint8


def probe_video(source: VideoSource) -> VideoInfo:
    """Size, frame rate, frame count estimate, duration, audio and codecs of a video file (decodes one frame, so
    a file that opens but cannot be decoded is refused here, before any work)."""
    path = _existing_path(source)
    with _open(path) as container:
        stream = container.streams.video[0]
        first = _first_frame(container, stream, path)
        rotation = _quarter_turns(first.rotation) * 90
        width, height = (first.height, first.width) if rotation % 180 else (first.width, first.height)
        fps = _frame_rate(stream)
        duration = _duration(container, stream)
        frames = stream.frames or 0
        if frames <= 0:
            frames = max(1, round(duration * fps)) if duration > 0 else 1
        elif duration <= 0:
            duration = float(frames / fps)
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=path,
            container=container.format.name,
            width=width,
            height=height,
            fps=fps,
            frame_count=int(frames),
            duration_s=float(duration),
            has_audio=audio is not None,
            video_codec=stream.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else None,
            rotation=rotation,
        )


def read_frames(
    info: VideoInfo, size: tuple[int, int] | None = None, *, max_side: int | None = None
) -> Iterator[DecodedFrame]:
    """The video's frames in order as upright RGB arrays of ``size`` (default: ``info.output_size(max_side)``, the
    displayed size fitted to ``max_side`` with even sides). Scaling is done by FFmpeg's scaler on the way out of
    the decoder (area-averaging when shrinking), which is cheap."""
    width, height = size or info.output_size(max_side)
    turns = _quarter_turns(info.rotation)
    stored = (height, width) if turns % 2 else (width, height)  # scale first, turn after
    with _open(info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding keeps up with the rest on any core count
        index = 0
        try:
            for frame in container.decode(stream):
                rgb = frame.reformat(*stored, format="rgb24", interpolation="AREA").to_ndarray()
                if turns:
                    rgb = np.ascontiguousarray(np.rot90(rgb, turns))
                seconds = float(frame.time) if frame.time is not None else index / float(info.fps)
                yield DecodedFrame(index, seconds, rgb)
                index += 1
        except av.error.FFmpegError as exc:
            raise InvalidRequestError(
                f"{info.path.name} could not be decoded after frame {index} ({_ffmpeg_reason(exc)}). "
                f"The file may be damaged or truncated; re-export it as {READABLE_VIDEOS}."
            ) from None


def _existing_path(source: VideoSource) -> Path:
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidRequestError(f"A video must be given as a file path, not {type(source).__name__}.")
    path = Path(source)
    if not path.is_file():
        raise InvalidRequestError(f"The video {str(path)!r} does not exist (or is not a file). Check the path.")
    if path.stat().st_size == 0:
        raise InvalidRequestError(f"The video {path.name} is empty (0 bytes). Choose {READABLE_VIDEOS}.")
    return path


def _open(path: Path) -> av.container.InputContainer:
    """The file opened for reading, or a clear error for anything that is not a video with a picture stream."""
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise InvalidRequestError(
            f"{path.name} is not a video this studio can read ({_ffmpeg_reason(exc)}). Use {READABLE_VIDEOS}."
        ) from None
    name = container.format.name
    if name == "image2" or name.endswith("_pipe"):
        container.close()
        raise InvalidRequestError(f"{path.name} is a still image, not a video. Stylize it as a picture instead.")
    if not container.streams.video:
        container.close()
        raise InvalidRequestError(
            f"{path.name} has no video stream (only {_stream_kinds(container) or 'nothing readable'}). "
            f"Use {READABLE_VIDEOS} with pictures in it."
        )
    return container


def _first_frame(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise InvalidRequestError(
            f"{path.name} could not be decoded ({_ffmpeg_reason(exc)}). Re-export it as {READABLE_VIDEOS}."
        ) from None
    raise InvalidRequestError(f"{path.name} contains no video frames. Choose another file.")


def _frame_rate(stream: av.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            # Keep it exact (30000/1001 stays NTSC), but drop the odd huge denominators some muxers leave.
            return Fraction(rate).limit_denominator(1001)
    return DEFAULT_FPS


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _quarter_turns(rotation: float | None) -> int:
    """Counter-clockwise quarter turns in 0..3 (display matrices with other angles are rounded)."""
    return round((rotation or 0) / 90) % 4


def _stream_kinds(container: av.container.InputContainer) -> str:
    return ", ".join(sorted({stream.type for stream in container.streams}))


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    """FFmpeg's own short reason ("Invalid data found when processing input"), without the file name."""
    return getattr(exc, "strerror", None) or type(exc).__name__
