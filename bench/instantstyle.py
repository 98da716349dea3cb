"""InstantStyle: the studio's request path against the bare pipeline (the fixture's tiny SDXL set on the CPU).

    python -m bench.instantstyle [--size 64 --steps 4 --repeats 5]

Both sides draw the same picture (the studio's knobs for strength 0.7 and the same generator seed); the variants
run interleaved. Writes ``bench/results/instantstyle_<device>_<size>px.json``. A GPU run with the real models
needs their weights on that machine (`modal run modal_app.py::download` fills a Modal Volume with them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import pipelines
from bench.timing import interleaved, medians
from pipelines.core.device import describe_device
from pipelines.instantstyle import InstantStylePipeline
from pipelines.instantstyle.method import DEFAULT_GUIDANCE, generation_size, strength_knobs
from pipelines.instantstyle.weights import weights_spec

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "instantstyle"
CONTENT, STYLE = ROOT / "assets" / "content" / "chelsea.jpg", ROOT / "assets" / "style" / "munch-the-scream.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64, help="the drawing resolution (the option `resolution`)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    parts = (
        FIXTURE / "tiny_sdxl",
        FIXTURE / "tiny_ip_adapter" / "ip-adapter_sdxl.safetensors",
        FIXTURE / "tiny_image_encoder",
        FIXTURE / "tiny_controlnet",
    )
    weights = weights_spec(*(str(part) for part in parts))
    context = pipelines.StudioContext(
        device=args.device, backend="local", cache_dir=Path(tempfile.mkdtemp()), weights={"instantstyle": weights}
    )
    bare = InstantStylePipeline.from_pretrained(
        parts[0], ip_adapter=parts[1].parent, image_encoder=parts[2], controlnet=parts[3]
    ).to(args.device)
    bare.set_progress_bar_config(disable=True)
    content = pipelines.load_image(CONTENT, max_side=args.size)
    style = pipelines.load_image(STYLE, max_side=args.size)
    knobs = strength_knobs(0.7)
    width, height = generation_size(*content.size, args.size)

    def run_bare() -> object:
        return bare(
            style,
            content_image=content,
            style_scale=knobs.style_scale,
            controlnet_conditioning_scale=knobs.controlnet_scale,
            guidance_scale=DEFAULT_GUIDANCE,
            num_inference_steps=args.steps,
            height=height,
            width=width,
            generator=torch.Generator().manual_seed(0),
        )

    def run_studio() -> object:
        return pipelines.stylize(content, style, method="instantstyle", strength=0.7, steps=args.steps, seed=0,
                                 max_side=args.size, options={"resolution": args.size}, context=context)  # fmt: skip

    seconds = medians(interleaved({"bare": run_bare, "studio": run_studio}, args.repeats))
    report = {
        "device": describe_device(args.device),
        "model": "fixture tiny SDXL + IP-Adapter + ControlNet",
        "size": f"{width}x{height}",
        "steps": args.steps,
        "seconds": seconds,
        "studio_over_bare": seconds["studio"] / seconds["bare"],
    }
    print(json.dumps(report, indent=2))
    out = ROOT / "bench" / "results" / f"instantstyle_{args.device.split(':')[0]}_{args.size}px.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
