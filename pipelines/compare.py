"""Compare methods and strengths side by side: one content picture, one or more styles → a grid of scored cells.

>>> from pipelines.compare import compare
>>> comparison = compare("photo.jpg", ["starry-night.jpg"], methods=("fast", "artfusion"), strengths=(0, 0.5, 1))
>>> comparison.grid_image().save("grid.png")
>>> comparison.save("out/")        # grid.png, one PNG per cell (with its metadata) and scores.json

Cells run one after another through ``stylize``, each timed and scored (``pipelines.scores``). A cell that cannot
run (method unavailable, bad style file, any error) records why and the others still run; once a method is known
to be unavailable its remaining cells take the same reason without trying again. Setting ``cancel`` stops the
cell in progress and leaves the rest unrun (each says so).
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import threading
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from pipelines.core.context import StudioContext, default_context
from pipelines.core.errors import (
    GenerationCancelled,
    ImageInputError,
    InvalidRequestError,
    MethodUnavailableError,
    describe_error,
)
from pipelines.core.images import ImageSource, load_image
from pipelines.core.method import ProgressCallback
from pipelines.core.request import MAX_SEED, check_fraction
from pipelines.core.result import StyleResult
from pipelines.core.studio import stylize

logger = logging.getLogger(__name__)

COMPARE_MAX_SIDE = 512  # a grid is for looking across cells: smaller pictures keep a many-cell grid quick
SCORES_FILE = "scores.json"
GRID_FILE = "grid.png"
NOT_RUN = "Not run: the comparison was cancelled."
CANCELLED = "Cancelled while it was being made."
# The scores a grid cell shows when the caller names none (the first few that some cell has a value for).
GRID_SCORES = ("content_ssim", "style_distance", "content_dino", "style_csd", "content_lpips")
MAX_GRID_SCORES = 3


@dataclass
class Cell:
    """One method × strength × style of a comparison.

    ``scores``: score name → value (None where it could not be computed; ``score_reasons`` says why, and a failed
    cell has None for every score). ``better``: score name → "higher" or "lower". ``seconds``: the wall time of
    the stylize call (loading included), also for a cell that failed. ``error``: why the cell has no picture.
    """

    method: str
    strength: float
    style: str  # the style's label (its file name for a path)
    png: str  # the cell's file name in a saved comparison, e.g. "starry-night__fast__s0.70.png"
    seconds: float | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    better: dict[str, str] = field(default_factory=dict)
    score_reasons: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    result: StyleResult | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def image(self) -> Image.Image | None:
        return self.result.image if self.result is not None else None

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The result's metadata (the dict its PNG carries), or None for a failed cell."""
        return self.result.metadata.to_dict() if self.result is not None else None

    @property
    def name(self) -> str:
        """E.g. ``starry-night.jpg · fast · strength 0.50``."""
        return f"{self.style} · {self.method} · strength {self.strength:.2f}"

    def line(self) -> str:
        """One line for logs and progress: the name, then the seconds or why it failed."""
        if self.error is not None:
            return f"{self.name}: failed: {self.error}"
        return f"{self.name}: {self.seconds:.2f} s"

    def to_json(self) -> dict[str, Any]:
        """The cell's entry in scores.json."""
        entry: dict[str, Any] = {
            "method": self.method,
            "strength": self.strength,
            "style": self.style,
            "seconds": self.seconds,
            "scores": dict(self.scores),
            "better": dict(self.better),
        }
        if self.error is not None:
            entry["error"] = self.error
        else:
            entry["png"] = self.png
        return entry


@dataclass
class Comparison:
    """The cells of one comparison, in order: for each style, for each method, each strength."""

    content: Image.Image  # the cleaned content picture every cell started from
    content_label: str
    styles: list[tuple[str, Image.Image | None]]  # label → picture (None: it could not be read)
    methods: tuple[str, ...]
    strengths: tuple[float, ...]
    score_names: tuple[str, ...]
    cells: list[Cell]
    cancelled: bool = False

    @property
    def failures(self) -> list[Cell]:
        return [cell for cell in self.cells if cell.error is not None]

    @property
    def ok(self) -> bool:
        return not self.failures

    def cell(self, style: str, method: str, strength: float) -> Cell:
        for cell in self.cells:
            if (cell.style, cell.method, cell.strength) == (style, method, strength):
                return cell
        raise KeyError((style, method, strength))

    def to_json(self) -> list[dict[str, Any]]:
        """scores.json: one entry per cell (see ``Cell.to_json``)."""
        return [cell.to_json() for cell in self.cells]

    def grid_image(self, *, cell_width: int = 240, score_names: Sequence[str] | None = None) -> Image.Image:
        """The grid as one picture: a row per style × method, a column per strength; the content and style
        thumbnails in the header row and column; each cell labelled with its main scores and seconds, or its
        reason for failing."""
        return draw_grid(self, cell_width=cell_width, score_names=score_names)

    def files(self) -> Iterable[tuple[str, bytes]]:
        """(file name, bytes) of everything a saved comparison holds: each picture, the grid, scores.json."""
        for cell in self.cells:
            if cell.result is not None:
                yield cell.png, cell.result.png_bytes()
        grid = io.BytesIO()
        self.grid_image().save(grid, format="PNG")
        yield GRID_FILE, grid.getvalue()
        yield SCORES_FILE, (json.dumps(self.to_json(), indent=2) + "\n").encode()

    def save(self, out_dir: str | Path) -> Path:
        """Write grid.png, each cell's PNG (with its metadata, ``StyleResult.save``) and scores.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for cell in self.cells:
            if cell.result is not None:
                cell.result.save(out / cell.png)
        self.grid_image().save(out / GRID_FILE)
        (out / SCORES_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return out

    def zip_bytes(self) -> bytes:
        """A zip of the pictures, grid.png and scores.json (PNGs are stored, not recompressed)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in self.files():
                kind = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
                archive.writestr(name, data, compress_type=kind)
        return buffer.getvalue()

    def save_zip(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.zip_bytes())
        return path


def compare(
    content: ImageSource,
    styles: ImageSource | Sequence[ImageSource] | Mapping[str, ImageSource],
    *,
    methods: Sequence[str] = ("fast",),
    strengths: Sequence[float] = (0.7,),
    steps: int | None = None,
    seed: int | None = None,
    max_side: int = COMPARE_MAX_SIDE,
    context: StudioContext | None = None,
    scorers: Any = None,
    score_names: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    front_end: str = "python",
) -> Comparison:
    """Stylize ``content`` with every style × method × strength and score each picture.

    ``styles``: one picture, a list, or a mapping label → picture (a path's label is its file name).
    ``seed``: drawn once when not given, so that every cell of a method uses the same one.
    ``scorers``: loaded learned scorers (``pipelines.scores.Scorers.load``; default: the process's own, loaded
    once by ``score_picture``). ``score_names``: the scores to compute (default: all).
    ``progress(done, total, text)``: after each cell. ``front_end``: how error messages spell their fixes
    (``describe_error``).
    Raises only for what makes the whole comparison impossible (an unreadable content picture, bad arguments).
    """
    from pipelines import scores as scoring  # the scorers load their own dependencies on first use

    # 1. Check the arguments and read the pictures once.
    methods = _non_empty("methods", tuple(methods))
    strengths = _non_empty("strengths", tuple(check_fraction("strength", s) for s in strengths))
    names = _check_score_names(score_names, scoring.SCORES)
    context = context or default_context()
    seed = seed if seed is not None else secrets.randbelow(MAX_SEED + 1)
    content_image = load_image(content, role="content", max_side=max_side)
    labelled = _labelled_styles(styles)
    style_images = [(label, _read_style(source, max_side)) for label, source in labelled]

    # 2. Lay out the cells (every one, so a grid keeps its shape whatever fails).
    stems = _unique_stems([label for label, _ in labelled])
    better = {name: scoring.better(name) for name in names}
    cells = [
        Cell(
            method,
            strength,
            label,
            png=f"{stem}__{_safe(method)}__s{strength:.2f}.png",
            scores=dict.fromkeys(names),  # None until scored; a failed cell keeps them None
            better=dict(better),
        )
        for (label, _), stem in zip(labelled, stems, strict=True)
        for method in methods
        for strength in strengths
    ]
    comparison = Comparison(
        content_image,
        _label_of(content, "content"),
        [(label, image) for label, (image, _) in style_images],
        methods,
        strengths,
        names,
        cells,
    )

    # 3. Run the cells in order, each scored once made.
    pictures = {label: picture for label, picture in style_images}
    unavailable: dict[str, str] = {}  # method → why it cannot run here (its other cells are not tried again)
    # Strength 0 is the content itself, made without loading anything: those cells run last, so that a method
    # that cannot run here says so in all its cells rather than "succeeding" at 0 alone.
    for done, cell in enumerate(sorted(cells, key=lambda c: c.strength == 0.0), start=1):
        if cancel is not None and cancel.is_set():
            break
        style_image, style_error = pictures[cell.style]
        if style_error or cell.method in unavailable:
            cell.error, cell.seconds = style_error or unavailable[cell.method], 0.0
        elif _run_cell(cell, content_image, style_image, steps, seed, max_side, context, cancel, front_end):
            unavailable[cell.method] = cell.error
        if cell.result is not None:
            _score_cell(cell, content_image, style_image, names, context, scorers, scoring)
        if progress is not None:
            progress(done, len(cells), cell.line())
    for cell in cells:
        if cell.error is None and cell.result is None:
            cell.error = NOT_RUN
    comparison.cancelled = any(cell.error in (CANCELLED, NOT_RUN) for cell in cells)
    return comparison


# ---- running and scoring one cell ----------------------------------------------------------------------------


def _run_cell(
    cell: Cell,
    content: Image.Image,
    style: Image.Image,
    steps: int | None,
    seed: int,
    max_side: int,
    context: StudioContext,
    cancel: threading.Event | None,
    front_end: str,
) -> bool:
    """Make the cell's picture and time it, or record why not; True when the method cannot run here at all."""
    unavailable = False
    started = time.perf_counter()
    try:
        cell.result = stylize(
            content,
            style,
            method=cell.method,
            strength=cell.strength,
            steps=steps,
            seed=seed,
            max_side=max_side,
            context=context,
            cancel=cancel,
        )
    except GenerationCancelled:
        cell.error = CANCELLED
    except MethodUnavailableError as exc:
        cell.error, unavailable = describe_error(exc, front_end), True
    except Exception as exc:  # one cell's failure (a bad parameter, a bug) must not cost the others
        if not isinstance(exc, InvalidRequestError | ImageInputError):
            logger.exception("%s failed", cell.name)
        cell.error = describe_error(exc, front_end)
    cell.seconds = round(time.perf_counter() - started, 4)
    return unavailable


def _score_cell(
    cell: Cell,
    content: Image.Image,
    style: Image.Image,
    names: tuple[str, ...],
    context: StudioContext,
    scorers: Any,
    scoring: Any,
) -> None:
    result = cell.result
    assert result is not None
    seen = result.content if result.content is not None else content  # the content as the method saw it
    try:
        values = scoring.score_picture(result.image, seen, style, names=list(names), context=context, scorers=scorers)
    except Exception as exc:  # the picture is still worth showing: the scores say why they are missing
        logger.exception("scoring %s failed", cell.name)
        cell.score_reasons = dict.fromkeys(names, describe_error(exc))
        return
    for name in names:
        value = values.get(name)
        if value is not None:
            cell.scores[name] = None if value.value is None else float(value.value)
            if value.value is None:
                cell.score_reasons[name] = value.reason or "not computed"


# ---- arguments -----------------------------------------------------------------------------------------------


def _non_empty(what: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
    if not values:
        raise InvalidRequestError(f"A comparison needs at least one of {what}.")
    return values


def _check_score_names(names: Sequence[str] | None, known: Mapping[str, Any]) -> tuple[str, ...]:
    if names is None:
        return tuple(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidRequestError(f"Unknown score {unknown[0]!r}: choose from {', '.join(known)}.")
    return tuple(dict.fromkeys(names))


def _labelled_styles(styles: Any) -> list[tuple[str, ImageSource]]:
    """(label, source) for each style: a mapping's keys, else each path's file name, else "style N"."""
    if isinstance(styles, Mapping):
        items = [(str(label), source) for label, source in styles.items()]
    else:
        sources = (
            [styles] if isinstance(styles, str | Path | bytes | Image.Image) or hasattr(styles, "shape") else styles
        )
        items = [(_label_of(source, f"style {n}"), source) for n, source in enumerate(sources, start=1)]
    if not items:
        raise InvalidRequestError("A comparison needs at least one style picture.")
    seen: dict[str, int] = {}
    labelled = []
    for label, source in items:  # two files called style.jpg in different folders stay two styles
        seen[label] = seen.get(label, 0) + 1
        labelled.append((label if seen[label] == 1 else f"{label} ({seen[label]})", source))
    return labelled


def _label_of(source: Any, fallback: str) -> str:
    return Path(source).name if isinstance(source, str | Path) else fallback


def _read_style(source: ImageSource, max_side: int) -> tuple[Image.Image | None, str | None]:
    """The style picture, or why it cannot be read (its cells then say so; the other styles still run)."""
    try:
        return load_image(source, role="style", max_side=max_side), None
    except ImageInputError as exc:
        return None, describe_error(exc)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def _unique_stems(labels: list[str]) -> list[str]:
    stems: list[str] = []
    for label in labels:
        stem = _safe(Path(label).stem if "." in label else label)
        candidate, n = stem, 2
        while candidate in stems:
            candidate, n = f"{stem}-{n}", n + 1
        stems.append(candidate)
    return stems


# ---- the grid picture ----------------------------------------------------------------------------------------

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
FAILED_FILL = (246, 232, 232)
FAILED_INK = (150, 30, 30)
PAD = 8


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels (the bitmap font where Pillow has no FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def wrap(text: str, face: Any, width: int, max_lines: int | None = None) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels (words longer than a line are cut);
    at most ``max_lines``, the last one ending in "…" when text was left out."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if face.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while face.getlength(word) > width and len(word) > 1:  # a long path or URL: cut it
            cut = len(word)
            while cut > 1 and face.getlength(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and face.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def _thumbnail(image: Image.Image, box: tuple[int, int]) -> Image.Image:
    """``image`` as large as fits in ``box`` (small pictures are enlarged, so every cell reads the same)."""
    return ImageOps.contain(image, box, Image.Resampling.LANCZOS)


def _shown_scores(comparison: Comparison, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    has_value = [n for n in comparison.score_names if any(c.scores.get(n) is not None for c in comparison.cells)]
    preferred = [n for n in GRID_SCORES if n in has_value] + [n for n in has_value if n not in GRID_SCORES]
    return preferred[:MAX_GRID_SCORES]


def draw_grid(
    comparison: Comparison, *, cell_width: int = 240, score_names: Sequence[str] | None = None
) -> Image.Image:
    """See ``Comparison.grid_image``."""
    text, small, title = font(13), font(11), font(15)
    line = 17
    shown = _shown_scores(comparison, score_names)
    content = comparison.content
    # Every cell picture has the content's shape; keep very tall or wide ones from dominating the grid.
    picture_height = max(cell_width // 2, min(cell_width * 3 // 2, round(cell_width * content.height / content.width)))
    label_lines = 1 + len(shown)
    cell_w, cell_h = cell_width + 2 * PAD, picture_height + label_lines * line + 3 * PAD
    head_w = cell_width * 2 // 3 + 2 * PAD  # the header column: thumbnails and row names
    thumb_box = (head_w - 2 * PAD, picture_height * 2 // 3)
    header_h = thumb_box[1] + line + 3 * PAD
    rows = [(label, image, method) for label, image in comparison.styles for method in comparison.methods]
    legend = [f"{name}: {_direction(comparison, name)} is better" for name in shown]
    legend.append("seconds: time to make the picture (loading included)")
    legend_lines = wrap(" · ".join(legend), small, head_w + cell_w * len(comparison.strengths) - 2 * PAD)
    width = head_w + cell_w * len(comparison.strengths)
    height = line + 2 * PAD + header_h + cell_h * len(rows) + len(legend_lines) * 14 + 2 * PAD
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    # Title, then the header row: the content in the corner, one strength per column.
    status = " (cancelled)" if comparison.cancelled else ""
    draw.text((PAD, PAD), f"Comparison of {comparison.content_label}{status}", fill=INK, font=title)
    top = line + 2 * PAD
    thumb = _thumbnail(content, thumb_box)
    sheet.paste(thumb, (PAD, top + PAD))
    draw.text((PAD, top + PAD + thumb.height + 4), "content", fill=MUTED, font=text)
    for column, strength in enumerate(comparison.strengths):
        x = head_w + column * cell_w + PAD
        draw.text((x, top + header_h - line - PAD), f"strength {strength:.2f}", fill=INK, font=title)
    draw.line([(0, top + header_h - 2), (width, top + header_h - 2)], fill=MUTED, width=1)

    # One row per style × method: the style's thumbnail and name, then its cells.
    for row, (label, style_image, method) in enumerate(rows):
        y = top + header_h + row * cell_h
        if row:
            draw.line([(0, y), (width, y)], fill=(225, 225, 225), width=1)
        name_y = y + PAD
        if style_image is not None:
            style_thumb = _thumbnail(style_image, thumb_box)
            sheet.paste(style_thumb, (PAD, y + PAD))
            name_y += style_thumb.height + 4
        draw.text((PAD, name_y), method, fill=INK, font=title)
        for n, part in enumerate(wrap(label, small, head_w - 2 * PAD, max_lines=3)):
            draw.text((PAD, name_y + line + n * 14), part, fill=MUTED, font=small)
        for column, strength in enumerate(comparison.strengths):
            cell = comparison.cell(label, method, strength)
            _draw_cell(
                sheet, draw, cell, (head_w + column * cell_w + PAD, y + PAD), (cell_width, picture_height), shown
            )

    y = height - len(legend_lines) * 14 - PAD
    for n, part in enumerate(legend_lines):
        draw.text((PAD, y + n * 14), part, fill=MUTED, font=small)
    return sheet


def _draw_cell(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    cell: Cell,
    origin: tuple[int, int],
    box: tuple[int, int],
    shown: Sequence[str],
) -> None:
    text, small = font(13), font(11)
    x, y = origin
    if cell.image is not None:
        picture = _thumbnail(cell.image, box)
        sheet.paste(picture, (x + (box[0] - picture.width) // 2, y + (box[1] - picture.height) // 2))
        lines = [f"{cell.method} · {cell.strength:.2f} · {cell.seconds:.2f} s"]
        lines += [f"{name} {_format(cell.scores.get(name))}" for name in shown]
        for n, part in enumerate(lines):
            draw.text((x, y + box[1] + 4 + n * 17), part, fill=INK if n == 0 else MUTED, font=text)
        return
    draw.rectangle([x, y, x + box[0] - 1, y + box[1] - 1], fill=FAILED_FILL)
    reason = wrap(cell.error or "failed", small, box[0] - 2 * PAD, max_lines=max(1, (box[1] - 2 * PAD) // 14))
    for n, part in enumerate(reason):
        draw.text((x + PAD, y + PAD + n * 14), part, fill=FAILED_INK, font=small)
    draw.text((x, y + box[1] + 4), f"{cell.method} · {cell.strength:.2f} · failed", fill=FAILED_INK, font=text)


def _direction(comparison: Comparison, name: str) -> str:
    for cell in comparison.cells:
        if name in cell.better:
            return cell.better[name]
    return "?"


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
