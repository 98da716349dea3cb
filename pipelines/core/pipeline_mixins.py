"""What every studio pipeline shares with diffusers' conventions: the interrupt flag and the output types."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class InterruptibleMixin:
    """diffusers' interrupt convention: a ``callback_on_step_end`` sets ``pipe._interrupt = True`` and the
    denoising loop stops at its next step; each call resets it first (``self._interrupt = False``)."""

    @property
    def interrupt(self) -> bool:
        return getattr(self, "_interrupt", False)

    def step_end(
        self,
        callback: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None,
        index: int,
        timestep: Any,
        names: Iterable[str],
        values: Mapping[str, Any],
    ) -> Any:
        """diffusers' ``callback_on_step_end``: hand it the tensors it asked for; a ``latents`` it returns
        replaces the current ones. Returns the latents to go on with."""
        if callback is None:
            return values["latents"]
        outputs = callback(self, index, timestep, {name: values[name] for name in names})
        return outputs.pop("latents", values["latents"])


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
