"""The learned scores (CSD, LPIPS, DINOv2): where their weights come from, loading them once, scoring with them.

``Scorers.load(locations)`` loads each learned model the way the studio loads any model: ``from_pretrained`` on
a local folder or a Hub repo id (``owner/name``, optionally ``owner/name/sub/folder``), with
``local_files_only`` when the Hub cannot be reached (``pipelines.core.hub``). A model that cannot be had is not
an error: its score is ``ScoreValue(None, reason)``, the reason saying what is missing and how to get it.

Default locations (``default_locations``):
- ``content_dino``: ``facebook/dinov2-small`` on the Hub (about 88 MB, downloaded once into the Hugging Face cache).
- ``style_csd``: ``<studio cache>/scores/csd``, a folder ``convert_csd`` writes from the authors' checkpoint
  (layout in ``pipelines.scores.csd``; no Hub repo in this layout exists).
- ``content_lpips``: ``<studio cache>/scores/lpips``, a folder ``convert_lpips`` writes from torchvision's VGG16
  and LPIPS's lin layers (layout in ``pipelines.scores.lpips``; likewise not on the Hub).

torch is imported when models load, not when this module is imported.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.core.context import StudioContext, default_context
from pipelines.core.errors import InvalidRequestError
from pipelines.core.memo import Memo
from pipelines.scores.classical import cosine_similarity
from pipelines.scores.pictures import ScoredPictures
from pipelines.scores.registry import LEARNED_SCORES, SCORES, ScoreValue, check_names

logger = logging.getLogger(__name__)

# What users download: DINOv2 ViT-S/14 from Meta's Hub organisation (verified name; about 88 MB).
DEFAULT_DINO = "facebook/dinov2-small"
# CSD and LPIPS have no Hub repo in our layout: their defaults are folders in the studio's cache that
# ``convert_csd`` / ``convert_lpips`` write (see their modules for the source files).
CONVERTED_FOLDER = "scores"
OFF = ("off", "none")  # a location that turns the score off

MODEL_NAMES = {"style_csd": "csd", "content_lpips": "lpips", "content_dino": "dino"}
_LABELS = {"style_csd": "CSD", "content_lpips": "LPIPS", "content_dino": "DINOv2"}
_HOW_TO_GET = {
    "content_dino": (
        "Download them once where the Hub is reachable (Scorers.load(offline=False)), or pass a folder written by "
        "save_pretrained: locations={'content_dino': FOLDER}"
    ),
    "style_csd": (
        "Convert the authors' checkpoint once (pytorch_model.bin of tomg-group-umd/CSD-ViT-L): "
        "pipelines.scores.convert_csd(FILE, FOLDER), then pass locations={'style_csd': FOLDER}"
    ),
    "content_lpips": (
        "Convert the official weights once: pipelines.scores.convert_lpips('vgg16-397923af.pth', "
        "'lpips/weights/v0.1/vgg.pth', FOLDER), then pass locations={'content_lpips': FOLDER}"
    ),
}

# Picture preparation, as each model was trained.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DINO_RESIZE, DINO_CROP = 256, 224  # facebook/dinov2-*'s image processor: shorter side 256, centre crop 224
LPIPS_SIDE = 256  # LPIPS compares both pictures at this long side (the cost of VGG16 grows with the area)


def default_locations(cache_dir: str | Path | None = None) -> dict[str, str]:
    """Where each learned score's weights are looked for unless told otherwise (``cache_dir``: the studio's cache
    folder, default the default context's)."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_context().cache_dir
    return {
        "style_csd": str(cache / CONVERTED_FOLDER / "csd"),
        "content_lpips": str(cache / CONVERTED_FOLDER / "lpips"),
        "content_dino": DEFAULT_DINO,
    }


def check_locations(locations: Mapping[str, str] | None) -> dict[str, str]:
    """``locations`` keyed by learned score name (``style_csd``, ``content_lpips``, ``content_dino``) or model
    name (``csd``, ``lpips``, ``dino``) → keyed by score name. Unknown keys and non-text values fail."""
    by_model = {model: score for score, model in MODEL_NAMES.items()}
    checked = {}
    for key, location in (locations or {}).items():
        name = key if key in MODEL_NAMES else by_model.get(key)
        if name is None:
            raise InvalidRequestError(
                f"Unknown learned score {key!r} in the weight locations; use one of "
                f"{', '.join(LEARNED_SCORES)} (or {', '.join(by_model)})."
            )
        if not isinstance(location, (str, Path)) or not str(location).strip():
            raise InvalidRequestError(
                f"The location for {name} must be a folder or a Hub repo id (owner/name), or 'off'; got {location!r}."
            )
        checked[name] = str(location).strip()
    return checked


class LocationError(ValueError):
    """A location that is neither an existing folder nor a Hub repo id."""


@dataclass(frozen=True)
class Location:
    """Where one model's weights are: a folder, or a Hub repo id plus a folder inside it."""

    source: str  # a local folder or ``owner/name``
    subfolder: str
    local: bool

    @classmethod
    def parse(cls, text: str) -> Location:
        path = Path(text).expanduser()
        if path.is_dir():
            return cls(str(path), "", True)
        if path.exists():
            raise LocationError(f"{text} is a file; give the folder that holds the model's config.json")
        if text.startswith(("/", "~", ".", "\\")) or (len(text) > 1 and text[1] == ":"):
            raise LocationError(f"there is no folder {path}")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        parts = text.strip("/").split("/")
        repo = "/".join(parts[:2])
        try:
            if len(parts) < 2:
                raise HFValidationError("no owner")
            validate_repo_id(repo)
        except HFValidationError:
            raise LocationError(
                f"{text!r} is neither an existing folder nor a Hub repo id (owner/name[/sub/folder])"
            ) from None
        return cls(repo, "/".join(parts[2:]), False)

    def sub(self, folder: str) -> str:
        return f"{self.subfolder}/{folder}" if self.subfolder else folder


class Scorers:
    """The learned models of a session, loaded once (a compare grid scores every cell with one ``Scorers``).

    ``locations``: score name → the location used; ``reasons``: score name → why its model is not here.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.locations: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self._scores: dict[str, Callable[[ScoredPictures], float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        locations: Mapping[str, str] | None = None,
        *,
        offline: bool | None = None,
        device: str = "cpu",
        names: Iterable[str] | None = None,
        cache_dir: str | Path | None = None,
    ) -> Scorers:
        """Load the learned models for ``names`` (default: every learned score; classical names are ignored).

        ``locations`` overrides ``default_locations(cache_dir)`` per score (keys: score or model names; values:
        a folder, a Hub repo id, or ``"off"``). ``offline``: ``True`` uses local folders and the Hugging Face
        cache only, ``False`` always asks the Hub, ``None`` asks it when it is reachable. A model that cannot be
        loaded leaves a reason (``reasons``), never an exception; unknown keys and devices do raise.
        """
        from pipelines.core.device import resolve_device

        scorers = cls(resolve_device(device))
        scorers.add(locations, offline=offline, names=names, cache_dir=cache_dir)
        return scorers

    def add(
        self,
        locations: Mapping[str, str] | None = None,
        *,
        offline: bool | None = None,
        names: Iterable[str] | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        """Load the models of ``names`` that this ``Scorers`` has not tried yet (see ``load``)."""
        wanted = [name for name in check_names(names) if SCORES[name].learned]
        chosen = {**default_locations(cache_dir), **check_locations(locations)}
        online: bool | None = None if offline is None else not offline
        with self._lock:
            for name in wanted:
                if name in self._scores or name in self.reasons:
                    continue
                location = self.locations[name] = chosen[name]
                if location.lower() in OFF:
                    self.reasons[name] = f"{name} is turned off (its location is {location!r})"
                    continue
                try:
                    parsed = Location.parse(location)
                except LocationError as exc:
                    self.reasons[name] = f"No {_LABELS[name]} weights: {exc}. {_HOW_TO_GET[name]}."
                    continue
                if not parsed.local and online is None:
                    from pipelines.core.hub import hub_reachable

                    online = hub_reachable()
                try:
                    self._scores[name] = _LOADERS[name](parsed, not (parsed.local or online), self.device)
                except Exception as exc:  # missing files, offline, a foreign folder: the score says why
                    self.reasons[name] = _load_failure(name, location, parsed, online, exc)
                    logger.info("%s unavailable: %s", name, self.reasons[name])

    @property
    def loaded(self) -> tuple[str, ...]:
        """The learned scores this ``Scorers`` can compute."""
        return tuple(name for name in LEARNED_SCORES if name in self._scores)

    def reason(self, name: str) -> str | None:
        """Why ``name`` cannot be computed, or ``None`` when it can."""
        if name in self._scores:
            return None
        return self.reasons.get(name, f"{name} was not loaded: include it in Scorers.load(names=…)")

    def score(self, name: str, pictures: ScoredPictures) -> ScoreValue:
        """One learned score of one picture (``ScoreValue(None, reason)`` when its model is not here)."""
        compute = self._scores.get(name)
        if compute is None:
            return ScoreValue.missing(self.reason(name) or "")
        try:
            return ScoreValue(compute(pictures))
        except Exception as exc:  # e.g. out of memory on a GPU: this cell lacks the score, the grid goes on
            logger.warning("%s failed: %s", name, exc, exc_info=True)
            return ScoreValue.missing(f"{name} failed on this picture ({type(exc).__name__}: {exc})")

    def summary(self) -> str:
        """One line per learned score: where its weights came from, or why it is missing."""
        lines = []
        for name in LEARNED_SCORES:
            if name in self._scores:
                lines.append(f"{name}: {self.locations[name]} on {self.device}")
            elif name in self.reasons:
                lines.append(f"{name}: unavailable ({self.reasons[name]})")
        return "\n".join(lines)


def _load_failure(name: str, location: str, parsed: Location, online: bool | None, exc: BaseException) -> str:
    label, how = _LABELS[name], _HOW_TO_GET[name]
    if not parsed.local and not online:
        from pipelines.core.hub import offline_reason

        return f"{label} weights {location} are not here (no such folder; as a Hub repo: {offline_reason()}). {how}."
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    where = f"in {parsed.source}" if parsed.local else f"from {location}"
    return f"{label} weights {where} could not be loaded ({first}). {how}."


# Loaders: (location, local files only, device) → a function of the pictures giving the score's value.


def _load_dino(location: Location, local_only: bool, device: str) -> Callable[[ScoredPictures], float]:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(location.source, subfolder=location.subfolder, local_files_only=local_only)
    model = model.to(device).eval()

    @torch.inference_mode()
    def embed(image: Image.Image) -> np.ndarray:
        pixels = centre_crop_tensor(image, DINO_RESIZE, DINO_CROP, IMAGENET_MEAN, IMAGENET_STD).to(device)
        output = model(pixel_values=pixels)
        cls_token = getattr(output, "pooler_output", None)  # Dinov2Model: the layer-normed class token
        if cls_token is None:
            cls_token = output.last_hidden_state[:, 0]
        return cls_token[0].float().cpu().numpy()

    contents: Memo[np.ndarray] = Memo(32)

    def content_dino(pictures: ScoredPictures) -> float:
        content = contents.get(pictures.content_digest, lambda: embed(pictures.content))
        return cosine_similarity(embed(pictures.result), content)

    return content_dino


def _load_csd(location: Location, local_only: bool, device: str) -> Callable[[ScoredPictures], float]:
    import torch
    from transformers import CLIPVisionModel

    from pipelines.scores.csd import CLIP_MEAN, CLIP_STD, HEAD_FOLDER, VISION_FOLDER, CSDStyleHead

    hub = {"local_files_only": local_only}
    vision = CLIPVisionModel.from_pretrained(location.source, subfolder=location.sub(VISION_FOLDER), **hub)
    head = CSDStyleHead.from_pretrained(location.source, subfolder=location.sub(HEAD_FOLDER), **hub)
    vision, head = vision.to(device).eval(), head.to(device).eval()
    side = int(vision.config.image_size)

    @torch.inference_mode()
    def embed(image: Image.Image) -> np.ndarray:
        pixels = centre_crop_tensor(image, side, side, CLIP_MEAN, CLIP_STD).to(device)
        return head(vision(pixel_values=pixels).pooler_output)[0].float().cpu().numpy()

    styles: Memo[np.ndarray] = Memo(32)

    def style_csd(pictures: ScoredPictures) -> float:
        assert pictures.style is not None and pictures.style_digest is not None
        style = pictures.style
        return cosine_similarity(embed(pictures.result), styles.get(pictures.style_digest, lambda: embed(style)))

    return style_csd


def _load_lpips(location: Location, local_only: bool, device: str) -> Callable[[ScoredPictures], float]:
    import torch

    from pipelines.scores.lpips import LPIPSNetwork

    network = LPIPSNetwork.from_pretrained(
        location.source, subfolder=location.subfolder or None, local_files_only=local_only
    )
    network = network.to(device).eval()

    @torch.inference_mode()
    def features(image: Image.Image) -> list[Any]:
        return network.features(signed_tensor(image, LPIPS_SIDE).to(device))

    contents: Memo[list[Any]] = Memo(8)

    @torch.inference_mode()
    def content_lpips(pictures: ScoredPictures) -> float:
        content = contents.get(pictures.size_key, lambda: features(pictures.content_at_result_size))
        return float(network.distance(features(pictures.result), content)[0])

    return content_lpips


_LOADERS: dict[str, Callable[[Location, bool, str], Callable[[ScoredPictures], float]]] = {
    "style_csd": _load_csd,
    "content_lpips": _load_lpips,
    "content_dino": _load_dino,
}


def centre_crop_tensor(
    image: Image.Image, resize: int, crop: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> Any:
    """Shorter side to ``resize`` (bicubic), centre ``crop``×``crop``, normalised: a 1×3×crop×crop tensor."""
    import torch

    scale = resize / min(image.size)
    size = (max(crop, round(image.width * scale)), max(crop, round(image.height * scale)))
    resized = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    left, top = (resized.width - crop) // 2, (resized.height - crop) // 2
    square = np.asarray(resized.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    pixels = (square - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]


def signed_tensor(image: Image.Image, long_side: int) -> Any:
    """The picture fitted to ``long_side`` (bilinear), as a 1×3×H×W tensor in [-1, 1] (LPIPS's input)."""
    import torch

    scale = long_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    pixels = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    return torch.from_numpy((pixels / 127.5 - 1.0).transpose(2, 0, 1).copy())[None]


_defaults: dict[tuple[str, str], Scorers] = {}
_defaults_lock = threading.Lock()


def default_scorers(context: StudioContext | None = None, names: Iterable[str] | None = None) -> Scorers:
    """The process's ``Scorers`` for ``context`` (its device, cache folder and ``score_weights`` over the default
    locations);
    each model is tried once (``forget_default_scorers`` tries again)."""
    from pipelines.core.device import resolve_device

    context = context or default_context()
    try:
        device = resolve_device(context.device)
    except Exception:  # the context names a device that is not here: score on the CPU
        device = "cpu"
    key = (device, str(context.cache_dir), tuple(sorted(context.score_weights.items())))
    with _defaults_lock:
        scorers = _defaults.get(key)
        if scorers is None:
            scorers = _defaults[key] = Scorers(device)
    scorers.add(context.score_weights, names=names, cache_dir=context.cache_dir)
    return scorers


def forget_default_scorers() -> None:
    """Drop the process's default models and remembered failures (after weights were converted or downloaded)."""
    with _defaults_lock:
        _defaults.clear()
