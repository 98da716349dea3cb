"""ArtFusion speed and memory with the full-size architecture (random weights: timing only).

    python -m bench.artfusion                      # CPU: 256 px, 10 steps, fp32
    python -m bench.artfusion --device cuda --size 512 --steps 50 --dtype bfloat16 [--compile]

Prints seconds per image (median of --repeats after one warm-up), denoiser steps/s and peak memory (RSS, and
CUDA when on a GPU); writes bench/results/artfusion_<device>_<size>px_<dtype>[_compiled].json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from pipelines.artfusion import ArtFusionPipeline
from pipelines.artfusion.convert import KL16_CONTENT12, build_components

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256, help="content side in px (square)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    args = parser.parse_args()

    torch.manual_seed(0)
    started = time.perf_counter()
    unet, vae, style_encoder, scheduler = build_components(KL16_CONTENT12)
    pipe = ArtFusionPipeline(unet.eval(), vae.eval(), style_encoder.eval(), scheduler)
    pipe = pipe.to(args.device) if args.dtype == "float32" else pipe.to(args.device, dtype=getattr(torch, args.dtype))
    pipe.set_progress_bar_config(disable=True)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.compile:
        pipe.unet = torch.compile(pipe.unet, mode="max-autotune-no-cudagraphs", fullgraph=True)
    build_s = time.perf_counter() - started

    content = Image.open(ROOT / "assets" / "content" / "chelsea.jpg").convert("RGB").resize((args.size, args.size))
    style = Image.open(ROOT / "assets" / "style" / "van-gogh-starry-night.jpg").convert("RGB")

    def once() -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        began = time.perf_counter()
        pipe(content, style, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - began

    warmup_s = once()  # includes compilation when --compile
    times = [once() for _ in range(args.repeats)]
    median = statistics.median(times)
    result = {
        "benchmark": "artfusion_full_size_random_weights",
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(0),
        "size_px": args.size,
        "steps": args.steps,
        "dtype": args.dtype,
        "compiled": args.compile,
        "guidance_batch": 3,
        "seconds_per_image_median": round(median, 3),
        "seconds_per_image_all": [round(t, 3) for t in times],
        "first_call_s": round(warmup_s, 3),
        "denoiser_steps_per_s": round(args.steps / median, 2),
        "build_s": round(build_s, 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20) if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    name = f"artfusion_{args.device.split(':')[0]}_{args.size}px_{args.dtype}{'_compiled' if args.compile else ''}.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
