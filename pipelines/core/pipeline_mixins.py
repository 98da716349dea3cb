"""What every studio pipeline shares with diffusers' conventions: the interrupt flag and the output types."""

from __future__ import annotations

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class InterruptibleMixin:
    """diffusers' interrupt convention: a ``callback_on_step_end`` sets ``pipe._interrupt = True`` and the
    denoising loop stops at its next step; each call resets it first (``self._interrupt = False``)."""

    @property
    def interrupt(self) -> bool:
        return getattr(self, "_interrupt", False)


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
