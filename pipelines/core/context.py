"""The studio context: every setting the library needs, as one explicit object built at the edges.

Front ends (the app, the CLI, the Modal container, a Python user) build a ``StudioContext`` from their flags and
the environment with ``StudioContext.from_environment(...)``; everything below takes it as an argument. This is
the only module that reads ``os.environ`` for a studio setting, and nothing writes the environment to pass a
message.

It holds what one process shares between requests: the pipeline cache and what the studio remembers about
methods whose weights could not be reached (``availability``). ``with_overrides`` makes a variant (another
device, other weights) that shares both.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.core.availability import Availability
from pipelines.core.cache import PipelineCache
from pipelines.core.compiling import check_compile_setting
from pipelines.core.device import check_precision
from pipelines.core.errors import InvalidRequestError

BACKENDS = ("auto", "local", "modal")


@dataclass(frozen=True)
class StudioContext:
    """Where and how requests run.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (local methods).
        backend: ``local`` (this process) or ``modal`` (the deployed Modal app); ``auto`` is resolved by
            ``from_environment``.
        weights: method name → weights location (path or Hub id); methods not named use their default.
        cache_dir: the studio's own files (converted weights).
        library_dir: the InST style library.
        compile: ``off``, ``on`` or a torch.compile mode, for the diffusion denoisers.
        precision: ``auto``, ``float32`` or ``bfloat16``: the diffusion models' number format
            (``pipelines.core.device.diffusion_dtype``).
        score_weights: where the learned scores' models are (``csd``, ``lpips``, ``dino`` → folder or Hub repo;
            the others use ``pipelines.scores.default_locations``).
        modal_configured: whether Modal credentials exist (decides ``auto`` and whether the UI offers Modal).
    """

    device: str = "auto"
    backend: str = "local"
    weights: Mapping[str, str] = field(default_factory=dict)
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "style-studio")
    library_dir: Path | None = None  # None: cache_dir / "styles"
    compile: str = "off"
    precision: str = "auto"
    score_weights: Mapping[str, str] = field(default_factory=dict)  # learned scores: model → location
    modal_configured: bool = False
    pipelines: PipelineCache = field(default_factory=PipelineCache, compare=False, repr=False)
    availability: Availability = field(default_factory=Availability, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in ("local", "modal"):
            raise InvalidRequestError(f"Unknown backend {self.backend!r}: use auto, local or modal.")
        object.__setattr__(self, "compile", check_compile_setting(self.compile))
        object.__setattr__(self, "precision", check_precision(self.precision))
        object.__setattr__(self, "weights", dict(self.weights))
        object.__setattr__(self, "score_weights", dict(self.score_weights))
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
        if self.library_dir is not None:
            object.__setattr__(self, "library_dir", Path(self.library_dir).expanduser())

    @property
    def styles_dir(self) -> Path:
        """The InST style library folder."""
        return self.library_dir if self.library_dir is not None else self.cache_dir / "styles"

    def weights_for(self, method: str) -> str | None:
        return self.weights.get(method)

    def with_overrides(self, **changes: Any) -> StudioContext:
        """A variant of this context (e.g. ``device="cpu"``) sharing its pipeline cache and availability."""
        for mapping in ("weights", "score_weights"):
            if changes.get(mapping) is not None:
                changes[mapping] = {**getattr(self, mapping), **changes[mapping]}
        changes = {name: value for name, value in changes.items() if value is not None}
        return replace(self, **changes)

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        cuda: bool | None = None,
        default_backend: str = "auto",
        **flags: Any,
    ) -> StudioContext:
        """The context for a front end: its ``flags`` (``None`` = not given) over the environment's settings.

        Environment: ``STYLE_STUDIO_CACHE`` (else ``$XDG_CACHE_HOME/style-studio``, else ``~/.cache/style-studio``),
        ``STYLE_STUDIO_LIBRARY``, ``STYLE_STUDIO_COMPILE``, ``STYLE_STUDIO_PRECISION``, ``STYLE_STUDIO_DEVICE``,
        ``STYLE_STUDIO_BACKEND``,
        ``STYLE_STUDIO_WEIGHTS`` (``method=location`` pairs separated by commas), ``STYLE_STUDIO_SCORE_WEIGHTS``
        (``model=location`` pairs for the learned scores), and Modal's credentials
        (``MODAL_TOKEN_ID`` + ``MODAL_TOKEN_SECRET``, or ``MODAL_CONFIG_PATH`` / ``~/.modal.toml``).
        ``cuda``: whether this machine has CUDA (probed when ``backend`` is ``auto`` and it is not given).
        ``default_backend``: the backend when neither a flag nor the environment names one.
        """
        env = os.environ if environ is None else environ
        cache = env.get("STYLE_STUDIO_CACHE")
        home = Path(env.get("HOME") or Path.home())
        cache_dir = Path(cache) if cache else Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "style-studio"
        weights = parse_weights(env.get("STYLE_STUDIO_WEIGHTS", ""), "STYLE_STUDIO_WEIGHTS")
        weights.update(flags.pop("weights", None) or {})
        score_weights = parse_score_weights(env.get("STYLE_STUDIO_SCORE_WEIGHTS", ""), "STYLE_STUDIO_SCORE_WEIGHTS")
        score_weights.update(flags.pop("score_weights", None) or {})
        modal_ready = _modal_configured(env)
        settings: dict[str, Any] = {
            "device": env.get("STYLE_STUDIO_DEVICE") or "auto",
            "backend": env.get("STYLE_STUDIO_BACKEND") or default_backend,
            "cache_dir": cache_dir,
            "library_dir": env.get("STYLE_STUDIO_LIBRARY") or None,
            "compile": env.get("STYLE_STUDIO_COMPILE") or "off",
            "precision": env.get("STYLE_STUDIO_PRECISION") or "auto",
        }
        settings.update({name: value for name, value in flags.items() if value is not None})
        backend = settings["backend"]
        if backend not in BACKENDS:
            raise InvalidRequestError(f"Unknown backend {backend!r}: use auto, local or modal.")
        if backend == "auto":
            if cuda is None and not modal_ready:
                cuda = False  # no need to import torch: without Modal, auto is local either way
            elif cuda is None:
                from pipelines.core.device import cuda_available

                cuda = cuda_available()
            settings["backend"] = "modal" if modal_ready and not cuda else "local"
        return cls(weights=weights, score_weights=score_weights, modal_configured=modal_ready, **settings)


SCORE_MODELS = ("csd", "lpips", "dino")  # the learned scores' models (pipelines.scores)


def parse_score_weights(pairs: str | list[str], source: str) -> dict[str, str]:
    """``model=location`` pairs for the learned scores (``csd``, ``lpips``, ``dino``; ``off`` turns one off)."""
    return _parse_pairs(pairs, source, SCORE_MODELS, "MODEL=PATH_OR_REPO with MODEL")


def parse_weights(pairs: str | list[str], source: str) -> dict[str, str]:
    """``method=location`` pairs (a list, or one string separated by commas) → a dict; unknown names fail."""
    from pipelines.core.method import method_names

    return _parse_pairs(pairs, source, method_names(), "METHOD=PATH_OR_REPO with METHOD")


def _parse_pairs(pairs: str | list[str], source: str, names: Any, form: str) -> dict[str, str]:
    items = [p for p in (pairs.split(",") if isinstance(pairs, str) else pairs) if p.strip()]
    weights = {}
    for pair in items:
        name, sep, location = pair.strip().partition("=")
        if not sep or name not in names or not location.strip():
            raise InvalidRequestError(f"{source} takes {form} one of {', '.join(names)}; got {pair!r}.")
        weights[name] = location.strip()
    return weights


def _modal_configured(env: Mapping[str, str]) -> bool:
    if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
        return True
    config = Path(env.get("MODAL_CONFIG_PATH") or Path(env.get("HOME") or Path.home()) / ".modal.toml")
    return config.is_file()


_default: StudioContext | None = None
_default_lock = threading.Lock()


def default_context() -> StudioContext:
    """The process's context for callers that pass none (the Python API): built once from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = StudioContext.from_environment()
        return _default


def set_default_context(context: StudioContext) -> StudioContext:
    """Make ``context`` the process default (a front end does this once it has built its context)."""
    global _default
    with _default_lock:
        _default = context
    return context
