"""The video engine on a synthetic 480p clip: end-to-end speed and flicker.

    python -m bench.video [--seconds 5] [--width 854 --height 480]

The clip (made here, in-process, with PyAV): a still textured scene with Gaussian sensor noise, then a textured
object moving across it, then a hard cut to another scene; with a sine-tone sound track (AAC). Measured with
the ``fast`` method:
- frames per second end to end (decode, stylize, flow and blending, encode, sound), temporal vs per-frame;
- where the time goes per frame (stylize / temporal / rest), from a separate instrumented pass;
- flicker (``pipelines.video.flicker``) of the temporal output against per-frame stylization (smoothness 0) on
  the still segment, from the frames as made (before encoding), and a smoothness sweep: flicker ratio against
  how far the moving object's output lags its fresh stylization.
Writes bench/results/video_cpu_480p.json. The CPU may be shared with other work: figures are as measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NOISE = 4.0  # grey levels of Gaussian sensor noise per pixel and channel


@dataclass(frozen=True)
class SyntheticClip:
    """Frames (RGB uint8): [0, moving) the still scene, [moving, cut) an object crosses it, [cut, end) scene B."""

    frames: list[np.ndarray]
    moving: int
    cut: int
    object_masks: list[np.ndarray | None]  # where the moving object is in each frame (None: not there)

    @property
    def end(self) -> int:
        return len(self.frames)


def scene(width: int, height: int, seed: int) -> np.ndarray:
    """A colourful still scene with texture at several scales (so the flow has something to hold on to)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.zeros((height, width, 3), np.float32)
    for channel in range(3):  # smooth colour waves, 1 to 6 periods across
        cycles_x, cycles_y = rng.uniform(1, 6, 2)
        phase = rng.uniform(0, 2 * np.pi)
        picture[..., channel] = 128 + 60 * np.sin(2 * np.pi * (cycles_x * x / width + cycles_y * y / height) + phase)
    for _ in range(12):  # blocks and discs of flat colour
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.04, 0.15) * max(width, height)
        colour = rng.uniform(20, 235, 3)
        if rng.random() < 0.5:
            mask = (np.abs(x - cx) < radius) & (np.abs(y - cy) < radius * 0.6)
        else:
            mask = np.hypot(x - cx, y - cy) < radius
        picture[mask] = colour
    detail = rng.normal(0, 18, (height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    picture += np.kron(detail, np.ones((4, 4, 1), np.float32))[:height, :width]  # a fine fixed texture
    return np.clip(picture, 0, 255)


def moving_object(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A striped, ringed disc (RGB, float) and its mask."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    radius = np.hypot(x, y)
    disc = np.stack([200 + 50 * np.sin(x / 2.5), 60 + 40 * np.cos(radius / 2), 40 + 30 * np.sin(y / 3)], -1)
    return disc.astype(np.float32), radius <= size / 2


def synthetic_clip(width: int, height: int, still: int, moving: int, after_cut: int, *, seed: int = 0) -> SyntheticClip:
    """The clip: the object crosses the still scene from left to right at about width/(moving + 10) px per frame;
    scene B after the cut is still. Every frame has fresh sensor noise."""
    rng = np.random.default_rng(seed + 100)
    first, second = scene(width, height, seed), scene(width, height, seed + 1)[:, ::-1] * 0.8 + 30
    object_size = max(8, height // 3)
    disc, disc_mask = moving_object(object_size)
    speed = (width - object_size) / max(1, moving + 10)
    frames, masks = [], []
    for index in range(still + moving + after_cut):
        picture = (first if index < still + moving else second).copy()
        mask = None
        if still <= index < still + moving:
            left, top = round(5 + (index - still) * speed), (height - object_size) // 2
            mask = np.zeros((height, width), bool)
            mask[top : top + object_size, left : left + object_size] = disc_mask[:, : width - left]
            picture[mask] = disc[:, : width - left][disc_mask[:, : width - left]]
        picture += rng.normal(0, NOISE, picture.shape).astype(np.float32)
        frames.append(np.clip(picture + 0.5, 0, 255).astype(np.uint8))
        masks.append(mask)
    return SyntheticClip(frames, still, still + moving, masks)


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 24, *, audio: bool = True) -> Path:
    """Encode ``frames`` with PyAV directly (independently of the engine under test): H.264 CRF 16 for .mp4/.mov/
    .mkv, VP9 for .webm, a palette GIF for .gif; with a sine tone as long as the video (AAC, Opus in WebM)."""
    path = Path(path)
    suffix = path.suffix.lower()
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        if suffix == ".gif":
            stream = container.add_stream("gif", rate=fps)
            stream.pix_fmt = "rgb8"
        elif suffix == ".webm":
            stream = container.add_stream("libvpx-vp9", rate=fps, options={"crf": "20", "b": "0", "cpu-used": "8"})
            stream.pix_fmt = "yuv420p"
        else:
            stream = container.add_stream("libx264", rate=fps, options={"crf": "16", "preset": "veryfast"})
            stream.pix_fmt = "yuv420p"
        stream.width, stream.height = width, height
        sound = None
        if audio and suffix != ".gif":
            sound = container.add_stream("libopus" if suffix == ".webm" else "aac", rate=48000)
            sound.layout = "stereo"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if sound is not None:
            samples = round(len(frames) / fps * 48000)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
            for start in range(0, samples, 960):
                chunk = np.ascontiguousarray(np.stack([tone[start : start + 960]] * 2))
                piece = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                piece.sample_rate, piece.pts, piece.time_base = 48000, start, Fraction(1, 48000)
                container.mux(sound.encode(piece))
            container.mux(sound.encode(None))
    return path


def laplacian_energy(rgb: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute Laplacian of the grey picture (where ``mask``): fine detail; lower is softer."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    return float(energy[mask].mean() if mask is not None else energy.mean())


def smoothness_sweep(clip: SyntheticClip, frames: list[np.ndarray], fresh: list[np.ndarray], values) -> dict:
    """For each smoothness: still-segment flicker against per-frame stylization, how much fine detail survives
    (still segment, and on the moving object), and how far revealed areas are from their fresh stylization."""
    from pipelines.video import TemporalBlender, flicker

    still = slice(0, clip.moving)
    per_frame = flicker(frames[still], fresh[still])
    sweep = {}
    for smoothness in values:
        blender = TemporalBlender(smoothness)
        out = [blender.blend(frame, styled) for frame, styled in zip(frames, fresh, strict=True)]
        detail_still = np.mean(
            [laplacian_energy(o) / laplacian_energy(f) for o, f in zip(out[still], fresh[still], strict=True)]
        )
        moving = range(clip.moving + 1, clip.cut)
        detail_object = np.mean(
            [
                laplacian_energy(out[i], clip.object_masks[i]) / laplacian_energy(fresh[i], clip.object_masks[i])
                for i in moving
            ]
        )
        revealed = [
            np.abs(out[i].astype(float) - fresh[i]).mean(-1)[clip.object_masks[i - 1] & ~clip.object_masks[i]].mean()
            for i in moving
        ]
        sweep[str(smoothness)] = {
            "flicker_still": round(flicker(frames[still], out[still]), 3),
            "flicker_ratio_vs_per_frame": round(flicker(frames[still], out[still]) / per_frame, 3),
            "detail_kept_still": round(float(detail_still), 3),
            "detail_kept_moving_object": round(float(detail_object), 3),
            "revealed_area_difference_from_fresh": round(float(np.mean(revealed)), 3),
            "scene_cuts": blender.scene_cuts,
        }
    return {"per_frame_flicker_still": round(per_frame, 3), "by_smoothness": sweep}


def stage_times(source: Path, style, smoothness: float, context) -> dict[str, float]:
    """Milliseconds per frame of each stage, run one after another (no overlap), on the whole clip."""
    import dataclasses
    import tempfile
    import time

    from PIL import Image

    from pipelines.core.request import StyleRequest
    from pipelines.core.studio import run_here
    from pipelines.video import TemporalBlender, VideoWriter, probe_video, read_frames

    info = probe_video(source)
    totals = {"decode": 0.0, "stylize": 0.0, "temporal": 0.0, "encode": 0.0}
    request = StyleRequest(content=None, style=style, method="fast", strength=0.7, max_side=1024)
    blender = TemporalBlender(smoothness)
    with tempfile.TemporaryDirectory() as scratch:
        writer = VideoWriter(Path(scratch) / "stages.mp4", (info.width, info.height), info.fps, audio_from=info)
        frames = read_frames(info)
        count = 0
        while True:
            began = time.perf_counter()
            frame = next(frames, None)
            totals["decode"] += time.perf_counter() - began
            if frame is None:
                break
            began = time.perf_counter()
            styled = run_here(dataclasses.replace(request, content=Image.fromarray(frame.rgb)), context=context)
            totals["stylize"] += time.perf_counter() - began
            began = time.perf_counter()
            out = blender.blend(frame.rgb, np.asarray(styled.image))
            totals["temporal"] += time.perf_counter() - began
            began = time.perf_counter()
            writer.write(out, frame.seconds)
            totals["encode"] += time.perf_counter() - began
            count += 1
        began = time.perf_counter()
        writer.close()
        totals["encode"] += time.perf_counter() - began
    return {name: round(1000 * seconds / count, 1) for name, seconds in totals.items()}


def end_to_end(source: Path, style, scratch: Path, repeats: int) -> tuple[dict, dict]:
    """``stylize_video`` temporal (default smoothness) and per-frame (0), in turns; wall and CPU seconds (CPU time
    is less sensitive to other work on the machine). Returns the runs and the last result of each variant."""
    import time

    from pipelines.video import DEFAULT_SMOOTHNESS, stylize_video

    runs: dict[str, list[dict[str, float]]] = {"temporal": [], "per_frame": []}
    results = {}
    for _ in range(repeats):
        for name, smoothness in (("temporal", DEFAULT_SMOOTHNESS), ("per_frame", 0.0)):
            cpu = time.process_time()
            result = stylize_video(source, style, scratch / f"{name}.mp4", smoothness=smoothness)
            cpu_s = time.process_time() - cpu
            runs[name].append(
                {
                    "fps": round(result.frames_per_second, 3),
                    "seconds": round(result.seconds, 3),
                    "cpu_s": round(cpu_s, 3),
                }
            )
            results[name] = result
    return runs, results


def main() -> None:
    import argparse
    import json
    import os
    import platform
    import tempfile

    import onnxruntime

    import pipelines
    from pipelines.video import DEFAULT_SMOOTHNESS, estimate_video, flicker, probe_video, read_frames

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2, help="end-to-end runs of each variant (the best is kept)")
    args = parser.parse_args()

    count = round(args.seconds * args.fps)
    still, moving = count * 3 // 10, count * 4 // 10
    clip = synthetic_clip(args.width, args.height, still, moving, count - still - moving)
    context = pipelines.default_context()
    style = pipelines.load_image(ROOT / "assets" / "style" / "van-gogh-starry-night.jpg", max_side=1024)
    pipelines.preload("fast", context=context)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-video-") as scratch:
        source = write_clip(Path(scratch) / "clip.mp4", clip.frames, args.fps)
        info = probe_video(source)
        # 1. The estimate, then the real runs; 2. where the time goes (stages one after another).
        estimate = estimate_video(source, style, context=context)
        runs, results = end_to_end(source, style, Path(scratch), args.repeats)
        stages = stage_times(source, style, DEFAULT_SMOOTHNESS, context)
        # 3. Flicker on the still segment, from the frames as blended and as written (both through H.264).
        decoded = [frame.rgb for frame in read_frames(info)]
        fresh = [np.asarray(pipelines.stylize(f, style, method="fast", strength=0.7).image) for f in decoded]
        sweep = smoothness_sweep(clip, decoded, fresh, (0.5, 0.6, 0.7, 0.8, 0.9))
        still_part = slice(0, clip.moving)
        written = {
            name: flicker(decoded[still_part], [f.rgb for f in read_frames(probe_video(result.path))][still_part])
            for name, result in results.items()
        }
    load_after = os.getloadavg()

    best = {name: max(samples, key=lambda run: run["fps"]) for name, samples in runs.items()}
    default = sweep["by_smoothness"][str(DEFAULT_SMOOTHNESS)]
    report = {
        "clip": {
            "size": [info.width, info.height],
            "fps": str(info.fps),
            "frames": info.frame_count,
            "segments": {"still": [0, clip.moving], "moving": [clip.moving, clip.cut], "after_cut": [clip.cut, count]},
            "sensor_noise_sigma": NOISE,
            "audio": info.audio_codec,
        },
        "method": "fast",
        "strength": 0.7,
        "smoothness": DEFAULT_SMOOTHNESS,
        "end_to_end_fps": {name: run["fps"] for name, run in best.items()},
        "target_fps": 4.0,
        "end_to_end_runs": runs,
        "stage_ms_per_frame_sequential": stages,
        "estimate_video": {
            "predicted_s": round(estimate.total_s, 2),
            "actual_s": best["temporal"]["seconds"],
            "per_frame_s": {
                part: round(getattr(estimate, f"{part}_s"), 4) for part in ("decode", "stylize", "temporal", "encode")
            },
        },
        "flicker_still_segment": {
            "per_frame": sweep["per_frame_flicker_still"],
            "temporal": default["flicker_still"],
            "ratio": default["flicker_ratio_vs_per_frame"],
            "target_ratio": 0.5,
            "as_written_ratio": round(written["temporal"] / written["per_frame"], 3),
            "as_written": {name: round(value, 3) for name, value in written.items()},
        },
        "scene_cuts_found": list(results["temporal"].scene_cuts),
        "scene_cut_expected": clip.cut,
        "smoothness_sweep": sweep["by_smoothness"],
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "onnxruntime": onnxruntime.__version__,
            "av": av.__version__,
            "note": "CPU shared with other work while measured: figures are as measured, not a quiet machine's",
        },
    }
    out = ROOT / "bench" / "results" / f"video_cpu_{args.height}p.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"wrote {out}")


def print_report(report: dict) -> None:
    clip, fps, flick = report["clip"], report["end_to_end_fps"], report["flicker_still_segment"]
    print(f"clip: {clip['size'][0]}x{clip['size'][1]}, {clip['frames']} frames at {clip['fps']} fps, {clip['audio']}")
    print(f"end to end, fast: temporal {fps['temporal']:.2f} fps, per-frame {fps['per_frame']:.2f} fps (target >= 4)")
    print(
        "ms per frame, stages one after another: "
        + ", ".join(f"{k} {v}" for k, v in report["stage_ms_per_frame_sequential"].items())
    )
    estimate = report["estimate_video"]
    print(f"estimate_video: {estimate['predicted_s']} s predicted, {estimate['actual_s']} s actual")
    print(
        f"flicker, still segment: per-frame {flick['per_frame']}, temporal {flick['temporal']}, ratio {flick['ratio']}"
        f" (target <= 0.5); as written (H.264) {flick['as_written_ratio']}"
    )
    for smoothness, row in report["smoothness_sweep"].items():
        print(
            f"  smoothness {smoothness}: flicker ratio {row['flicker_ratio_vs_per_frame']}, detail kept "
            f"{row['detail_kept_still']} (still) {row['detail_kept_moving_object']} (object), revealed areas "
            f"{row['revealed_area_difference_from_fresh']} from fresh"
        )
    machine = report["machine"]
    print(
        f"load average {machine['load_average_before'][0]} before, {machine['load_average_after'][0]} after "
        f"({machine['cpus']} CPUs, shared)"
    )


if __name__ == "__main__":
    main()
