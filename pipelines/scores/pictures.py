"""The three pictures of one scoring, decoded once, with their pixel digests (the keys of every memo)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pipelines.core.images import image_digest, load_image
from pipelines.scores.classical import same_size


@dataclass
class ScoredPictures:
    """``result`` against ``content`` and ``style`` (``None`` when the result had no style picture)."""

    result: Image.Image
    content: Image.Image
    style: Image.Image | None
    result_digest: str
    content_digest: str
    style_digest: str | None
    _content_at_result_size: Image.Image | None = field(default=None, repr=False)

    @classmethod
    def read(cls, result: Any, content: Any, style: Any) -> ScoredPictures:
        """Decode paths, bytes, arrays or PIL images (a ``StyleResult`` counts as its picture) to upright RGB."""
        result_image = load_image(getattr(result, "image", result), role="result")
        content_image = load_image(content, role="content")
        style_image = load_image(style, role="style") if style is not None else None
        return cls(
            result_image,
            content_image,
            style_image,
            image_digest(result_image),
            image_digest(content_image),
            image_digest(style_image) if style_image is not None else None,
        )

    @property
    def content_at_result_size(self) -> Image.Image:
        """The content resized to the result's size (content scores compare pixel to pixel)."""
        if self._content_at_result_size is None:
            self._content_at_result_size = same_size(self.content, self.result)
        return self._content_at_result_size

    @property
    def size_key(self) -> str:
        """A memo key for work on the content at the result's size."""
        return f"{self.content_digest}@{self.result.width}x{self.result.height}"
