"""Batch throughput on this machine: ``stylize_batch`` with its worker pool against a plain loop.

    python -m bench.batch [--pictures 16] [--side 448] [--rounds 5] [--workers 1,2,4]

The same pictures (the bundled photos, each cropped and marked differently, so every one is new to the engine's
memo) go through, in turns within each round so that machine noise hits all variants alike:
- a sequential loop: ``pipelines.stylize(photo, style, method="fast").save(...)`` per picture (the baseline);
- ``stylize_batch`` with 1, 2, 4, … pictures in flight, and with its default worker count.
Every run starts with the engine's memo of style vectors emptied and a fresh output folder. Writes the median
pictures per second and the speed-up over the loop to bench/results/batch_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnxruntime
from PIL import Image

import pipelines
from bench.timing import interleaved
from pipelines.batch import default_workers, stylize_batch
from pipelines.core.studio import loaded_model

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "assets" / "content").glob("*.jpg"))
STYLE = ROOT / "assets" / "style" / "van-gogh-starry-night.jpg"
LOOP = "sequential loop (pipelines.stylize)"


def make_pictures(folder: Path, count: int, side: int) -> list[Path]:
    """``count`` different JPEGs with a long side of ``side`` px (crops of the bundled photos, each marked)."""
    paths = []
    for number in range(count):
        with Image.open(PHOTOS[number % len(PHOTOS)]) as photo:
            picture = photo.convert("RGB")
        shift = 8 * (number // len(PHOTOS))
        picture = picture.crop((shift, shift, picture.width - shift, picture.height - shift))
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
        picture.paste((number * 37 % 256, 11, 7), (0, 0, 6, 6))
        paths.append(folder / f"photo-{number:02d}.jpg")
        picture.save(paths[-1], quality=92)
    return paths


def variants(
    pictures: list[Path], scratch: Path, workers: list[int], strength: float
) -> dict[str, Callable[[], object]]:
    context = pipelines.default_context()
    engine, _ = loaded_model("fast", context)
    runs = iter(range(10**6))

    def fresh_folder() -> Path:
        engine.vectors.clear()  # every run computes its style vectors, as a first batch would
        return scratch / f"run-{next(runs)}"

    def loop() -> None:
        out = fresh_folder()
        out.mkdir()
        for path in pictures:
            result = pipelines.stylize(path, STYLE, method="fast", strength=strength, context=context)
            result.save(out / f"{path.stem}.png")

    def pool(count: int | None) -> Callable[[], object]:
        return lambda: stylize_batch(
            pictures, STYLE, fresh_folder(), context=context, workers=count, method="fast", strength=strength
        )

    chosen = {LOOP: loop}
    for count in workers:
        chosen[f"stylize_batch, {count} worker{'s' if count > 1 else ''}"] = pool(count)
    chosen[f"stylize_batch, default ({default_workers('fast')} workers here)"] = pool(None)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pictures", type=int, default=16)
    parser.add_argument("--side", type=int, default=448, help="long side of the pictures (the fast engine: 384-512)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="1,2,4", help="worker counts to try, separated by commas")
    parser.add_argument("--strength", type=float, default=0.7)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "batch_cpu.json"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # a shared machine's other work inflates the gain of more threads: recorded
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        (scratch / "in").mkdir()
        pictures = make_pictures(scratch / "in", args.pictures, args.side)
        counts = [int(n) for n in args.workers.split(",") if n.strip()]
        times = interleaved(variants(pictures, scratch, counts, args.strength), args.rounds)

    base = statistics.median(times[LOOP])
    rows = []
    print(f"{args.pictures} pictures, {args.side} px, fast method, {os.cpu_count()} CPUs, {args.rounds} rounds")
    print(f"{'variant':44s} {'median s':>9s} {'pics/s':>7s} {'speed-up':>8s}")
    for name, samples in times.items():
        median = statistics.median(samples)
        rate = args.pictures / median
        rows.append(
            {
                "variant": name,
                "median_s": round(median, 3),
                "min_s": round(min(samples), 3),
                "pictures_per_s": round(rate, 2),
                "speedup": round(base / median, 2),
            }
        )
        print(f"{name:44s} {median:9.3f} {rate:7.2f} {base / median:8.2f}")

    out = Path(args.out)
    out.write_text(
        json.dumps(
            {
                "benchmark": "batch_throughput",
                "method": "fast",
                "pictures": args.pictures,
                "side": args.side,
                "strength": args.strength,
                "rounds": args.rounds,
                "machine": {
                    "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(),
                    "onnxruntime": onnxruntime.__version__,
                    "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
                },
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
