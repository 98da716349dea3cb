"""Where ArtFusion weights come from, and the one-time conversion of an original checkpoint.

A weights spec is one of:
- a local converted folder (has ``model_index.json``): used as is;
- a local original checkpoint file (``.ckpt``/``.pt``/``.pth``): converted once into the studio cache;
- a Hub repo id ``org/name``: a converted repo if it has ``model_index.json``, else its file
  ``artfusion_r12_step=317673.ckpt`` (converted once);
- a file in a Hub repo, ``org/name/path/to/file.ckpt``.
``HF_TOKEN`` is honoured by huggingface_hub for private or gated repos. When the Hub cannot be reached (see
``pipelines.core.hub``) only the local Hugging Face cache is used, so an offline machine fails at once.
Conversion writes into a temporary folder and renames it into place, so an interrupted conversion never
leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pipelines.core.errors import MethodUnavailableError, WeightsFix
from pipelines.core.hub import hub_reachable, offline_reason

logger = logging.getLogger(__name__)

DEFAULT_REPO = "lagerbaer/artfusion"
DEFAULT_CHECKPOINT = "artfusion_r12_step=317673.ckpt"
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

FIX = WeightsFix("artfusion", f"/path/to/{DEFAULT_CHECKPOINT}")
_HOW_TO_FIX = (
    "Set HF_TOKEN if the repo is private or gated, or download the checkpoint "
    f"({DEFAULT_CHECKPOINT}) yourself (a folder made by `python -m pipelines convert-artfusion CKPT OUT_DIR` works too)"
)


def check_local_weights(spec: str) -> None:
    """Fail at once for a weights value that names a local file or folder that is not there."""
    looks_local = spec.startswith((".", "/", "~")) or (spec.endswith(CHECKPOINT_SUFFIXES) and spec.count("/") < 2)
    if looks_local and not Path(spec).expanduser().exists():
        raise MethodUnavailableError(f"ArtFusion weights {spec} were not found. Check the path.", fix=FIX)


def weights_reachable(spec: str) -> bool:
    """Whether ``spec`` can be had without trying to load it: a local file or converted folder, or the Hub file
    (converted repo or original checkpoint) in the local cache or on the Hub for this token."""
    from pipelines.core.hub import hub_file_available

    path = Path(spec).expanduser()
    if path.is_dir():
        return (path / "model_index.json").is_file()
    if path.is_file():
        return True
    parts = spec.split("/")
    if len(parts) < 2 or not all(parts) or spec.startswith((".", "/", "~")):
        return False
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    if filename:
        return hub_file_available(repo_id, filename)
    return hub_file_available(repo_id, "model_index.json") or hub_file_available(repo_id, DEFAULT_CHECKPOINT)


def resolve_weights(spec: str, cache_dir: Path) -> Path:
    """A local diffusers folder for ``spec`` (downloading and converting into ``cache_dir`` on first use)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise MethodUnavailableError(
                f"ArtFusion weights folder {path} has no model_index.json: it is not a converted pipeline. "
                "Pass the original .ckpt instead, or convert it with `python -m pipelines convert-artfusion`.",
                fix=FIX,
            )
        return path
    if path.is_file():
        return converted_folder(path, cache_dir)
    check_local_weights(spec)
    return _from_hub(spec, cache_dir)


def _from_hub(spec: str, cache_dir: Path) -> Path:
    parts = spec.split("/")
    if len(parts) < 2 or not all(parts):
        raise MethodUnavailableError(
            f"ArtFusion weights {spec!r} are neither a local path nor a Hub repo id (org/name). {_HOW_TO_FIX}.",
            fix=FIX,
        )
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    online = hub_reachable()
    tried = f"Hub repo {repo_id}"
    try:
        if filename is None:
            try:
                hf_hub_download(repo_id, "model_index.json", local_files_only=not online)
                return Path(
                    snapshot_download(
                        repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt"], local_files_only=not online
                    )
                )
            except RemoteEntryNotFoundError:
                filename = DEFAULT_CHECKPOINT  # an original-checkpoint repo, like the default one
            except Exception:
                if online:
                    raise
                filename = DEFAULT_CHECKPOINT  # offline: maybe the original checkpoint is cached
        tried = f"Hub repo {repo_id}, file {filename}"
        checkpoint = Path(hf_hub_download(repo_id, filename, local_files_only=not online))
    except Exception as exc:  # offline, 404, 401/403 (token), network: all end in the same advice
        reason = offline_reason() if not online else _reason(exc)
        raise MethodUnavailableError(
            f"ArtFusion weights could not be fetched from {tried}: {reason}. {_HOW_TO_FIX}.", fix=FIX
        ) from None
    return converted_folder(checkpoint, cache_dir)


def _reason(exc: Exception) -> str:
    name = type(exc).__name__
    if name in ("GatedRepoError", "RepositoryNotFoundError"):
        return f"{name} (the repo does not exist, or it is private/gated and no valid HF_TOKEN is set)"
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return offline_reason()
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return f"{name}: {first_line[:200]}"


def converted_folder(checkpoint: Path, cache_dir: Path) -> Path:
    """The cached conversion of ``checkpoint`` (made now if missing). Keyed by path, size and mtime."""
    checkpoint = checkpoint.resolve()
    stat = checkpoint.stat()
    fingerprint = hashlib.sha256(f"{checkpoint}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = Path(cache_dir) / "artfusion" / f"{checkpoint.stem}-{fingerprint}"
    if (folder / "model_index.json").is_file():
        return folder
    convert_to_folder(checkpoint, folder)
    return folder


def convert_to_folder(checkpoint: str | os.PathLike[str], folder: str | os.PathLike[str], original_config=None) -> Path:
    """Convert an original checkpoint into a diffusers folder, atomically (temp folder, then rename)."""
    from pipelines.artfusion.pipeline_artfusion import ArtFusionPipeline

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s into %s (once)", checkpoint, folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        pipe = ArtFusionPipeline.from_single_file(checkpoint, original_config)
        pipe.save_pretrained(staging)
        if folder.exists():
            if (folder / "model_index.json").is_file():  # another process finished first: keep theirs
                return folder
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
