"""Opt-in ``torch.compile`` of the denoisers (the part that runs once per step).

Off by default: compiling costs tens of seconds to minutes on the first picture of each size, which pays off
only on a server that makes many pictures. Front ends turn it on with ``--compile [MODE]`` (or the
``STYLE_STUDIO_COMPILE`` environment variable, read with the other settings into ``StudioContext.compile``):

- ``off`` / ``0`` / empty: eager PyTorch (the default);
- ``on`` / ``1``: ``reduce-overhead`` on CUDA (Inductor kernels replayed as CUDA graphs: the denoisers have
  static shapes per picture size and no host synchronisation, so a whole step is one graph launch) and
  ``default`` elsewhere;
- a torch.compile mode by name: ``default``, ``reduce-overhead``, ``max-autotune``,
  ``max-autotune-no-cudagraphs``.

Every picture size is compiled once (``dynamic=False``: static shapes give the fastest kernels and are what
CUDA graphs need), so a server that sees many sizes should also fix ``max_side``; beyond torch's recompile limit
(``torch._dynamo.config.recompile_limit``, 8 by default) further sizes run eagerly, with a warning in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.core.errors import InvalidRequestError

logger = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_OFF = ("", "0", "off", "false", "no")
_ON = ("1", "on", "true", "yes")


def check_compile_setting(value: str | None) -> str:
    """Normalise a ``--compile`` value; raise a clear error for anything else."""
    setting = (value or "").strip().lower()
    if setting in _OFF:
        return "off"
    if setting in _ON:
        return "on"
    if setting in COMPILE_MODES:
        return setting
    raise InvalidRequestError(f"Unknown compile setting {value!r}: use off, on, or one of {', '.join(COMPILE_MODES)}.")


COMPILE_HELP = (
    "torch.compile the diffusion denoiser: off (default), on (CUDA graphs on CUDA), or a torch.compile mode; "
    "the first picture of each size takes longer"
)


def compile_mode(setting: str, device: str) -> str | None:
    """The torch.compile mode that ``setting`` (``off``, ``on`` or a mode) means on ``device``, or None when off."""
    setting = check_compile_setting(setting)
    if setting == "off":
        return None
    if setting == "on":
        return "reduce-overhead" if device.startswith("cuda") else "default"
    return setting


def compile_denoiser(module: Any, device: str, setting: str) -> Any:
    """``module`` compiled as ``setting`` asks (whole graph, static shapes), or ``module`` itself when off."""
    mode = compile_mode(setting, device)
    if mode is None:
        return module
    import torch

    logger.info("torch.compile(%s, mode=%s): the first picture of each size compiles", type(module).__name__, mode)
    return torch.compile(module, mode=mode, fullgraph=True, dynamic=False)


def mark_step_begin() -> None:
    """Tell CUDA-graph replay that a new denoising step starts (the previous step's outputs have been used).
    A no-op cost when nothing is compiled."""
    import torch

    torch.compiler.cudagraph_mark_step_begin()
