"""Video: stylize a whole clip with temporal consistency, through the same core as pictures.

>>> from pipelines.video import stylize_video, estimate_video
>>> estimate_video("clip.mp4", "painting.jpg", method="fast").summary()
'about 41 s for 240 frames (0.17 s per frame with fast)'
>>> result = stylize_video("clip.mp4", "painting.jpg", "out.mp4", strength=0.7, smoothness=0.7)
>>> read_video_metadata("out.mp4")["smoothness"]
0.7

Modules: ``reading`` (probe, decode), ``writing`` (encode by extension, sound, metadata), ``audio`` (copy or
transcode the sound), ``temporal`` (optical-flow blending, scene cuts, the flicker metric), ``limits`` (budgets
checked before work), ``render`` (``stylize_video``, ``estimate_video``). I/O is PyAV only (no system ffmpeg).
"""

from pipelines.core.request import Parameter
from pipelines.video.limits import VideoBudget, VideoLimits
from pipelines.video.reading import READABLE_VIDEOS, DecodedFrame, VideoInfo, probe_video, read_frames
from pipelines.video.render import (
    VideoEstimate,
    VideoProgress,
    VideoResult,
    estimate_video,
    stylize_video,
)
from pipelines.video.temporal import CUT_THRESHOLD, DEFAULT_SMOOTHNESS, BlendStep, TemporalBlender, flicker
from pipelines.video.writing import OUTPUT_FORMATS, VideoWriter, read_video_metadata

# The video's own parameter, declared once like the request's (the CLI flag and the page's slider follow from it).
VIDEO_PARAMETERS = (
    Parameter(
        name="smoothness",
        kind="fraction",
        default=DEFAULT_SMOOTHNESS,
        label="Smoothness",
        help="how much of the previous stylized frame, moved along the motion, each frame keeps where the motion "
        "is reliable: 0 stylizes every frame on its own (flickers), higher is steadier",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
    ),
)
VIDEO_OUTPUT_FORMATS = tuple(OUTPUT_FORMATS)  # by file extension

__all__ = [
    "VIDEO_OUTPUT_FORMATS",
    "VIDEO_PARAMETERS",
    "CUT_THRESHOLD",
    "DEFAULT_SMOOTHNESS",
    "OUTPUT_FORMATS",
    "READABLE_VIDEOS",
    "BlendStep",
    "DecodedFrame",
    "TemporalBlender",
    "VideoBudget",
    "VideoEstimate",
    "VideoInfo",
    "VideoLimits",
    "VideoProgress",
    "VideoResult",
    "VideoWriter",
    "estimate_video",
    "flicker",
    "probe_video",
    "read_frames",
    "read_video_metadata",
    "stylize_video",
]
