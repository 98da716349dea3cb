"""Large pictures: does ArtFusion at 1024 and 2048 px fit, and in how much memory?

    python -m bench.large                                   # CPU, fp32: 1024 and 2048 px, 1 step
    python -m bench.large --device cuda --dtype bfloat16 --sides 1024 2048 --steps 25

Each size runs in a fresh process (so peak memory is that picture's alone) with the full-size architecture
(random weights) and the studio's device choices: VAE tiling above 1024 px, the size-aware attention kernel on
CPU, SDPA on CUDA. Reports seconds, peak RSS, peak CUDA memory and, on a GPU, whether the peak fits a 24 GB
card. Writes bench/results/large_<device>_<dtype>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_24GB_MB = 24 * 1024


def one(side: int, steps: int, device: str, dtype: str) -> dict:
    """Run one picture in this process and return its figures."""
    import torch
    from PIL import Image

    from bench.artfusion import full_size_pipeline

    pipe = full_size_pipeline(device, dtype)
    loaded_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    content = Image.open(ROOT / "assets" / "content" / "astronaut.jpg").convert("RGB").resize((side, side))
    style = Image.open(ROOT / "assets" / "style" / "van-gogh-starry-night.jpg").convert("RGB")
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    image = pipe(content, style, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).images[0]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return {
        "side_px": side,
        "steps": steps,
        "output_size": list(image.size),
        "vae_tiling": bool(pipe.vae.use_tiling),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_rss_mb),
        "rss_above_loaded_model_mb": round(peak_rss_mb - loaded_rss_mb),
        "peak_cuda_mb": round(peak_cuda_mb) if peak_cuda_mb is not None else None,
        "fits_24gb_gpu": peak_cuda_mb < GPU_24GB_MB if peak_cuda_mb is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--sides", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.steps, args.device, args.dtype)))
        return

    rows = []
    for side in args.sides:
        command = [sys.executable, "-m", "bench.large", "--one", str(side), "--steps", str(args.steps)]
        command += ["--device", args.device, "--dtype", args.dtype]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            rows.append({"side_px": side, "error": done.stderr.strip().splitlines()[-1][:300]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    out = ROOT / "bench" / "results" / f"large_{args.device.split(':')[0]}_{args.dtype}.json"
    out.write_text(json.dumps({"device": args.device, "dtype": args.dtype, "results": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
