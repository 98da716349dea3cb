"""The one request type every method takes, its declared parameters, and their validation.

``StyleRequest``'s fields are the studio's request schema: each field declares its kind, range, label and help
once (``parameter(...)``), and every front end follows from that declaration: the CLI's flags, the ``/stylize``
API signature and its docs, the Modal entrypoint's parameters and the UI handler's inputs all loop over
``REQUEST_PARAMETERS``. Adding a parameter is one edit here (plus what it does in the core or a method).

The core validates here, so a bad value gets the same clear message whichever way it came in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from pipelines.core.errors import InvalidRequestError
from pipelines.core.images import DEFAULT_MAX_SIDE, ImageSource

MAX_SEED = 2**32 - 1  # what numpy and torch generators accept everywhere
MAX_STEPS = 1000
MIN_MAX_SIDE, MAX_MAX_SIDE = 64, 4096

ParameterKind = Literal["image", "method", "fraction", "int", "bool", "options"]


@dataclass(frozen=True)
class Parameter:
    """One declared request parameter (read by every front end to build its flag, argument or widget)."""

    name: str
    kind: ParameterKind
    default: Any
    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None  # the UI's slider step (None: a number box)
    optional: bool = False  # None is a valid value ("the method's default", "draw one")
    aliases: tuple[str, ...] = ()  # other CLI spellings, e.g. the earlier prototype's --content-file-path
    advanced: bool = False  # the UI puts it under Advanced

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def python_type(self) -> Any:
        base = {"image": str, "method": str, "fraction": float, "int": int, "bool": bool, "options": dict}[self.kind]
        return base | None if self.optional else base


def parameter(default: Any = MISSING, **declaration: Any) -> Any:
    """A ``StyleRequest`` field with its declaration (see ``Parameter``; name and default come from the field)."""
    return field(default=default, metadata={"parameter": declaration})


@dataclass(frozen=True)
class StyleRequest:
    """Everything needed to make (and later reproduce) one stylized picture. Where it runs (device, weights,
    backend) is the ``StudioContext``'s business, not the request's."""

    content: ImageSource = parameter(
        kind="image",
        label="Content",
        help="the picture to restyle (a file path, bytes, a PIL image or an array)",
        aliases=("--content-file-path",),
    )
    style: ImageSource | None = parameter(
        kind="image",
        label="Style",
        help="the picture whose style to take (not needed for methods that apply a learned style, e.g. inst)",
        optional=True,
        aliases=("--style-file-path",),
    )
    method: str | None = parameter(
        None,
        kind="method",
        label="Method",
        help="style method by name: fast, artfusion, styleid, instantstyle or inst; when not given, the best one "
        "this machine can run",
        optional=True,
    )
    strength: float = parameter(
        0.7,
        kind="fraction",
        label="Style strength",
        help="0 keeps the content unchanged, 1 is the strongest style the method gives",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
    )
    steps: int | None = parameter(
        None,
        kind="int",
        label="Diffusion steps",
        help="diffusion steps (the method's default when not given); ignored by methods without steps",
        minimum=1,
        maximum=MAX_STEPS,
        step=1,
        optional=True,
    )
    seed: int | None = parameter(
        None,
        kind="int",
        label="Seed",
        help="random seed (drawn when not given; the result records it); ignored by methods without randomness",
        minimum=0,
        maximum=MAX_SEED,
        optional=True,
    )
    max_side: int = parameter(
        DEFAULT_MAX_SIDE,
        kind="int",
        label="Max side (px)",
        help="long side of the working resolution in pixels (inputs are downscaled, never upscaled)",
        minimum=MIN_MAX_SIDE,
        maximum=MAX_MAX_SIDE,
        step=64,
        advanced=True,
    )
    preserve_color: bool = parameter(
        False,
        kind="bool",
        label="Preserve content colours",
        help="keep the content's colours and take only the stylized luminance",
        advanced=True,
    )
    options: Mapping[str, Any] = parameter(
        None,
        kind="options",
        label="Method options",
        help='method-specific options by name, e.g. {"eta": 0} for artfusion (see `python -m pipelines methods`)',
        optional=True,
        advanced=True,
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once, here
        if self.method is not None and not isinstance(self.method, str):
            raise InvalidRequestError(f"method must be a name such as 'fast', not {self.method!r}.")
        set_(self, "method", self.method or None)
        set_(self, "strength", check_fraction("strength", self.strength))
        if self.steps is not None:
            set_(self, "steps", check_int("steps", self.steps, 1, MAX_STEPS))
        if self.seed is not None:
            set_(self, "seed", check_int("seed", self.seed, 0, MAX_SEED))
        set_(self, "max_side", check_int("max_side", self.max_side, MIN_MAX_SIDE, MAX_MAX_SIDE))
        if not isinstance(self.preserve_color, bool):
            raise InvalidRequestError(f"preserve_color must be true or false, not {self.preserve_color!r}.")
        options = {} if self.options is None else self.options
        if not isinstance(options, Mapping):
            raise InvalidRequestError(f"options must be a mapping of option names to values, not {self.options!r}.")
        set_(self, "options", dict(options))

    def parameters(self) -> dict[str, Any]:
        """The request's parameters without the images (for metadata, logs and remote calls)."""
        return {p.name: getattr(self, p.name) for p in REQUEST_PARAMETERS if p.kind != "image"}


def _declared_parameters() -> tuple[Parameter, ...]:
    declared = []
    for item in fields(StyleRequest):
        default = None if item.default is MISSING else item.default
        declared.append(Parameter(name=item.name, default=default, **item.metadata["parameter"]))
    return tuple(declared)


#: The request schema, in declaration order: every front end builds its inputs from this.
REQUEST_PARAMETERS: tuple[Parameter, ...] = _declared_parameters()


def get_request_parameter(name: str) -> Parameter:
    """The declared request parameter called ``name``."""
    for param in REQUEST_PARAMETERS:
        if param.name == name:
            return param
    raise KeyError(name)


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
