"""The one result type: the picture plus everything needed to reproduce it."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pipelines.core.png import encode_png


@dataclass
class StyleResult:
    """``image``: the stylized RGB picture at the content's working size.

    ``metadata``: method, every parameter, the seed actually used, device, dtype, input digests, timings.
    ``content``: the cleaned content picture the method saw (same size as ``image``; for before/after views).
    """

    image: Image.Image
    metadata: dict[str, Any]
    content: Image.Image | None = None

    def png_bytes(self) -> bytes:
        """The picture as PNG with ``metadata`` in a text chunk (see ``pipelines.read_png_metadata``)."""
        return encode_png(self.image, self.metadata)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the PNG atomically: a reader never sees half a file, a crash leaves the old one intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.png_bytes()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
