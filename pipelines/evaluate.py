"""Evaluate methods over many content × style pairs and a strength sweep: a table of scores and a trade-off plot.

>>> from pipelines.evaluate import evaluate
>>> evaluation = evaluate(methods=("fast",), strengths=(0, 0.5, 1))   # the bundled 4 photos × 5 paintings
>>> evaluation.save("out/")   # results.csv, results.json, summary.json, tradeoff.png

Each content picture is one ``compare`` over its styles, so a pair that fails is a row with its ``error`` and the
others still run. ``tradeoff.png`` plots, per method, the mean style score against the mean content score at each
strength: the curve a method traces from "the photo unchanged" to "the most style it gives".
"""

from __future__ import annotations

import csv
import io
import json
import math
import sysconfig
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from pipelines.compare import COMPARE_MAX_SIDE, compare, font
from pipelines.core.context import StudioContext
from pipelines.core.errors import InvalidRequestError
from pipelines.core.images import ImageSource
from pipelines.core.method import ProgressCallback

EVALUATE_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CONTENT_SCORE, STYLE_SCORE = "content_ssim", "style_distance"  # the trade-off plot's axes
ROW_FIELDS = ("content", "style", "method", "strength", "seconds")  # then one column per score, then "error"

Pair = tuple[ImageSource, ImageSource]  # (content, style)


# ---- pairs ---------------------------------------------------------------------------------------------------


def assets_dir() -> Path:
    """The bundled example pictures: in a checkout beside the package, else where ``pip install .`` put them
    (``<prefix>/share/style-studio/assets``), as the app finds them."""
    candidates = [Path(__file__).resolve().parents[1] / "assets"]
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")):
        candidates.append(Path(sysconfig.get_path("data", scheme)) / "share" / "style-studio" / "assets")
    return next((folder for folder in candidates if (folder / "content").is_dir()), candidates[0])


def pairs_in(folder: str | Path) -> list[tuple[Path, Path]]:
    """Every picture in ``folder/content`` with every picture in ``folder/style`` (sorted by name)."""
    folder = Path(folder)
    found = {role: _pictures(folder / role) for role in ("content", "style")}
    missing = [role for role, pictures in found.items() if not pictures]
    if missing:
        raise InvalidRequestError(
            f"{folder} has no pictures in {folder / missing[0]}: a pairs folder holds content/ and style/ "
            f"subfolders of {', '.join(PICTURE_SUFFIXES)} files, and every content is paired with every style."
        )
    return [(content, style) for content in found["content"] for style in found["style"]]


def default_pairs() -> list[tuple[Path, Path]]:
    """The bundled assets: 4 photos × 5 paintings."""
    return pairs_in(assets_dir())


def evaluation_pairs(sources: Sequence[str]) -> list[tuple[Path, Path]]:
    """The pairs the CLI's ``--pairs`` names: ``default`` (the bundled assets) and/or pairs folders."""
    pairs: list[tuple[Path, Path]] = []
    for source in sources or ("default",):
        pairs += default_pairs() if source == "default" else pairs_in(source)
    return pairs


def _pictures(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES)


# ---- running -------------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """``rows``: one per pair × method × strength, flat: content, style, method, strength, seconds, each score
    (None where not computed) and error (None when the picture was made)."""

    rows: list[dict[str, Any]]
    score_names: tuple[str, ...]
    methods: tuple[str, ...]
    strengths: tuple[float, ...]
    cancelled: bool = False

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["error"] is not None]

    @property
    def pair_count(self) -> int:
        return len({(row["content"], row["style"]) for row in self.rows})

    def summary(self) -> list[dict[str, Any]]:
        """Per method and strength: how many pairs ran and failed, and the mean seconds and score over those
        that ran (None when none has a value)."""
        table = []
        for method in self.methods:
            for strength in self.strengths:
                rows = [r for r in self.rows if r["method"] == method and r["strength"] == strength]
                made = [r for r in rows if r["error"] is None]
                entry: dict[str, Any] = {"method": method, "strength": strength, "pairs": len(made)}
                entry["failed"] = len(rows) - len(made)
                for name in ("seconds", *self.score_names):
                    entry[name] = _mean(r[name] for r in made)
                table.append(entry)
        return table

    def csv_text(self) -> str:
        columns = [*ROW_FIELDS, *self.score_names, "error"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({name: "" if row[name] is None else row[name] for name in columns})
        return buffer.getvalue()

    def tradeoff_image(self, content_score: str = CONTENT_SCORE, style_score: str = STYLE_SCORE) -> Image.Image:
        """Per method, the mean ``style_score`` against the mean ``content_score`` at each strength."""
        return draw_tradeoff(self, content_score, style_score)

    def save(self, out_dir: str | Path) -> Path:
        """Write results.csv, results.json, summary.json and tradeoff.png into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.csv").write_text(self.csv_text())
        (out / "results.json").write_text(json.dumps(self.rows, indent=2) + "\n")
        (out / "summary.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
        self.tradeoff_image().save(out / "tradeoff.png")
        return out


def evaluate(
    pairs: Sequence[Pair] | None = None,
    *,
    methods: Sequence[str] = ("fast",),
    strengths: Sequence[float] = EVALUATE_STRENGTHS,
    steps: int | None = None,
    seed: int | None = None,
    max_side: int = COMPARE_MAX_SIDE,
    context: StudioContext | None = None,
    scorers: Any = None,
    score_names: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    front_end: str = "python",
) -> Evaluation:
    """Run and score every pair × method × strength (default pairs: ``default_pairs()``).

    The pairs of one content picture run as one ``compare`` (see it for ``seed``, ``scorers``, ``score_names``,
    ``cancel`` and ``front_end``). ``progress(done, total,
    text)`` after each cell.
    """
    from pipelines import scores as scoring

    pairs = list(default_pairs() if pairs is None else pairs)
    if not pairs:
        raise InvalidRequestError("An evaluation needs at least one content × style pair.")
    methods, strengths = tuple(methods), tuple(float(s) for s in strengths)
    names = tuple(scoring.SCORES) if score_names is None else tuple(dict.fromkeys(score_names))
    by_content: dict[Any, list[ImageSource]] = {}
    for content, style in pairs:  # one compare per content picture, in the order the pairs came
        by_content.setdefault(content, []).append(style)

    rows: list[dict[str, Any]] = []
    total = len(pairs) * len(methods) * len(strengths)
    cancelled = False
    for content, styles in by_content.items():
        offset = len(rows)

        def report(done: int, _: int, text: str, offset: int = offset) -> None:
            if progress is not None:
                progress(offset + done, total, text)

        comparison = compare(
            content,
            styles,
            methods=methods,
            strengths=strengths,
            steps=steps,
            seed=seed,
            max_side=max_side,
            context=context,
            scorers=scorers,
            score_names=names,
            progress=report,
            cancel=cancel,
            front_end=front_end,
        )
        for cell in comparison.cells:
            row = {"content": comparison.content_label, "style": cell.style, "method": cell.method}
            row |= {"strength": cell.strength, "seconds": cell.seconds, **cell.scores, "error": cell.error}
            rows.append(row)
        if comparison.cancelled:
            cancelled = True
            break
    return Evaluation(rows, names, methods, strengths, cancelled)


def _mean(values: Any) -> float | None:
    present = [float(v) for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None


# ---- the trade-off plot --------------------------------------------------------------------------------------

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))
INK, MUTED, GRID = (30, 30, 30), (110, 110, 110), (232, 232, 232)
PLOT_W, PLOT_H = 620, 420  # the plotting area
LEFT, RIGHT, TOP, BOTTOM = 78, 30, 58, 62  # margins: tick labels and the axis titles


def draw_tradeoff(evaluation: Evaluation, content_score: str, style_score: str) -> Image.Image:
    """See ``Evaluation.tradeoff_image``: axes with ticks and titles, one joined line per method with each point
    labelled by its strength, and a legend."""
    from pipelines import scores as scoring

    curves = _curves(evaluation, content_score, style_score)
    points = [point for curve in curves.values() for point in curve]
    xs, ys = _axis([p[1] for p in points]), _axis([p[2] for p in points])
    sheet = Image.new("RGB", (LEFT + PLOT_W + RIGHT, TOP + PLOT_H + BOTTOM), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    text, small, title = font(13), font(11), font(16)

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            LEFT + (x - xs[0]) / (xs[-1] - xs[0]) * PLOT_W,
            TOP + PLOT_H - (y - ys[0]) / (ys[-1] - ys[0]) * PLOT_H,
        )

    # 1. Title, grid lines, ticks and tick labels.
    pairs = evaluation.pair_count
    draw.text((LEFT, 12), f"Style vs content: mean over {pairs} pair{'s' * (pairs != 1)} per strength", INK, title)
    note = "each point is one strength (s), joined from weakest to strongest"
    best_x = "right" if _direction(scoring, content_score) == "higher" else "left"
    best_y = "top" if _direction(scoring, style_score) == "higher" else "bottom"
    draw.text((LEFT, 34), f"{note}; the {best_y} {best_x} corner is best on both", MUTED, small)
    for value in xs:
        x, _ = at(value, ys[0])
        draw.line([(x, TOP), (x, TOP + PLOT_H)], fill=GRID)
        draw.line([(x, TOP + PLOT_H), (x, TOP + PLOT_H + 5)], fill=INK)
        draw.text((x, TOP + PLOT_H + 8), _tick(value), INK, small, anchor="ma")
    for value in ys:
        _, y = at(xs[0], value)
        draw.line([(LEFT, y), (LEFT + PLOT_W, y)], fill=GRID)
        draw.line([(LEFT - 5, y), (LEFT, y)], fill=INK)
        draw.text((LEFT - 8, y), _tick(value), INK, small, anchor="rm")
    draw.rectangle([LEFT, TOP, LEFT + PLOT_W, TOP + PLOT_H], outline=INK)

    # 2. Axis titles (the y title turned on its side).
    x_title = f"{content_score}  ({_direction(scoring, content_score)} is better: more of the content kept)"
    draw.text((LEFT + PLOT_W / 2, TOP + PLOT_H + 30), x_title, INK, text, anchor="ma")
    y_title = f"{style_score}  ({_direction(scoring, style_score)} is better: closer to the style)"
    label = Image.new("RGB", (int(text.getlength(y_title)) + 4, 18), (255, 255, 255))
    ImageDraw.Draw(label).text((2, 1), y_title, INK, text)
    turned = label.rotate(90, expand=True)
    sheet.paste(turned, (8, TOP + (PLOT_H - turned.height) // 2))

    # 3. One line per method, each point labelled with its strength.
    labels = []
    for n, curve in enumerate(curves.values()):
        colour = PALETTE[n % len(PALETTE)]
        drawn = [at(x, y) for _, x, y in curve]
        if len(drawn) > 1:
            draw.line(drawn, fill=colour, width=2)
        for (strength, _, _), (x, y) in zip(curve, drawn, strict=True):
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour, outline=INK)
            labels.append(((x + 7, y + 5), f"s {strength:g}", colour))
    for position, label, colour in labels:  # last, on a white patch, so that no line runs through them
        draw.rectangle(draw.textbbox(position, label, font=small), fill=(255, 255, 255))
        draw.text(position, label, colour, small)
    if not points:
        draw.text((LEFT + PLOT_W / 2, TOP + PLOT_H / 2), "no scored results to plot", MUTED, text, anchor="mm")

    # 4. The legend, in the top right corner of the plot.
    if curves:
        width = max(int(text.getlength(m)) for m in curves) + 40
        x0, y0 = LEFT + PLOT_W - width - 10, TOP + 10
        draw.rectangle([x0, y0, x0 + width, y0 + 10 + 20 * len(curves)], fill=(255, 255, 255), outline=MUTED)
        for n, method in enumerate(curves):
            y = y0 + 15 + 20 * n
            colour = PALETTE[n % len(PALETTE)]
            draw.line([(x0 + 8, y), (x0 + 26, y)], fill=colour, width=3)
            draw.text((x0 + 32, y), method, INK, text, anchor="lm")
    return sheet


def _curves(evaluation: Evaluation, x_name: str, y_name: str) -> dict[str, list[tuple[float, float, float]]]:
    """method → [(strength, mean x, mean y)] in strength order, for strengths where both means exist."""
    curves: dict[str, list[tuple[float, float, float]]] = {}
    for entry in sorted(evaluation.summary(), key=lambda e: e["strength"]):
        if entry.get(x_name) is not None and entry.get(y_name) is not None:
            curves.setdefault(entry["method"], []).append((entry["strength"], entry[x_name], entry[y_name]))
    return curves


def _axis(values: list[float]) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × a power of ten) spanning ``values`` with a little room."""
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    room = (high - low) * 0.08 or max(abs(high) * 0.1, 0.05)
    low, high = low - room, high + room
    raw = (high - low) / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    count = math.ceil((high - first) / step)
    return [round(first + i * step, 10) for i in range(count + 1)]


def _tick(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"


def _direction(scoring: Any, name: str) -> str:
    return scoring.SCORES[name].better if name in scoring.SCORES else "?"
