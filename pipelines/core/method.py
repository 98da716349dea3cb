"""What a method is, as far as the core is concerned, and the registry of methods by name.

A method (one folder under ``pipelines/``) subclasses ``StyleMethod``: it says how it loads its heavy model
and how it turns prepared inputs into a picture. Everything else (validation, image hygiene, seeds, the
pipeline cache, the strength-0 and cross-fade envelope, progress, cancellation, colour preservation, metadata)
is the core's job, so every method gets it the same way.
"""

from __future__ import annotations

import math
import numbers
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from PIL import Image

from pipelines.core.device import resolve_device
from pipelines.core.errors import InvalidRequestError, MethodUnavailableError, WeightsFix

#: ``progress(done, total, description)``; called by methods as they advance.
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class StepsSpec:
    """How a method uses the studio's ``steps``: its default and the range the UI offers."""

    default: int
    minimum: int = 1
    maximum: int = 100


@dataclass(frozen=True)
class OptionSpec:
    """One method-specific option (a request's ``options``). Front ends build their controls from these, so no front end
    needs to know a method's internals."""

    name: str
    label: str
    kind: Literal["float", "int", "choice", "text"]
    default: Any = None  # None: "automatic" (e.g. derived from strength)
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    # Live choices for a text option (e.g. learned styles), given the StudioContext.
    suggestions: Callable[[Any], list[str]] | None = None
    previews: Callable[[Any], list[tuple[str, str]]] | None = None  # (image path, value) thumbnails to pick from

    def check(self, value: Any) -> Any:
        """The value, validated and normalised; strings (from the CLI, text boxes) are parsed; blank is unset."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if self.kind == "text":
            if not isinstance(value, str):
                raise InvalidRequestError(f"{self.name} must be text; got {value!r}.")
            return value.strip()
        if self.kind == "choice":
            if value not in self.choices:
                raise InvalidRequestError(f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}.")
            return value
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise InvalidRequestError(f"{self.name} must be a number; got {value!r}.") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise InvalidRequestError(f"{self.name} must be a finite number; got {value!r}.")
        if self.kind == "int":
            if float(value) != int(value):
                raise InvalidRequestError(f"{self.name} must be a whole number; got {value}.")
            value = int(value)
        else:
            value = float(value)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise InvalidRequestError(f"{self.name} must be from {self.minimum} to {self.maximum}; got {value}.")
        return value


@dataclass(frozen=True)
class MethodInputs:
    """What the core hands a method: clean RGB pictures at working size, resolved parameters, and the envelope's
    helpers (the seeded generator, per-step progress with the cancel check)."""

    content: Image.Image
    style: Image.Image | None  # None for methods that do not take a style image
    strength: float  # in (0, 1]: strength 0 never reaches a method (the core returns the content)
    steps: int | None  # None for methods without steps
    seed: int
    device: str
    dtype: str
    options: Mapping[str, Any]
    progress: ProgressCallback = field(default=lambda done, total, description: None)
    cancel: threading.Event | None = None
    derived: dict[str, Any] = field(default_factory=dict)  # the method records what it derived (→ metadata)
    # Pixel digests of the two pictures (as in the metadata), for methods that remember per-picture work.
    content_digest: str = ""
    style_digest: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def generator(self) -> Any:
        """A torch generator seeded with the request's seed. On the CPU, so that a seed gives the same start
        noise on every device."""
        import torch

        return torch.Generator("cpu").manual_seed(self.seed)

    def denoising_callback(self, total: int) -> Callable[[Any, int, Any, dict], dict]:
        """A diffusers ``callback_on_step_end``: reports each step, and sets the pipeline's interrupt flag when
        the person cancelled (the loop stops at the next step; the core then reports the cancellation)."""

        def on_step_end(pipe: Any, index: int, timestep: Any, tensors: dict) -> dict:
            self.progress(index + 1, total, f"Denoising step {index + 1}/{total}")
            if self.cancelled:
                pipe._interrupt = True
            return tensors

        return on_step_end


class StyleMethod(ABC):
    """Base class of a method. Subclasses set the class attributes and implement ``load`` and ``generate``.

    The core owns the envelope every method shares: strength 0 returns the content without loading anything,
    below ``fade_in_below`` the picture is cross-faded with the content (so the mapping is continuous and 0 is
    exactly the content), the seeded generator, progress, cancellation and out-of-memory advice.
    """

    name: ClassVar[str]  # registry key, used by the CLI, the API and metadata
    label: ClassVar[str]  # shown in the UI's method menu
    description: ClassVar[str]  # one or two sentences for the UI and ``--help``
    strength_mapping: ClassVar[str]  # how the studio's strength maps onto this method's knobs
    steps: ClassVar[StepsSpec | None] = None  # None: the method has no diffusion steps
    priority: ClassVar[int] = 0  # the default method is the highest-priority one that ``prefers`` the device
    options: ClassVar[tuple[OptionSpec, ...]] = ()  # method-specific options
    uses_style_image: ClassVar[bool] = True  # False: the style comes from elsewhere (InST: a learned style)
    uses_seed: ClassVar[bool] = True  # False: deterministic; the seed is neither drawn nor recorded
    fade_in_below: ClassVar[float] = 0.0  # below this strength the core cross-fades with the content

    def default_weights(self) -> str:
        """Where weights come from when the context names none (a Hub id, a path, or a label)."""
        return "bundled"

    def weights_fix(self) -> WeightsFix | None:
        """How a person points this method at their own weights (front ends spell it with their own flag)."""
        return None

    def dtype_for(self, device: str, precision: str = "auto") -> str:
        """The dtype name the method's models run in on ``device`` under the context's ``precision``."""
        return "float32"

    def supported_devices(self) -> tuple[str, ...]:
        """Device kinds the method can run on (``cuda`` covers ``cuda:N``)."""
        return ("cpu", "cuda", "mps")

    def run_device(self, requested: str) -> str:
        """The device the method will really use when asked for ``requested`` (``auto`` resolved)."""
        device = resolve_device(requested)
        kind = device.split(":")[0]
        if kind not in self.supported_devices():
            raise MethodUnavailableError(
                f"The {self.name} method cannot run on {device}; it supports {', '.join(self.supported_devices())}."
            )
        return device

    def prefers(self, device: str) -> bool:
        """Whether this method may be the default on ``device`` (e.g. a GPU method only where CUDA is)."""
        return True

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate method-specific options against ``options``; unset ones are left out."""
        specs = {spec.name: spec for spec in self.options}
        unknown = sorted(set(options) - set(specs))
        if unknown:
            known = ", ".join(specs) or "none"
            raise InvalidRequestError(f"The {self.name} method has no option {', '.join(unknown)} (options: {known}).")
        checked = {name: specs[name].check(value) for name, value in options.items()}
        return {name: value for name, value in checked.items() if value is not None}

    def check_ready(self, options: Mapping[str, Any], context: Any) -> None:
        """Cheap checks that need no model (e.g. a learned style exists), run before anything is loaded."""
        return None

    def memory_advice(self, inputs: MethodInputs) -> str:
        """What to change after running out of memory (the size this method's cost follows)."""
        from pipelines.core.request import MIN_MAX_SIDE

        smaller = max(MIN_MAX_SIDE, (max(inputs.content.size) * 3 // 4) // 64 * 64)
        return f"Try a max side of {smaller} or less{', or fewer steps' if inputs.steps else ''}"

    def gpu_seconds(self, steps: int) -> int:
        """GPU time to ask for one picture of ``steps`` steps on a shared GPU (a ZeroGPU Space): generous, since a
        call past it is cut off, but short requests are served first. Loading is not included (done once)."""
        return 20 + steps

    def prefetch(self, weights: str, context: Any) -> None:
        """Download the weights into the caches without loading them (``modal run modal_app.py::download`` fills
        the Volume this way, so no container downloads at start). Nothing to do for bundled weights."""
        return None

    def weights_reachable(self, weights: str) -> bool:
        """Whether ``weights`` can be had here now (a local copy, the Hugging Face cache, or the Hub with the token
        this machine has), asked quickly and without downloading; used to choose a default method that can run."""
        return True

    def check_weights(self, weights: str) -> None:
        """Refuse weights that cannot work without trying them (e.g. a local file that does not exist)."""
        return None

    @abstractmethod
    def load(self, weights: str, device: str, dtype: str, context: Any) -> Any:
        """Load the heavy model. Called once per (weights, device, dtype) per context, by its pipeline cache."""

    @abstractmethod
    def generate(self, model: Any, inputs: MethodInputs, context: Any) -> Image.Image:
        """Make the stylized picture (RGB, any size; the core brings it to the content's size and applies the
        envelope). Report progress with ``inputs.progress`` and check ``inputs.cancelled`` between steps."""


_REGISTRY: dict[str, StyleMethod] = {}


def register_method(method: StyleMethod) -> StyleMethod:
    """Add a method to the registry (a later registration under the same name replaces the earlier)."""
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> StyleMethod:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MethodUnavailableError(f"Unknown method {name!r}. Available: {', '.join(_REGISTRY) or 'none'}.") from None


def method_names() -> list[str]:
    return list(_REGISTRY)


def default_method_name(device: str, usable: Callable[[StyleMethod], bool] | None = None) -> str:
    """The most capable registered method that wants to be the default on ``device`` (highest ``priority`` first)
    and, when ``usable`` is given, can run (its weights reachable); the most capable one if none can."""
    preferred = sorted((m for m in _REGISTRY.values() if m.prefers(device)), key=lambda m: m.priority, reverse=True)
    if not preferred:
        raise MethodUnavailableError(f"No registered style method can serve {device}.")
    return next((m.name for m in preferred if usable is None or usable(m)), preferred[0].name)
