"""StyleID: the studio's request path against the bare pipeline, and what remembering inversions buys.

    python -m bench.styleid                                   # CPU: the fixture's tiny SD 1.x at 128 px, 4 steps
    python -m bench.styleid --full --device cuda --dtype bfloat16 --size 512 --steps 50   # a GPU, SD 1.5 shapes

``--full`` builds Stable Diffusion 1.5's architecture with random weights (no download: the figures are about
time, not pictures). Every comparison runs its variants interleaved. Writes
``bench/results/styleid_<device>_<size>px.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

import pipelines
from bench.timing import interleaved, medians
from pipelines.core.device import describe_device
from pipelines.styleid import StyleIDPipeline
from pipelines.styleid.method import injection_schedule

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "styleid" / "tiny_sd15_diffusers"
CONTENT, OTHER = ROOT / "assets" / "content" / "chelsea.jpg", ROOT / "assets" / "content" / "coffee.jpg"
STYLE = ROOT / "assets" / "style" / "munch-the-scream.jpg"


def sd15_shaped_folder(folder: Path) -> Path:
    """Stable Diffusion 1.5's architecture with random weights, saved as a pipeline folder."""
    sys.path.insert(0, str(ROOT / "tests"))
    from inst_tiny import save_tiny_models

    base, _ = save_tiny_models(folder, size="full")
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    loaders = {"vae": AutoencoderKL, "unet": UNet2DConditionModel, "scheduler": DDIMScheduler}
    loaders |= {"text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer}
    parts = {name: loader.from_pretrained(base / name) for name, loader in loaders.items()}
    StyleIDPipeline(**parts).save_pretrained(folder / "pipeline")
    return folder / "pipeline"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--size", type=int, default=128, help="the long side of the pictures")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="SD 1.5 shapes (random weights) instead of the tiny model")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-styleid-"))
    weights = sd15_shaped_folder(workdir) if args.full else FIXTURE
    context = pipelines.StudioContext(device=args.device, backend="local", cache_dir=workdir)
    dtype = getattr(torch, args.dtype)
    bare = StyleIDPipeline.from_pretrained(weights, dtype=dtype).to(args.device)
    bare.set_progress_bar_config(disable=True)
    content, other, style = (pipelines.load_image(path, max_side=args.size) for path in (CONTENT, OTHER, STYLE))
    knobs = injection_schedule(0.7)

    def run_bare(picture: Image.Image) -> object:
        return bare(
            picture,
            style,
            num_inference_steps=args.steps,
            num_inversion_steps=args.steps,
            start_step=args.steps - 1,
            gamma=knobs.gamma,
            temperature=knobs.temperature,
            mode="general",
            generator=torch.Generator().manual_seed(22),
        )

    studio_context = context.with_overrides(weights={"styleid": str(weights)})
    key = pipelines.preload("styleid", context=studio_context)
    studio_pipe, _ = studio_context.pipelines.get(key, lambda: None)  # the studio's own loaded pipeline

    def run_studio() -> object:
        return pipelines.stylize(content, style, method="styleid", strength=0.7, steps=args.steps,
                                 max_side=args.size, context=studio_context)  # fmt: skip

    def fresh(run: Callable[[], object]) -> Callable[[], object]:
        """``run`` with nothing remembered: the studio and the bare pipeline then do the same work."""

        def go() -> object:
            bare.inversion_memo.clear()
            studio_pipe.inversion_memo.clear()
            return run()

        return go

    photos = itertools.count(1)

    def new_photo_in_seen_style() -> object:  # other pixels every time: only the style's inversion is remembered
        shift = next(photos)
        return run_bare(Image.eval(other, lambda value: (value + shift) % 256))

    path = medians(interleaved({"bare": fresh(lambda: run_bare(content)), "studio": fresh(run_studio)}, args.repeats))
    memo = medians(
        interleaved(
            {
                "first picture": fresh(lambda: run_bare(content)),
                "new photo, seen style": new_photo_in_seen_style,
                "same pair again": lambda: run_bare(content),
            },
            args.repeats,
        )
    )
    report = {
        "device": describe_device(args.device),
        "model": "SD 1.5 shapes, random weights" if args.full else "fixture tiny SD 1.x",
        "size": args.size,
        "steps": args.steps,
        "dtype": args.dtype,
        "seconds": {**{f"path: {k}": v for k, v in path.items()}, **{f"memo: {k}": v for k, v in memo.items()}},
        "studio_over_bare": path["studio"] / path["bare"],
        "memo_ratio_to_first": {name: value / memo["first picture"] for name, value in memo.items()},
    }
    print(json.dumps(report, indent=2))
    out = ROOT / "bench" / "results" / f"styleid_{args.device.split(':')[0]}_{args.size}px.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
