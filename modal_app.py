"""Style Studio on Modal GPUs: one app file, read top to bottom.

    modal deploy modal_app.py                       # once: makes the Studio class callable by name
    modal run modal_app.py --content-file-path A.jpg --style-file-path B.jpg [--method artfusion --strength 0.7]

The container loads the default method once in ``@modal.enter()`` through the same pipeline cache the local
app uses; ``stylize`` takes PNG bytes and parameters and returns PNG bytes and metadata. Weights download once
into a Volume (the Hugging Face cache), which also holds the InST style library. ``HF_TOKEN`` comes from the
Modal secret ``huggingface-secret`` (``modal secret create huggingface-secret HF_TOKEN=hf_...``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import modal

APP_NAME = "style-studio"
GPU = os.environ.get("STYLE_STUDIO_GPU", "L40S")  # any Modal GPU type, e.g. "H100", "A10G"
CACHE = "/cache"  # the Volume: Hugging Face cache, converted weights, the style library

image = (
    modal.Image.debian_slim(python_version="3.12")
    .pip_install_from_requirements(str(Path(__file__).parent / "requirements.txt"))  # CUDA torch on Linux
    .env(
        {
            "HF_HOME": f"{CACHE}/huggingface",
            "STYLE_STUDIO_CACHE": f"{CACHE}/style-studio",
            "STYLE_STUDIO_LIBRARY": f"{CACHE}/styles",
            "GRADIO_ANALYTICS_ENABLED": "False",
            # `STYLE_STUDIO_COMPILE=on modal deploy modal_app.py`: CUDA-graph the denoiser (slower first picture)
            "STYLE_STUDIO_COMPILE": os.environ.get("STYLE_STUDIO_COMPILE", "off"),
        }
    )
    .add_local_python_source("pipelines")  # last: mounted at start, so code changes need no image rebuild
)
volume = modal.Volume.from_name("style-studio-cache", create_if_missing=True)
app = modal.App(APP_NAME)

with image.imports():
    import pipelines


@app.cls(
    image=image,
    gpu=GPU,
    volumes={CACHE: volume},
    secrets=[modal.Secret.from_name("huggingface-secret", required_keys=["HF_TOKEN"])],
    scaledown_window=300,  # stay warm 5 minutes after the last request
    timeout=600,
)
class Studio:
    @modal.enter()
    def load(self) -> None:
        """Load the default method (ArtFusion on a GPU) once per container, into the shared pipeline cache."""
        try:
            key = pipelines.preload(os.environ.get("STYLE_STUDIO_DEFAULT_METHOD") or None)
            print(f"loaded {key.method} on {key.device}")
            if not modal.is_local():
                volume.commit()  # weights converted on first start persist for the next container
        except pipelines.StudioError as exc:  # the first request reports it properly
            print(f"could not preload the default method: {exc}")
        self.learning: dict[str, dict[str, Any]] = {}

    @modal.method()
    def stylize(self, content_png: bytes, style_png: bytes | None, parameters: dict[str, Any]) -> tuple[bytes, dict]:
        """PNG bytes + parameters (as ``StyleRequest`` fields) in; PNG bytes (parameters inside) + metadata out."""
        result = pipelines.run(pipelines.StyleRequest(content=content_png, style=style_png, **parameters))
        return _as_remote(result)

    @modal.method()
    def stylize_with_progress(
        self, content_png: bytes, style_png: bytes | None, parameters: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Like ``stylize``, as a stream: ``{"progress": (done, total, text)}`` events, then ``{"result": …}``.

        A problem with the request ends the stream with ``{"error": message}`` (the caller shows it as is).
        """
        events: list[dict[str, Any]] = []
        try:
            request = pipelines.StyleRequest(content=content_png, style=style_png, **parameters)
            result = pipelines.run(request, progress=lambda *p: events.append({"progress": p}))
        except pipelines.StudioError as exc:
            yield from events
            yield {"error": str(exc)}
            return
        yield from events
        yield {"result": _as_remote(result)}

    @modal.method()
    def learn_style(self, style_png: bytes, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """Learn an InST style into the library on the Volume. Spawn it; read ``progress(name)`` meanwhile."""
        from dataclasses import asdict

        from pipelines.inst.service import learn_style_into_library

        def on_step(step: int, total: int, loss: float) -> None:
            self.learning[name] = {"step": step, "total": total, "loss": loss}
            _progress_store()[name] = self.learning[name]

        entry = learn_style_into_library(style_png, name, on_step=on_step, **options)
        if not modal.is_local():
            volume.commit()
        return asdict(entry)

    @modal.method()
    def progress(self, name: str) -> dict[str, Any] | None:
        """The latest step/loss of a style being learned (from any container)."""
        return _progress_store().get(name) or self.learning.get(name)


def _as_remote(result: Any) -> tuple[bytes, dict]:
    result.metadata["backend"] = "modal"
    return result.png_bytes(), result.metadata


def _progress_store() -> Any:
    """Progress shared across containers (a Modal Dict); a plain dict when running locally."""
    if modal.is_local():
        return _LOCAL_PROGRESS
    return modal.Dict.from_name("style-studio-progress", create_if_missing=True)


_LOCAL_PROGRESS: dict[str, Any] = {}


def stylize_files(
    call: Callable[[bytes, bytes | None, dict[str, Any]], tuple[bytes, dict]],
    content_file_path: str,
    style_file_path: str = "",
    output_path: str = "output.png",
    **parameters: Any,
) -> Path:
    """Read the two files, call ``stylize`` (remote, or ``.local`` in tests), write the PNG."""
    content = Path(content_file_path).read_bytes()
    style = Path(style_file_path).read_bytes() if style_file_path else None
    png, metadata = call(content, style, parameters)
    path = Path(output_path)
    path.write_bytes(png)
    seconds = metadata["timings"]["total_s"]
    print(f"{path}  {metadata['method']}  seed {metadata['seed']}  {seconds:.2f} s on {metadata['device']}")
    return path


@app.local_entrypoint()
def main(
    content_file_path: str,
    style_file_path: str = "",
    method: str = "",
    strength: float = 0.7,
    steps: int = 0,
    seed: int = -1,
    max_side: int = 1024,
    preserve_color: bool = False,
    style_name: str = "",
    output_path: str = "output.png",
) -> None:
    """`modal run modal_app.py --content-file-path A.jpg --style-file-path B.jpg` writes output.png."""
    parameters = {
        "method": method or None,
        "strength": strength,
        "steps": steps or None,
        "seed": None if seed < 0 else seed,
        "max_side": max_side,
        "preserve_color": preserve_color,
        "extras": {"style_name": style_name} if style_name else {},
    }
    stylize_files(Studio().stylize.remote, content_file_path, style_file_path, output_path, **parameters)
