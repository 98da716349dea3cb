"""The one request type every method takes, and its validation.

Front ends build a ``StyleRequest`` from whatever they received (widgets, CLI flags, JSON) and the core
validates it here, so a bad value gets the same clear message whichever way it came in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pipelines.core.errors import InvalidRequestError
from pipelines.core.images import DEFAULT_MAX_SIDE, ImageSource

MAX_SEED = 2**32 - 1  # what numpy and torch generators accept everywhere
MAX_STEPS = 1000
MIN_MAX_SIDE, MAX_MAX_SIDE = 64, 4096


@dataclass(frozen=True)
class StyleRequest:
    """Everything needed to make (and later reproduce) one stylized picture.

    Attributes:
        content: the picture to restyle (path, bytes, PIL image or array).
        style: the picture whose style to take (None for methods that take the style from elsewhere, e.g. a
            learned style in InST's library).
        method: registry name of the method (``"fast"``, …); ``None`` picks the default for the device.
        strength: 0 gives the content unchanged, 1 the strongest style the method gives; each method
            documents how it maps this number.
        steps: diffusion steps; ``None`` uses the method's default; ignored by methods without steps.
        seed: random seed; ``None`` draws one, and the result records the seed actually used.
        max_side: long side, in pixels, of the working resolution (inputs are downscaled, never upscaled).
        preserve_color: keep the content's colours and take only the stylized luminance.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        weights: where the method's weights come from (a path or Hub id); ``None`` uses the method's default.
        extras: method-specific options, validated by the method.
    """

    content: ImageSource
    style: ImageSource | None
    method: str | None = None
    strength: float = 0.7
    steps: int | None = None
    seed: int | None = None
    max_side: int = DEFAULT_MAX_SIDE
    preserve_color: bool = False
    device: str = "auto"
    weights: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once, here
        if self.method is not None and not isinstance(self.method, str):
            raise InvalidRequestError(f"method must be a name such as 'fast', not {self.method!r}.")
        set_(self, "strength", check_fraction("strength", self.strength))
        if self.steps is not None:
            set_(self, "steps", check_int("steps", self.steps, 1, MAX_STEPS))
        if self.seed is not None:
            set_(self, "seed", check_int("seed", self.seed, 0, MAX_SEED))
        set_(self, "max_side", check_int("max_side", self.max_side, MIN_MAX_SIDE, MAX_MAX_SIDE))
        if not isinstance(self.preserve_color, bool):
            raise InvalidRequestError(f"preserve_color must be true or false, not {self.preserve_color!r}.")
        if not isinstance(self.device, str):
            raise InvalidRequestError(f"device must be a name such as 'auto' or 'cpu', not {self.device!r}.")
        if self.weights is not None and not isinstance(self.weights, str):
            raise InvalidRequestError(f"weights must be a path or a Hub repo id, not {self.weights!r}.")
        if not isinstance(self.extras, Mapping):
            raise InvalidRequestError(f"extras must be a mapping of option names to values, not {self.extras!r}.")
        set_(self, "extras", dict(self.extras))

    def parameters(self) -> dict[str, Any]:
        """The request's parameters without the images (for metadata and logs)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("content", "style")}


def check_fraction(name: str, value: Any) -> float:
    """A finite real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRequestError(f"{name} must be a number between 0 and 1, not {value!r}.")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidRequestError(f"{name} must be between 0 and 1; got {value}.")
    return value


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """An integer in [low, high]; integral floats (20.0, as JSON and sliders send them) are accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRequestError(f"{name} must be a whole number from {low} to {high}, not {value!r}.")
    if isinstance(value, numbers.Integral):
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value) or not value.is_integer():
            raise InvalidRequestError(f"{name} must be a whole number from {low} to {high}; got {value}.")
        value = int(value)
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be from {low} to {high}; got {value}.")
    return value
