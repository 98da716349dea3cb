"""The one result type (the picture plus everything needed to reproduce it) and its typed metadata."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from PIL import Image

from pipelines.core.png import encode_png
from pipelines.core.request import REQUEST_PARAMETERS

APP_NAME = "style-studio"
VERSION = "0.2.0"


@dataclass(frozen=True)
class Timings:
    prepare_s: float = 0.0  # decoding and cleaning the inputs
    load_s: float = 0.0  # loading the model (0 when it was already loaded)
    run_s: float = 0.0  # the method itself
    total_s: float = 0.0


@dataclass
class ResultMetadata(Mapping[str, Any]):
    """What made a picture: the request's parameters as run (``parameters``: method, strength, the steps and
    seed actually used, …, one entry per declared request parameter) and where and how it ran.

    Stored flat as JSON in the PNG (``to_dict``/``from_dict``); also readable as a mapping (``meta["seed"]``).
    """

    parameters: dict[str, Any]
    derived: dict[str, Any] = field(default_factory=dict)  # what the method derived (guidance scales, …)
    weights: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    backend: str = "local"
    content_digest: str = ""
    style_digest: str | None = None
    size: tuple[int, int] = (0, 0)
    timings: Timings = field(default_factory=Timings)
    created: str = ""
    app: str = APP_NAME
    version: str = VERSION

    @property
    def method(self) -> str:
        return self.parameters["method"]

    @property
    def strength(self) -> float:
        return self.parameters["strength"]

    @property
    def steps(self) -> int | None:
        return self.parameters.get("steps")

    @property
    def seed(self) -> int | None:
        return self.parameters.get("seed")

    def summary(self) -> str:
        """One line every front end shows, e.g. ``fast · strength 0.70 · seed 3 · 451×300 · 0.21 s on cpu``."""
        where = f"{self.device}, via Modal" if self.backend == "modal" else self.device
        parts = [self.method, f"strength {self.strength:.2f}"]
        if self.steps:
            parts.append(f"{self.steps} steps")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        parts += [f"{self.size[0]}×{self.size[1]}", f"{self.timings.total_s:.2f} s on {where}"]
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON form stored in PNGs (request parameters at the top level, as replay expects)."""
        flat = {**self.parameters}
        for item in fields(self):
            if item.name != "parameters":
                value = getattr(self, item.name)
                flat[item.name] = asdict(value) if isinstance(value, Timings) else value
        flat["size"] = list(self.size)
        return flat

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultMetadata:
        """Read the flat form back (also the 0.1 format, which called the options ``extras``)."""
        data = dict(data)
        if "extras" in data and "options" not in data:
            data["options"] = data.pop("extras")
        parameters = {p.name: data.get(p.name, p.default) for p in REQUEST_PARAMETERS if p.kind != "image"}
        known = {item.name for item in fields(cls)} - {"parameters"}
        values = {name: data[name] for name in known if name in data}
        if "timings" in values:
            values["timings"] = Timings(**{k: v for k, v in values["timings"].items() if k in Timings.__annotations__})
        if "size" in values:
            values["size"] = tuple(values["size"])
        return cls(parameters=parameters, **values)

    # Read-only mapping over the flat form, so ``meta["seed"]`` and ``dict(meta)`` work.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass
class StyleResult:
    """``image``: the stylized RGB picture at the content's working size.

    ``metadata``: what made it (``ResultMetadata``; ``metadata.summary()`` is the line front ends show).
    ``content``: the cleaned content picture the method saw (same size as ``image``; for before/after views).
    """

    image: Image.Image
    metadata: ResultMetadata
    content: Image.Image | None = None

    def png_bytes(self) -> bytes:
        """The picture as PNG with the metadata in a text chunk (see ``pipelines.read_png_metadata``)."""
        return encode_png(self.image, self.metadata.to_dict())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the PNG atomically (a reader never sees half a file, a crash leaves the old one intact), with the
        permissions an ordinary new file gets (``mkstemp`` would leave it readable by its owner only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.png_bytes()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
