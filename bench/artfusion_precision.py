"""ArtFusion's denoiser on a CPU: float32 against bfloat16, paired, and how far the picture moves.

    python -m bench.artfusion_precision [--size 256 --steps 10 --pairs 10]

The full-size architecture with random weights (seed 0), one copy in float32 and the same weights in
bfloat16 (as ``from_pretrained(dtype=...)`` loads them: the normalisation layers stay float32). Alternating
pairs of denoiser calls (a guidance batch of 3, the studio's call) give the time ratio; one whole picture in
each precision with the same seed gives the drift (mean absolute pixel difference on 0–255, and PSNR). The
studio picks bfloat16 for ArtFusion on CPUs with native bfloat16 arithmetic (``diffusion_dtype``); this is
the measurement behind that choice. Writes bench/results/artfusion_precision_cpu_<size>px.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.artfusion import denoiser_flops, denoiser_inputs, full_size_pipeline, peak_rss_mb
from pipelines.core.device import cpu_has_native_bfloat16

ROOT = Path(__file__).resolve().parents[1]


def timed(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="content side in px (square)")
    parser.add_argument("--steps", type=int, default=10, help="steps of the whole-picture drift run")
    parser.add_argument("--pairs", type=int, default=10, help="alternating float32/bfloat16 denoiser pairs")
    args = parser.parse_args()

    exact = full_size_pipeline("cpu", "float32")
    fast = full_size_pipeline("cpu", "bfloat16")  # same seed: the same weights, rounded
    latent_hw = (args.size // 16, args.size // 16)
    exact_inputs = denoiser_inputs(exact.unet, 3, latent_hw, "cpu", torch.float32)
    fast_inputs = tuple(x.to(torch.bfloat16) if x.is_floating_point() else x for x in exact_inputs)

    pairs = []
    with torch.no_grad():
        exact.unet(*exact_inputs), fast.unet(*fast_inputs)  # warm-up
        for _ in range(args.pairs):
            pairs.append((timed(lambda: exact.unet(*exact_inputs)), timed(lambda: fast.unet(*fast_inputs))))
        reference = exact.unet(*exact_inputs).sample
        rounded = fast.unet(*fast_inputs).sample.float()
    ratios = [b / a for a, b in pairs]

    content = Image.open(ROOT / "assets" / "content" / "chelsea.jpg").convert("RGB").resize((args.size, args.size))
    style = Image.open(ROOT / "assets" / "style" / "van-gogh-starry-night.jpg").convert("RGB")

    def picture(pipe) -> tuple[np.ndarray, float]:
        began = time.perf_counter()
        image = pipe(content, style, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0))
        return np.asarray(image.images[0], dtype=np.float64), time.perf_counter() - began

    exact_picture, exact_s = picture(exact)
    fast_picture, fast_s = picture(fast)
    mse = float(np.mean((exact_picture - fast_picture) ** 2))
    flops = denoiser_flops(exact.unet, 3, latent_hw)
    exact_step, fast_step = statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)
    result = {
        "benchmark": "artfusion_denoiser_precision_cpu",
        "size_px": args.size,
        "native_bfloat16": cpu_has_native_bfloat16(),
        "threads": torch.get_num_threads(),
        "pairs": args.pairs,
        "float32_step_s": round(exact_step, 4),
        "bfloat16_step_s": round(fast_step, 4),
        "step_ratio_median": round(statistics.median(ratios), 3),
        "step_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "float32_tflops": round(flops / exact_step / 1e12, 3),
        "bfloat16_tflops": round(flops / fast_step / 1e12, 3),
        "denoiser_relative_error": float((rounded - reference).norm() / reference.norm()),
        "picture_steps": args.steps,
        "picture_float32_s": round(exact_s, 2),
        "picture_bfloat16_s": round(fast_s, 2),
        "picture_mean_abs_difference_0_255": round(float(np.mean(np.abs(exact_picture - fast_picture))), 3),
        "picture_psnr_db": round(10 * np.log10(255**2 / mse), 2) if mse else None,
        "peak_rss_mb_both_loaded": round(peak_rss_mb()),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    path = ROOT / "bench" / "results" / f"artfusion_precision_cpu_{args.size}px.json"
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
