"""InST: style-learning speed per preset, what the fast preset buys, and apply latency (random weights).

    python -m bench.inst                                  # CPU, tiny models (as in the tests)
    python -m bench.inst --full --device cuda --dtype bfloat16 --size 512   # full SD 1.x shapes, on a GPU

Reports, side by side in one run: training steps/s and timestep samples/s of the paper and fast presets; the
variance of the mapper's gradient for 1 vs 4 timesteps per step (why the fast preset can take fewer steps at a
higher learning rate); seconds per applied picture. Writes bench/results/inst_<device>_<models>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from pipelines.inst.mapper import StyleMapper
from pipelines.inst.pipeline_inst import InSTPipeline
from pipelines.inst.training import _encode_view, config_for, freeze, learn_style

ROOT = Path(__file__).resolve().parents[1]


def build(full: bool, folder: Path) -> tuple[str, str]:
    """Random-weight models in the real layouts: the tests' tiny ones, or the real SD 1.x / CLIP ViT-L shapes."""
    sys.path.insert(0, str(ROOT / "tests"))
    from inst_tiny import save_tiny_models

    base, clip = save_tiny_models(folder, size="full" if full else "tiny")
    return str(base), str(clip)


def gradient_variance(pipe: InSTPipeline, image: Image.Image, timesteps_per_step: int, draws: int = 12) -> float:
    """Mean squared deviation of the mapper gradient around its mean, over ``draws`` random training steps."""
    freeze(pipe)
    torch.manual_seed(0)
    mapper = StyleMapper(dim=pipe.text_encoder.get_input_embeddings().embedding_dim).to(pipe.device)
    embeds, mean, std = _encode_view(pipe, image, "paper")
    scaling, alphas = pipe.vae.config.scaling_factor, pipe.scheduler.alphas_cumprod.to(pipe.device)
    grads = []
    for _ in range(draws):
        mapper.zero_grad()
        k = timesteps_per_step
        latent = scaling * (mean + std * torch.randn_like(mean))
        t = torch.randint(0, 1000, (k,), device=pipe.device)
        noise = torch.randn((k, *latent.shape[1:]), device=pipe.device)
        a = alphas[t].view(-1, 1, 1, 1)
        context = pipe.encode_prompt("*", mapper(embeds)).expand(k, -1, -1)
        prediction = pipe.unet(
            (a.sqrt() * latent + (1 - a).sqrt() * noise).to(pipe.unet.dtype),
            t,
            encoder_hidden_states=context.to(pipe.unet.dtype),
        ).sample
        torch.nn.functional.mse_loss(prediction.float(), noise).backward()
        grads.append(torch.cat([p.grad.flatten() for p in mapper.parameters() if p.grad is not None]))
    stacked = torch.stack(grads)
    return float(((stacked - stacked.mean(0)) ** 2).sum(1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full SD 1.x / CLIP ViT-L shapes (random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--size", type=int, default=None, help="training and apply resolution (default 32 tiny, 512 full)"
    )
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--apply-steps", type=int, default=50)
    args = parser.parse_args()
    size = args.size or (512 if args.full else 32)

    folder = Path(tempfile.mkdtemp(prefix="bench-inst-"))
    base, clip = build(args.full, folder)
    pipe = InSTPipeline.from_parts(base, clip, dtype=getattr(torch, args.dtype)).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    style = Image.open(ROOT / "assets" / "style" / "van-gogh-starry-night.jpg").convert("RGB").resize((size, size))
    content = Image.open(ROOT / "assets" / "content" / "chelsea.jpg").convert("RGB").resize((size, size))

    presets = {}
    for preset in ("paper", "fast"):
        config = config_for(preset, args.train_steps, resolution=size)
        learn_style(pipe, style, config_for(preset, 2, resolution=size))  # warm-up
        began = time.perf_counter()
        result = learn_style(pipe, style, config)
        seconds = time.perf_counter() - began
        presets[preset] = {
            "steps_per_s": round(config.steps / seconds, 2),
            "timestep_samples_per_s": round(config.steps * config.timesteps_per_step / seconds, 2),
            "preset_steps": config_for(preset).steps,
            "estimated_full_run_s": round(config_for(preset).steps / (config.steps / seconds), 1),
            "final_loss_after_bench_steps": round(result.final_loss, 4),
        }
        conditioning = result.conditioning
    variance_1 = gradient_variance(pipe, style, 1)
    variance_4 = gradient_variance(pipe, style, 4)

    def apply() -> float:
        began = time.perf_counter()
        pipe(
            content,
            conditioning,
            strength=0.7,
            num_inference_steps=args.apply_steps,
            generator=torch.Generator().manual_seed(0),
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - began

    apply()
    apply_times = [apply() for _ in range(3)]
    result = {
        "benchmark": "inst_random_weights",
        "models": "full SD1.x + CLIP ViT-L shapes" if args.full else "tiny (as in tests)",
        "device": args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(0),
        "dtype": args.dtype,
        "size_px": size,
        "training": presets,
        "gradient_variance": {
            "1_timestep_per_step": variance_1,
            "4_timesteps_per_step": variance_4,
            "ratio": round(variance_1 / variance_4, 2),
        },
        "apply": {
            "steps": args.apply_steps,
            "strength": 0.7,
            "seconds_median": round(statistics.median(apply_times), 3),
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))
    name = f"inst_{args.device.split(':')[0]}_{'full' if args.full else 'tiny'}_{size}px.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
