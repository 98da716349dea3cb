"""Which device runs a method: CUDA if present, else Apple MPS, else CPU, unless the user says otherwise."""

from __future__ import annotations

import re

from pipelines.core.errors import InvalidRequestError, MethodUnavailableError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _torch():
    """torch, or None where it is not installed (the fast engine does not need it)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def cuda_available() -> bool:
    torch = _torch()
    return bool(torch is not None and torch.cuda.is_available())


def mps_available() -> bool:
    torch = _torch()
    return bool(torch is not None and torch.backends.mps.is_available())


def check_device_name(requested: str) -> str:
    """Normalise a device name without probing hardware (so CPU-only engines need not import torch)."""
    requested = (requested or "auto").strip().lower()
    if not _DEVICE_PATTERN.match(requested):
        raise InvalidRequestError(f"Unknown device {requested!r}: use auto, cuda, cuda:N, mps or cpu.")
    return requested


def resolve_device(requested: str = "auto") -> str:
    """Turn ``auto`` into the best device present, and check that an explicit choice exists.

    Returns ``"cuda"``/``"cuda:N"``, ``"mps"`` or ``"cpu"``.
    """
    requested = check_device_name(requested)
    if requested == "auto":
        if cuda_available():
            return "cuda"
        if mps_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda"):
        if not cuda_available():
            raise MethodUnavailableError(
                "CUDA was requested but torch sees no CUDA GPU here "
                "(no GPU, no driver, or a CPU-only torch build). Use --device cpu or auto."
            )
        index = int(requested.split(":")[1]) if ":" in requested else 0
        count = _torch().cuda.device_count()
        if index >= count:
            raise MethodUnavailableError(
                f"{requested} was requested but only {count} CUDA device(s) exist (cuda:0 to cuda:{count - 1})."
            )
    if requested == "mps" and not mps_available():
        raise MethodUnavailableError("Apple MPS was requested but is not available here. Use --device cpu or auto.")
    return requested


PRECISIONS = ("auto", "float32", "bfloat16")
PRECISION_HELP = (
    "number format of the diffusion models: auto (default: bfloat16 on CUDA, and on CPUs with native bfloat16 "
    "arithmetic for ArtFusion), float32 (exact, slower) or bfloat16"
)


def check_precision(value: str | None) -> str:
    setting = (value or "auto").strip().lower()
    if setting not in PRECISIONS:
        raise InvalidRequestError(f"Unknown precision {value!r}: use {', '.join(PRECISIONS)}.")
    return setting


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): twice float32's arithmetic rate."""
    torch = _torch()
    if torch is None:
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def diffusion_dtype(device: str, precision: str = "auto", *, bfloat16_on_cpu: bool = False) -> str:
    """The dtype name a diffusion model runs in on ``device`` under the ``precision`` setting.

    ``auto``: bfloat16 on CUDA; on a CPU bfloat16 only where the method measured it worth it
    (``bfloat16_on_cpu``) and the CPU computes it natively (otherwise it is emulated and slower); else float32.
    """
    precision = check_precision(precision)
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bfloat16"
    if device == "cpu" and bfloat16_on_cpu and cpu_has_native_bfloat16():
        return "bfloat16"
    return "float32"


def describe_device(device: str) -> str:
    """A human-readable name for result metadata, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if device.startswith("cuda") and cuda_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        return f"cuda:{index} ({_torch().cuda.get_device_name(index)})"
    return device
