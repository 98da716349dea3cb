"""The video engine: temporal consistency, scene cuts, occlusions, formats and sound, cancel, limits, errors.

Clips are made in-process (bench.video's synthetic clip: a still noisy scene, an object crossing it, a hard cut)
and stylized for real with the fast method (bundled ONNX weights, offline). Small frames keep this quick: the
fast engine paints at 384 px whatever the frame size.
"""

from fractions import Fraction

import av
import numpy as np
import pytest
from av.video.reformatter import Colorspace
from conftest import gradient_image
from PIL import Image

import pipelines
from bench.video import synthetic_clip, write_clip
from pipelines import InvalidRequestError
from pipelines.core.images import image_digest
from pipelines.core.studio import loaded_model
from pipelines.video import (
    TemporalBlender,
    VideoBudget,
    VideoLimits,
    estimate_video,
    flicker,
    probe_video,
    read_frames,
    read_video_metadata,
    stylize_video,
)

WIDTH, HEIGHT, FPS = 160, 96, 24
STRENGTH = 0.8


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(WIDTH, HEIGHT, still=8, moving=12, after_cut=6)


@pytest.fixture(scope="module")
def clip_file(clip, tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("video") / "clip.mp4", clip.frames, FPS)


@pytest.fixture(scope="module")
def style(style_path):
    return pipelines.load_image(style_path, max_side=256)


@pytest.fixture(scope="module")
def decoded(clip_file):
    """The clip's frames as the engine sees them (after H.264), and each one stylized on its own."""
    return [frame.rgb for frame in read_frames(probe_video(clip_file))]


@pytest.fixture(scope="module")
def plain(decoded, style):
    """Per-frame independent stylization of every decoded frame (what smoothness 0 gives)."""
    return [np.asarray(pipelines.stylize(f, style, method="fast", strength=STRENGTH).image) for f in decoded]


@pytest.fixture(scope="module")
def temporal(clip_file, style, tmp_path_factory):
    """The whole clip through stylize_video, with the progress events it sent."""
    events = []
    out = tmp_path_factory.mktemp("video-out") / "styled.mp4"
    result = stylize_video(clip_file, style, out, strength=STRENGTH, smoothness=0.7, progress=events.append)
    return result, events


def decode(path):
    return [frame.rgb for frame in read_frames(probe_video(path))]


def blend_all(frames, stylized, smoothness):
    blender = TemporalBlender(smoothness)
    return [blender.blend(f, s) for f, s in zip(frames, stylized, strict=True)], blender


# (1) Still parts stay still.
def test_still_segment_flickers_at_most_half_as_much_as_per_frame_stylization(clip, decoded, plain, temporal):
    still = slice(0, clip.moving)
    per_frame = flicker(decoded[still], plain[still])
    blended, _ = blend_all(decoded, plain, 0.7)
    assert per_frame > 1.0  # the noise really makes independent stylizations boil
    assert flicker(decoded[still], blended[still]) <= 0.5 * per_frame
    # and end to end, through the H.264 encoder (which adds noise of its own)
    written = decode(temporal[0].path)
    assert flicker(decoded[still], written[still]) <= 0.5 * per_frame


def test_smoothness_zero_is_per_frame_stylization(decoded, plain):
    blended, blender = blend_all(decoded, plain, 0.0)
    assert all(np.array_equal(a, b) for a, b in zip(blended, plain, strict=True))
    assert all(step.reset for step in blender.steps)


# (2) The cut resets.
def test_scene_cut_resets_to_the_fresh_stylization(clip, decoded, plain, temporal):
    blended, blender = blend_all(decoded, plain, 0.7)
    assert blender.scene_cuts == [clip.cut]
    step = blender.steps[clip.cut]
    assert step.reset and step.scene_cut and step.kept == 0.0
    assert np.array_equal(blended[clip.cut], plain[clip.cut])
    assert not blender.steps[clip.cut + 1].reset  # and blending resumes in the new scene
    # end to end: reported, and the written frame is the plain one (up to the encoder)
    result = temporal[0]
    assert result.scene_cuts == (clip.cut,)
    written = decode(result.path)
    encoder_loss = np.abs(written[0].astype(float) - plain[0]).mean()  # frame 0 is the plain one too
    assert np.abs(written[clip.cut].astype(float) - plain[clip.cut]).mean() <= encoder_loss + 1.0
    assert np.abs(written[clip.cut].astype(float) - blended[clip.cut - 1]).mean() > 3 * encoder_loss


# (3) Moving things are not smeared: revealed areas take the fresh stylization.
def test_areas_revealed_behind_the_moving_object_take_the_fresh_stylization(clip, decoded, plain):
    smoothness = 0.7
    blender = TemporalBlender(smoothness)
    checked, out = 0, None
    for index, (frame, fresh) in enumerate(zip(decoded, plain, strict=True)):
        previous_output, out = out, blender.blend(frame, fresh).astype(float)
        before, now = clip.object_masks[index - 1] if index else None, clip.object_masks[index]
        if before is None or now is None:
            continue
        revealed = before & ~now  # background now, the object a frame ago
        if revealed.sum() < 20:
            continue
        # What blending without the trust map would show there: the object's paint dragged along.
        naive = smoothness * previous_output + (1 - smoothness) * fresh
        fresh_error = np.abs(out - fresh).mean(-1)[revealed].mean()
        naive_error = np.abs(naive - fresh).mean(-1)[revealed].mean()
        assert fresh_error < 0.15 * naive_error, (index, fresh_error, naive_error)
        assert fresh_error < 4.0
        checked += 1
    assert checked >= 8
    # away from the object and its margin the previous output was used
    assert all(step.kept > 0.5 for step in blender.steps[clip.moving : clip.cut])


# (4) Output format, sound, metadata; GIF and WebM in and out.
def test_mp4_is_browser_h264_at_the_source_rate_and_size_with_its_sound(clip, clip_file, temporal):
    result, _ = temporal
    assert not result.cancelled and result.frames_done == result.frames_total == clip.end
    with av.open(str(result.path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert video.codec_context.colorspace == Colorspace.ITU709  # labelled: players need not guess
        assert (video.codec_context.width, video.codec_context.height) == (WIDTH, HEIGHT)
        assert video.average_rate == FPS and video.frames == clip.end
        assert audio.codec_context.name == "aac"
        video_s = float(video.duration * video.time_base)
        audio_s = float(audio.duration * audio.time_base)
    assert abs(audio_s - video_s) <= 1 / FPS
    data = result.path.read_bytes()
    assert data[4:8] == b"ftyp" and data.index(b"moov") < data.index(b"mdat")  # +faststart: playable while loading
    assert result.has_audio and result.size == (WIDTH, HEIGHT) and result.fps == FPS


def test_metadata_round_trips(temporal, style):
    result, _ = temporal
    meta = read_video_metadata(result.path)
    assert meta == result.metadata
    assert meta["method"] == "fast" and meta["strength"] == STRENGTH and meta["smoothness"] == 0.7
    assert meta["app"] == "style-studio" and meta["version"] == pipelines.__version__
    assert meta["style_digest"] == image_digest(style)


def test_a_video_the_studio_did_not_make_has_no_metadata(clip_file):
    assert read_video_metadata(clip_file) is None


@pytest.mark.parametrize(
    ("source_ext", "output_ext", "codec", "sound"),
    [(".gif", ".webm", "vp9", None), (".webm", ".gif", "gif", None), (".webm", ".mp4", "h264", "aac")],
)
def test_gif_and_webm_in_and_out(clip, style, tmp_path, source_ext, output_ext, codec, sound):
    source = write_clip(tmp_path / f"in{source_ext}", clip.frames[:6], FPS)
    result = stylize_video(source, style, tmp_path / f"out{output_ext}", strength=STRENGTH)
    info = probe_video(result.path)
    assert info.video_codec == codec and (info.width, info.height) == (WIDTH, HEIGHT)
    assert result.frames_done == 6 and len(decode(result.path)) == 6
    source_fps = probe_video(source).fps
    # GIF stores whole 1/100 s delays: 24 fps is written as 4/100 s and reads back as 25
    assert info.fps == (Fraction(100, round(100 / source_fps)) if output_ext == ".gif" else source_fps)
    assert info.audio_codec == sound  # WebM's Opus transcoded to AAC for MP4; none in a GIF
    assert read_video_metadata(result.path)["smoothness"] == result.metadata["smoothness"]


# (5) Cancel mid-way: a valid, shorter file.
def test_cancel_midway_keeps_a_playable_shorter_video(clip_file, style, tmp_path):
    import threading

    cancel = threading.Event()
    events = []

    def progress(event):
        events.append(event)
        if event.frames_done == 5:
            cancel.set()

    result = stylize_video(clip_file, style, tmp_path / "cut.mp4", progress=progress, cancel=cancel)
    assert result.cancelled and result.frames_done == 5 and result.frames_total == 26
    assert len(decode(result.path)) == 5
    with av.open(str(result.path)) as container:
        video_s = float(container.streams.video[0].duration * container.streams.video[0].time_base)
        audio = container.streams.audio[0]
        audio_s = float(audio.duration * audio.time_base)
    assert video_s == pytest.approx(5 / FPS) and abs(audio_s - video_s) <= 1 / FPS  # the sound stops with it
    assert read_video_metadata(result.path)["method"] == "fast"
    assert not list(tmp_path.glob(".*.part"))  # no leftovers


def test_progress_reports_each_frame_with_a_preview_first(temporal, clip):
    _, events = temporal
    assert [e.frames_done for e in events] == list(range(1, clip.end + 1))
    assert isinstance(events[0].preview, Image.Image) and events[0].preview.size == (WIDTH, HEIGHT)
    assert all(e.preview is None for e in events[1:])
    assert all(e.frames_total == clip.end for e in events)
    assert events[-1].seconds_left == 0.0 and events[0].seconds_left > 0.0
    assert all(b.seconds_elapsed >= a.seconds_elapsed for a, b in zip(events, events[1:], strict=False))


def test_cancel_before_the_first_frame_writes_nothing(clip_file, style, tmp_path):
    import threading

    cancel = threading.Event()
    cancel.set()
    result = stylize_video(clip_file, style, tmp_path / "none.mp4", cancel=cancel)
    assert result.cancelled and result.frames_done == 0 and result.path is None
    assert list(tmp_path.iterdir()) == []


# (6) Limits refuse before any work.
@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (VideoBudget(max_seconds=0.5, max_frames=10_000, max_pixels=10**7), "Trim it to that length"),
        (VideoBudget(max_seconds=600, max_frames=20, max_pixels=10**7), "at most 20 frames"),
        (VideoBudget(max_seconds=600, max_frames=10_000, max_pixels=80 * 48), "Set max_side to 80 or less"),
    ],
)
def test_limits_refuse_before_any_frame_is_stylized(clip_file, style, tmp_path, monkeypatch, budget, message):
    import pipelines.video.render as render

    def no_work(*args, **kwargs):
        raise AssertionError("a frame was stylized")

    monkeypatch.setattr(render, "run_here", no_work)
    with pytest.raises(InvalidRequestError, match=message):
        stylize_video(clip_file, style, tmp_path / "out.mp4", limits=VideoLimits(fast=budget))
    with pytest.raises(InvalidRequestError, match=message):
        estimate_video(clip_file, style, limits=VideoLimits(fast=budget))
    assert list(tmp_path.iterdir()) == []


def test_diffusion_methods_get_the_smaller_budget(clip_file, style, tmp_path):
    limits = VideoLimits(diffusion=VideoBudget(max_seconds=0.5, max_frames=300, max_pixels=10**6))
    with pytest.raises(InvalidRequestError, match="artfusion method takes videos of at most 0.5 s"):
        stylize_video(clip_file, style, tmp_path / "out.mp4", method="artfusion", limits=limits)
    assert estimate_video(clip_file, style, method="fast", max_side=64, limits=limits).frames == 26  # fast: fine


def test_default_limits_are_ten_minutes_for_fast_and_much_less_for_diffusion():
    limits = VideoLimits()
    assert limits.budget_for(pipelines.get_method("fast")).max_seconds == 600
    assert limits.budget_for(pipelines.get_method("artfusion")).max_seconds <= 30


# (7) Not a video: a clear error, not a PyAV traceback.
def test_unreadable_inputs_get_clear_errors(tmp_path, style):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    picture = tmp_path / "picture.png"
    gradient_image().save(picture)
    sound_only = tmp_path / "sound.m4a"
    with av.open(str(sound_only), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 48000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    cases = {
        text: "notes.mp4 is not a video this studio can read",
        picture: "picture.png is a still image, not a video",
        sound_only: "sound.m4a has no video stream",
        tmp_path / "missing.mp4": "does not exist",
    }
    for path, message in cases.items():
        with pytest.raises(InvalidRequestError, match=message):
            stylize_video(path, style, tmp_path / "out.mp4")
        with pytest.raises(InvalidRequestError, match=message):
            read_video_metadata(path)
    with pytest.raises(InvalidRequestError, match=r"name the output with one of \.mp4"):
        stylize_video(text, style, tmp_path / "out.avi")
    video = write_clip(tmp_path / "clip.mp4", [np.zeros((48, 64, 3), np.uint8)] * 2, FPS, audio=False)
    with pytest.raises(InvalidRequestError, match="would overwrite the source video clip.mp4"):
        stylize_video(video, style, video)


# (8) The style is encoded once per video.
def test_the_style_predictor_runs_once_per_video(clip_file, tmp_path, studio_context, monkeypatch):
    engine, _ = loaded_model("fast", studio_context)
    style = gradient_image(120, 90, seed=77)  # pixels no earlier test used: the memo has not seen them
    predicted = []
    original = engine._predict
    monkeypatch.setattr(engine, "_predict", lambda image: predicted.append(image_digest(image)) or original(image))
    hits = engine.vectors.hits
    result = stylize_video(clip_file, style, tmp_path / "out.mp4", strength=0.6, max_side=75)
    assert predicted.count(image_digest(style)) == 1  # once, though every frame used it
    assert engine.vectors.hits - hits >= result.frames_done - 1  # the other frames were served from the memo
    assert len(predicted) == 1 + result.frames_done  # plus each frame's own vector (strength < 1 blends it in)
    # max_side: 160×96 fitted to 75 is 75×45, rounded down to even sides for yuv420p
    assert result.size == (74, 44) and probe_video(result.path).width == 74
    assert read_video_metadata(result.path)["max_side"] == 75


def test_estimate_times_one_frame_and_extrapolates(clip_file, style):
    estimate = estimate_video(clip_file, style, strength=STRENGTH)
    assert estimate.frames == 26 and estimate.size == (WIDTH, HEIGHT) and estimate.fps == FPS
    parts = (estimate.decode_s, estimate.stylize_s, estimate.temporal_s, estimate.encode_s)
    assert all(part > 0 for part in parts)
    assert estimate.seconds_per_frame == pytest.approx(sum(parts))
    assert estimate.total_s == pytest.approx(estimate.load_s + 26 * estimate.seconds_per_frame)
    assert estimate.preview.size == (WIDTH, HEIGHT)
    assert "for 26 frames" in estimate.summary()


def test_rotated_phone_videos_are_read_upright(tmp_path):
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)  # stored landscape, shown turned a quarter counter-clockwise
        stored = np.zeros((48, 64, 3), np.uint8)
        stored[:, 32:] = 255  # right half white
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    upright = next(read_frames(info)).rgb
    assert upright.shape == (64, 48, 3)
    assert upright[:16].mean() > 200 and upright[-16:].mean() < 50  # the right half went to the top


def test_probe_and_read_frames_fitted_to_a_max_side(clip_file, clip):
    info = probe_video(clip_file)
    assert (info.width, info.height, info.fps, info.frame_count) == (WIDTH, HEIGHT, FPS, clip.end)
    assert info.has_audio and info.audio_codec == "aac" and info.video_codec == "h264"
    assert info.duration_s == pytest.approx(clip.end / FPS, abs=1 / FPS)
    frames = list(read_frames(info, max_side=101))
    assert len(frames) == clip.end and frames[0].rgb.shape == (60, 100, 3)  # 101×60.6 → even sides
    assert [f.index for f in frames] == list(range(clip.end)) and frames[3].seconds == pytest.approx(3 / FPS)


def test_flicker_counts_only_still_regions():
    rng = np.random.default_rng(0)
    base = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    still = [base] * 4
    assert flicker(still, still) == 0.0
    noisy = [np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8) for _ in still]
    assert 4 < flicker(still, noisy) < 10  # |difference of two N(0, 6)| averages 6.8
    with pytest.raises(ValueError):
        flicker(still, still[:2])
