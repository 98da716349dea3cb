"""The InST style library: learned styles on disk, one entry per style.

An entry ``<slug>`` is three files in the library folder:
- ``<slug>.safetensors``: the mapper weights (``mapper.*``) and what inference needs from the style image
  (``image_embeds``, ``latent_mean``, ``latent_std``), so applying a style never needs the image again;
- ``<slug>.json``: name, base model, CLIP model and mode, steps, final loss, created time, source;
- ``<slug>.png``: a thumbnail of the style image.
Every file is written atomically (temporary file, then rename) and the JSON last, so a crash mid-save never
leaves an entry that looks complete. Names are reduced to a safe slug: nothing can escape the folder.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from pipelines.core.errors import InvalidRequestError, MethodUnavailableError

FORMAT = "style-studio/inst-style/1"
THUMBNAIL_SIDE = 256
_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(name: str) -> str:
    """A file-safe slug for a style name: lowercase letters, digits and single dashes, at most 64 characters."""
    if not isinstance(name, str):
        raise InvalidRequestError(f"A style name must be text, not {name!r}.")
    slug = _SLUG.sub("-", name.lower()).strip("-")[:64].strip("-")
    if not slug:
        raise InvalidRequestError(f"The style name {name!r} has no letters or digits; use a name like 'blue-horses'.")
    return slug


@dataclass
class StyleEntry:
    name: str
    slug: str
    base_model: str
    clip_model: str
    clip_mode: str
    steps: int
    final_loss: float | None
    created: str
    source: str = "learned"  # or "imported" (an official embeddings.pt)
    preset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StyleLibrary:
    """The learned styles in one folder (``StudioContext.styles_dir``; the Modal app's is on its Volume)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()

    def _path(self, slug: str, suffix: str) -> Path:
        path = (self.root / f"{slug}{suffix}").resolve()
        if path.parent != self.root.resolve():  # belt and braces: slugs cannot contain separators anyway
            raise InvalidRequestError(f"Style name {slug!r} would leave the library folder.")
        return path

    def __iter__(self) -> Iterator[StyleEntry]:
        return iter(self.list())

    def list(self) -> list[StyleEntry]:
        """Complete entries, newest first."""
        if not self.root.is_dir():
            return []
        entries = []
        for meta in self.root.glob("*.json"):
            if meta.name.startswith(".") or not meta.with_suffix(".safetensors").is_file():
                continue
            try:
                entries.append(StyleEntry(**json.loads(meta.read_text())))
            except (ValueError, TypeError):
                continue  # a foreign or damaged file: not an entry
        return sorted(entries, key=lambda e: e.created, reverse=True)

    def get(self, name: str) -> StyleEntry:
        slug = slugify(name)
        meta = self._path(slug, ".json")
        if not meta.is_file() or not self._path(slug, ".safetensors").is_file():
            known = ", ".join(e.slug for e in self.list()) or "none yet"
            raise MethodUnavailableError(
                f"No learned style {name!r} in the style library {self.root} (styles: {known}). Learn it first "
                "(the Learn a style tab, or `python -m pipelines learn-style`), or import an official embeddings.pt."
            )
        return StyleEntry(**json.loads(meta.read_text()))

    def thumbnails(self) -> list[tuple[str, StyleEntry]]:
        """(thumbnail path, entry) for every complete entry that has a thumbnail, newest first."""
        return [(str(self._path(e.slug, ".png")), e) for e in self.list() if self._path(e.slug, ".png").is_file()]

    def weights_path(self, name: str) -> Path:
        return self._path(self.get(name).slug, ".safetensors")

    def thumbnail_path(self, name: str) -> Path:
        return self._path(slugify(name), ".png")

    def save(
        self,
        name: str,
        tensors: dict[str, Any],
        tensor_metadata: dict[str, str],
        entry: dict[str, Any],
        style_image: Image.Image,
        *,
        overwrite: bool = False,
    ) -> StyleEntry:
        """Write one entry (tensors, thumbnail, then the JSON that makes it visible)."""
        from safetensors.torch import save_file

        slug = slugify(name)
        self.root.mkdir(parents=True, exist_ok=True)
        if not overwrite and self._path(slug, ".json").exists():
            raise InvalidRequestError(f"A style named {slug!r} already exists; choose another name or delete it first.")
        record = StyleEntry(
            name=name.strip(), slug=slug, created=datetime.now(UTC).isoformat(timespec="seconds"), **entry
        )
        thumbnail = style_image.convert("RGB")
        thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        _atomic_write(self._path(slug, ".png"), lambda tmp: thumbnail.save(tmp, format="PNG"))
        metadata = {"format": FORMAT, **tensor_metadata}
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}
        _atomic_write(self._path(slug, ".safetensors"), lambda tmp: save_file(tensors, tmp, metadata=metadata))
        _atomic_write(self._path(slug, ".json"), lambda tmp: Path(tmp).write_text(json.dumps(asdict(record), indent=2)))
        return record

    def rename(self, name: str, new_name: str) -> StyleEntry:
        entry = self.get(name)
        new_slug = slugify(new_name)
        if new_slug != entry.slug and self._path(new_slug, ".json").exists():
            raise InvalidRequestError(f"A style named {new_slug!r} already exists.")
        for suffix in (".safetensors", ".png"):
            if self._path(entry.slug, suffix).exists():
                os.replace(self._path(entry.slug, suffix), self._path(new_slug, suffix))
        renamed = StyleEntry(**{**asdict(entry), "name": new_name.strip(), "slug": new_slug})
        _atomic_write(
            self._path(new_slug, ".json"), lambda tmp: Path(tmp).write_text(json.dumps(asdict(renamed), indent=2))
        )
        if new_slug != entry.slug:
            self._path(entry.slug, ".json").unlink(missing_ok=True)
        return renamed

    def delete(self, name: str) -> None:
        entry = self.get(name)
        self._path(entry.slug, ".json").unlink(missing_ok=True)  # first: the entry disappears at once
        for suffix in (".safetensors", ".png"):
            self._path(entry.slug, suffix).unlink(missing_ok=True)
