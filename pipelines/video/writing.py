"""Writing the stylized video with PyAV, in the format its extension names, with the source's sound and the
request's parameters in the container's ``comment`` tag (``read_video_metadata`` reads them back).

- ``.mp4`` / ``.mov``: H.264 (libx264, yuv420p, CRF 19, the ``veryfast`` preset), ``+faststart`` so a browser
  starts playing before the whole file arrives; sound as AAC.
- ``.webm``: VP9 (libvpx, constant quality, its real-time speed settings); sound as Opus.
- ``.mkv``: H.264, any sound codec copied as is.
- ``.gif``: one 256-colour palette taken from the first frame, no dithering (dither noise that changes every
  frame would be flicker of its own); no sound; the parameters in a GIF comment block.

The file appears atomically: frames go to a hidden temporary file beside it, renamed into place by ``close``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image

from pipelines.core.errors import InvalidRequestError
from pipelines.core.result import APP_NAME
from pipelines.video.audio import AudioTrack
from pipelines.video.reading import VideoInfo, VideoSource, probe_video

METADATA_TAG = "comment"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputFormat:
    """How one output extension is written."""

    muxer: str
    video_codec: str
    pixel_format: str
    audio_codec: str | None  # what other sound is transcoded to; None: the format has no sound
    copies_audio: frozenset[str] = frozenset()  # sound codecs the container takes as they are
    video_options: dict[str, str] = field(default_factory=dict)
    container_options: dict[str, str] = field(default_factory=dict)


_H264 = {"crf": "19", "preset": "veryfast"}  # high quality; ~10 ms a 480p frame, a small share of each frame
_MP4_AUDIO = frozenset({"aac", "mp3"})  # what every browser plays from an MP4

OUTPUT_FORMATS: dict[str, OutputFormat] = {
    ".mp4": OutputFormat("mp4", "libx264", "yuv420p", "aac", _MP4_AUDIO, _H264, {"movflags": "+faststart"}),
    ".mov": OutputFormat("mov", "libx264", "yuv420p", "aac", _MP4_AUDIO | {"alac", "pcm_s16le"}, _H264),
    ".mkv": OutputFormat(
        "matroska", "libx264", "yuv420p", "aac", frozenset({"aac", "mp3", "opus", "vorbis", "flac", "ac3"}), _H264
    ),
    ".webm": OutputFormat(
        "webm",
        "libvpx-vp9",
        "yuv420p",
        "libopus",
        frozenset({"opus", "vorbis"}),
        # Constant quality (b=0 + crf); realtime + cpu-used 8 + row-mt: several times faster than the defaults.
        {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"},
    ),
    ".gif": OutputFormat("gif", "gif", "pal8", None),
}


def output_format(path: VideoSource) -> OutputFormat:
    """The format an output path's extension asks for, or a clear error."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise InvalidRequestError(
            f"Cannot write a {suffix or 'extension-less'} video: name the output with one of "
            f"{', '.join(OUTPUT_FORMATS)} (.mp4 plays everywhere)."
        )
    return OUTPUT_FORMATS[suffix]


class VideoWriter:
    """RGB frames in, a finished video file out (see the module docstring). Use as a context manager: leaving it
    normally finishes the file; leaving it with an exception removes the partial file."""

    def __init__(
        self,
        path: VideoSource,
        size: tuple[int, int],
        fps: Fraction,
        *,
        audio_from: VideoInfo | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.size = size
        self.fps = Fraction(fps)
        self.frames = 0
        self._comment = json.dumps(metadata, sort_keys=True) if metadata is not None else None
        self._last_pts = -1
        self._palette: _Palette | None = None
        self.audio: AudioTrack | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A hidden name beside the target, created by FFmpeg itself (so with an ordinary new file's permissions).
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        try:
            self._container = av.open(
                str(self._tmp), "w", format=self.format.muxer, container_options=self.format.container_options
            )
            if self._comment is not None and self.format.muxer != "gif":
                self._container.metadata[METADATA_TAG] = self._comment
            self._stream = self._container.add_stream(
                self.format.video_codec, rate=self.fps, options=self.format.video_options
            )
            self._stream.width, self._stream.height = size
            self._stream.pix_fmt = self.format.pixel_format
            if self.format.pixel_format == "yuv420p":
                _tag_bt709(self._stream.codec_context)
            if audio_from is not None and audio_from.has_audio and self.format.audio_codec is not None:
                self.audio = _sound_of(audio_from, self._container, self.format)
        except BaseException:
            self.discard()
            raise

    @property
    def seconds(self) -> float:
        """Where the video written so far ends."""
        return float((self._last_pts + 1) / self.fps)

    def write(self, rgb: np.ndarray, seconds: float | None = None) -> None:
        """Add one frame (height × width × 3 uint8) shown at ``seconds`` (its time in the source, which keeps a
        variable-rate source in step with its sound); ``None``: right after the previous frame."""
        pts = self._last_pts + 1 if seconds is None else max(self._last_pts + 1, round(seconds * self.fps))
        frame = self._gif_frame(rgb) if self.format.muxer == "gif" else _bt709_frame(rgb)
        frame.pts = pts
        frame.time_base = 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._last_pts = pts
        self.frames += 1
        if self.audio is not None:
            self.audio.advance(self.seconds)

    def close(self) -> Path:
        """Flush the encoders, write the trailer and move the file into place; returns its path."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self.audio is not None:
                self.audio.finish(self.seconds)
            self._container.close()
            if self.format.muxer == "gif" and self._comment is not None:
                _add_gif_comment(self._tmp, self._comment)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        """Drop the partial file (after an error)."""
        if self.audio is not None:
            self.audio.close()
        container = getattr(self, "_container", None)
        if container is not None:
            # With nothing written yet the header cannot be finished, and need not be.
            with contextlib.suppress(av.error.FFmpegError):
                container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()

    def _gif_frame(self, rgb: np.ndarray) -> av.VideoFrame:
        if self._palette is None:
            self._palette = _Palette(rgb)
        return av.VideoFrame.from_ndarray(self._palette.indices(rgb), format="pal8")


def _sound_of(source: VideoInfo, container: av.container.OutputContainer, fmt: OutputFormat) -> AudioTrack | None:
    """The source's sound for the output, or None (with a warning) when FFmpeg cannot carry it over: a picture
    without its sound beats no picture."""
    try:
        return AudioTrack(source.path, container, fmt.audio_codec or "", fmt.copies_audio)
    except (av.error.FFmpegError, ValueError) as exc:
        logger.warning("Leaving out the sound of %s (%s codec): %s", source.path.name, source.audio_codec, exc)
        return None


class _Palette:
    """One 256-colour palette for the whole GIF (a palette per frame would make colours jump)."""

    def __init__(self, rgb: np.ndarray) -> None:
        self._image = Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT)
        colours = np.array(self._image.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
        colours = np.pad(colours, ((0, 256 - len(colours)), (0, 0)))
        self._argb = np.concatenate([np.full((256, 1), 255, np.uint8), colours], axis=1)  # PyAV takes ARGB

    def indices(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mapped = Image.fromarray(rgb).quantize(palette=self._image, dither=Image.Dither.NONE)
        return np.asarray(mapped), self._argb


def _tag_bt709(codec: av.video.codeccontext.VideoCodecContext) -> None:
    """Label the stream BT.709, limited range. Untagged, players guess (BT.601 for small frames, BT.709 for HD,
    differently by player), and a wrong guess shifts reds and greens."""
    codec.colorspace, codec.color_range = Colorspace.ITU709, ColorRange.MPEG
    codec.color_primaries = codec.color_trc = 1  # BT.709 (sRGB shares its primaries and near enough its curve)


def _bt709_frame(rgb: np.ndarray) -> av.VideoFrame:
    """An RGB picture converted to yuv420p with the BT.709 matrix the stream is labelled with."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)
    frame.colorspace, frame.color_range = Colorspace.ITU709, ColorRange.MPEG
    return frame


def read_video_metadata(path: VideoSource) -> dict[str, Any] | None:
    """The parameters a stylized video was made with (the JSON the studio wrote into its ``comment`` tag), or
    ``None`` for a video the studio did not make."""
    info = probe_video(path)  # a clear error for anything that is not a readable video
    if info.container == "gif":
        with Image.open(info.path) as image:
            text = image.info.get("comment")
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    else:
        with av.open(str(info.path), metadata_errors="replace") as container:
            tags = {key.lower(): value for key, value in container.metadata.items()}
        text = tags.get(METADATA_TAG)
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        return None  # someone else's comment
    return parsed if isinstance(parsed, dict) and parsed.get("app") == APP_NAME else None


def _add_gif_comment(path: Path, text: str) -> None:
    """Insert a GIF comment extension after the header and global colour table (FFmpeg's GIF muxer writes none)."""
    data = path.read_bytes()
    flags = data[10]
    start = 13 + (3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0)
    payload = text.encode("utf-8")
    blocks = b"".join(bytes([len(chunk)]) + chunk for chunk in _chunks(payload, 255))
    path.write_bytes(data[:start] + b"\x21\xfe" + blocks + b"\x00" + data[start:])


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
