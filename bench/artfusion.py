"""ArtFusion speed, memory and FLOP utilisation with the full-size architecture (random weights: timing only).

    python -m bench.artfusion                      # CPU: 256 px, 10 steps, fp32
    python -m bench.artfusion --device cuda --size 512 --steps 50 --dtype bfloat16 [--compile [MODE]]

The pipeline gets the studio's own device choices (``configure_for_device``: attention kernel, TF32, the
opt-in compile). Prints seconds per image (median of --repeats after one warm-up), the denoiser alone per
step, its FLOPs per step (counted with ``torch.utils.flop_counter`` on the meta device: no compute), the
FLOP/s reached and, on a GPU with a known peak, the fraction of that peak; peak memory (RSS, and CUDA on a
GPU). Writes bench/results/artfusion_<device>_<size>px_<dtype>[_compiled].json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from bench.timing import median_time, synchronize
from pipelines.artfusion import ArtFusionPipeline
from pipelines.artfusion.convert import KL16_CONTENT12, build_components
from pipelines.artfusion.method import configure_for_device
from pipelines.core.compiling import check_compile_setting, mark_step_begin

ROOT = Path(__file__).resolve().parents[1]

# Dense bf16/fp16 tensor-core peaks from the vendors' data sheets, TFLOP/s (without sparsity).
PEAK_TFLOPS = {
    "H100 80GB HBM3": 989.4,  # SXM
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def gpu_peak_tflops(device_name: str) -> float | None:
    """The data-sheet peak for a GPU name as torch reports it, or None when unknown."""
    for key, value in PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return None


def denoiser_inputs(unet, batch: int, latent_hw: tuple[int, int], device, dtype) -> tuple:
    """Inputs of one batched-guidance denoiser call: latents, timestep, content condition, style vector."""
    channels = unet.config.in_channels
    latents = torch.randn(batch, channels, *latent_hw, device=device, dtype=dtype)
    content = torch.randn(batch, unet.config.content_in_dim, *latent_hw, device=device, dtype=dtype)
    style = torch.randn(batch, unet.config.style_dim, device=device, dtype=dtype)
    return latents, torch.tensor(500, device=device), content, style


def denoiser_flops(unet, batch: int, latent_hw: tuple[int, int]) -> int:
    """FLOPs of one denoiser call (multiply-add = 2), counted on a meta-device copy: shapes only, no compute."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(unet).to("meta")
    inputs = denoiser_inputs(meta, batch, latent_hw, "meta", meta.dtype)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(*inputs)
    return counter.get_total_flops()


def full_size_pipeline(device: str, dtype: str, compile_setting: str = "off") -> ArtFusionPipeline:
    """The released architecture with random weights (seed 0), in ``dtype``, with the studio's device choices
    (``compile_setting``: the studio's ``--compile`` value for the denoiser, off by default)."""
    torch.manual_seed(0)
    unet, vae, style_encoder, scheduler = build_components(KL16_CONTENT12)
    pipe = ArtFusionPipeline(unet.eval(), vae.eval(), style_encoder.eval(), scheduler)
    if dtype != "float32":
        for model in (pipe.unet, pipe.vae, pipe.style_encoder):  # as from_pretrained(dtype=...) loads them
            keep = getattr(model, "_keep_in_fp32_modules", None) or []
            for name, parameter in model.named_parameters():
                if not any(part in name for part in keep):
                    parameter.data = parameter.data.to(getattr(torch, dtype))
    return configure_for_device(pipe, device, compile_setting)


def denoiser_figures(unet, side: int, device: str, repeats: int) -> dict:
    """The denoiser alone, as the pipeline calls it (a guidance batch of 3 at the latent size of a ``side`` px
    square): median seconds per step, FLOPs per step, the FLOP/s reached and, on a known GPU, the share of peak."""
    eager = getattr(unet, "_orig_mod", unet)  # the module inside a torch.compile wrapper
    latent_hw = (side // 16, side // 16)
    inputs = denoiser_inputs(eager, 3, latent_hw, device, eager.dtype)
    with torch.no_grad():
        step_s = median_time(lambda: (mark_step_begin(), unet(*inputs)), repeats)
    flops = denoiser_flops(eager, 3, latent_hw)
    reached = flops / step_s / 1e12
    peak = gpu_peak_tflops(torch.cuda.get_device_name(0)) if device.startswith("cuda") else None
    return {
        "step_s": step_s,
        "gflops_per_step": flops / 1e9,
        "tflops_reached": reached,
        "gpu_peak_tflops": peak,
        "fraction_of_peak": reached / peak if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256, help="content side in px (square)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", nargs="?", const="on", default="off", metavar="MODE", help="torch.compile")
    args = parser.parse_args()
    compile_setting = check_compile_setting(args.compile)
    cuda = args.device.startswith("cuda")

    started = time.perf_counter()
    pipe = full_size_pipeline(args.device, args.dtype, compile_setting)
    build_s = time.perf_counter() - started

    content = Image.open(ROOT / "assets" / "content" / "chelsea.jpg").convert("RGB").resize((args.size, args.size))
    style = Image.open(ROOT / "assets" / "style" / "van-gogh-starry-night.jpg").convert("RGB")

    def once() -> float:
        synchronize()
        began = time.perf_counter()
        pipe(content, style, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0))
        synchronize()
        return time.perf_counter() - began

    warmup_s = once()  # includes compilation when compiling
    times = [once() for _ in range(args.repeats)]
    median = statistics.median(times)
    denoiser = denoiser_figures(pipe.unet, args.size, args.device, max(5, args.steps // 2))
    device_name = torch.cuda.get_device_name(0) if cuda else args.device

    result = {
        "benchmark": "artfusion_full_size_random_weights",
        "device": device_name,
        "size_px": args.size,
        "steps": args.steps,
        "dtype": args.dtype,
        "compile": compile_setting,
        "attention": sorted({type(m.processor).__name__ for m in pipe.unet.modules() if hasattr(m, "processor")}),
        "guidance_batch": 3,
        "seconds_per_image_median": round(median, 3),
        "seconds_per_image_all": [round(t, 3) for t in times],
        "first_call_s": round(warmup_s, 3),
        "denoiser_step_s": round(denoiser["step_s"], 5),
        "denoiser_gflops_per_step": round(denoiser["gflops_per_step"], 1),
        "denoiser_tflops_reached": round(denoiser["tflops_reached"], 3),
        "gpu_peak_tflops": denoiser["gpu_peak_tflops"],
        "fraction_of_peak": round(denoiser["fraction_of_peak"], 3) if denoiser["fraction_of_peak"] else None,
        "denoiser_share_of_image_time": round(denoiser["step_s"] * args.steps / median, 3),
        "build_s": round(build_s, 2),
        "peak_rss_mb": round(peak_rss_mb()),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    compiled = "" if result["compile"] == "off" else "_compiled"
    name = f"artfusion_{args.device.split(':')[0]}_{args.size}px_{args.dtype}{compiled}.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
