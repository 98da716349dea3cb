"""Style Studio on Modal GPUs: one app file, read top to bottom.

    modal deploy modal_app.py                       # once: makes the Studio class callable by name
    modal run modal_app.py --content-file-path A.jpg --style-file-path B.jpg [--method artfusion --strength 0.7]

The container builds its ``StudioContext`` from the image's environment in ``@modal.enter()`` and loads the
default method once; every method below calls the same public API as the local app (``pipelines.run_here``,
``pipelines.learn_style``). Weights download once into a Volume (the Hugging Face cache), which also holds the
InST style library. ``HF_TOKEN`` comes from the Modal secret ``huggingface-secret``
(``modal secret create huggingface-secret HF_TOKEN=hf_...``). Deploy-time settings: ``STYLE_STUDIO_GPU`` (GPU
type), ``STYLE_STUDIO_COMPILE`` and ``STYLE_STUDIO_WEIGHTS`` (e.g. ``artfusion=/cache/artfusion.ckpt``).
"""

from __future__ import annotations

import inspect
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import modal

import pipelines

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
            "STYLE_STUDIO_WEIGHTS": os.environ.get("STYLE_STUDIO_WEIGHTS", ""),
        }
    )
    .add_local_python_source("pipelines")  # last: mounted at start, so code changes need no image rebuild
)
volume = modal.Volume.from_name("style-studio-cache", create_if_missing=True)
app = modal.App(APP_NAME)
PROGRESS = "style-studio-progress"  # a Modal Dict: style-learning progress and cancel flags, across containers


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
        """Build the context from the container's environment and load the default method (ArtFusion on a GPU)."""
        self.context = pipelines.set_default_context(pipelines.StudioContext.from_environment(backend="local"))
        try:
            key = pipelines.preload(os.environ.get("STYLE_STUDIO_DEFAULT_METHOD") or None, context=self.context)
            print(f"loaded {key.method} on {key.device}")
            if not modal.is_local():
                volume.commit()  # weights converted on first start persist for the next container
        except pipelines.StudioError as exc:  # the first request reports it properly
            print(f"could not preload the default method: {exc.for_front_end('modal')}")

    @modal.method()
    def stylize(self, content_png: bytes, style_png: bytes | None, parameters: dict[str, Any]) -> tuple[bytes, dict]:
        """PNG bytes + request parameters in; PNG bytes (parameters inside) + metadata out."""
        request = pipelines.StyleRequest(content=content_png, style=style_png, **parameters)
        return _as_remote(pipelines.run_here(request, context=self.context))

    @modal.method()
    def stylize_with_progress(
        self, content_png: bytes, style_png: bytes | None, parameters: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Like ``stylize``, as a live stream: ``{"progress": (done, total, text)}`` events while the method runs,
        then ``{"result": …}``, or ``{"error": message}`` for a problem with the request. Closing the stream
        (the caller cancelled) stops the generation at its next step."""
        events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        cancel = threading.Event()

        def work() -> None:
            try:
                request = pipelines.StyleRequest(content=content_png, style=style_png, **parameters)
                result = pipelines.run_here(
                    request, context=self.context, progress=lambda *p: events.put({"progress": p}), cancel=cancel
                )
                events.put({"result": _as_remote(result)})
            except pipelines.StudioError as exc:
                events.put({"error": exc.for_front_end("modal")})
            except Exception as exc:  # a bug: reported as one, the container keeps serving
                events.put({"error": pipelines.describe_error(exc, "modal")})
            finally:
                events.put(None)

        threading.Thread(target=work, name="stylize", daemon=True).start()
        try:
            while (event := events.get()) is not None:
                yield event
        finally:
            cancel.set()  # a no-op when the work is done; stops it when the caller went away

    @modal.method()
    def learn_style(self, style_png: bytes, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """Learn an InST style into the Volume's library. Spawn it; ``progress(name)`` reads its step and loss,
        ``cancel_learning(name)`` stops it (a checkpoint is kept; the same name resumes)."""
        store = _progress_store()
        store[name] = {"step": 0, "total": 0, "loss": None, "cancel": False}
        try:
            run = pipelines.learn_style(style_png, name, context=self.context, **options)
            for event in run:
                if event.kind == "step":
                    state = store.get(name) or {}
                    store[name] = {"step": event.step, "total": event.total, "loss": event.loss, "cancel": False}
                    if state.get("cancel"):
                        run.cancel()
                elif event.kind == "cancelled":
                    return {"cancelled": event.message}
        except pipelines.StudioError as exc:
            return {"error": exc.for_front_end("modal")}
        finally:
            if not modal.is_local():
                volume.commit()  # the style (or its checkpoint) persists for every container
        return {"entry": asdict(run.entry)}

    @modal.method()
    def cancel_learning(self, name: str) -> None:
        """Ask a running ``learn_style`` (in any container) to stop at its next step."""
        store = _progress_store()
        store[name] = {**(store.get(name) or {}), "cancel": True}

    @modal.method()
    def progress(self, name: str) -> dict[str, Any] | None:
        """The latest step/total/loss of a style being learned (from any container)."""
        return _progress_store().get(name)

    @modal.method()
    def styles(self) -> list[dict[str, Any]]:
        """The learned styles in the Volume's library."""
        if not modal.is_local():
            volume.reload()  # styles learned by other containers
        return [asdict(entry) for entry in pipelines.style_library(self.context).list()]


@app.function(
    image=image,
    volumes={CACHE: volume},
    secrets=[modal.Secret.from_name("huggingface-secret", required_keys=["HF_TOKEN"])],
    timeout=3600,
)
def download(methods: str = "") -> list[str]:
    """Fill the Volume with every method's weights once (``modal run modal_app.py::download``), so that no
    container downloads at start. ``methods``: names separated by commas (default: all)."""
    context = pipelines.StudioContext.from_environment(backend="local")
    names = [name.strip() for name in methods.split(",") if name.strip()] or pipelines.method_names()
    fetched = []
    for name in names:
        try:
            fetched.append(f"{name}: {pipelines.prefetch(name, context=context)}")
        except pipelines.StudioError as exc:  # one missing model does not stop the others
            fetched.append(f"{name}: failed: {exc.for_front_end('modal')}")
        print(fetched[-1])
    if not modal.is_local():
        volume.commit()
    return fetched


def _as_remote(result: pipelines.StyleResult) -> tuple[bytes, dict]:
    result.metadata.backend = "modal"
    return result.png_bytes(), result.metadata.to_dict()


def _progress_store() -> Any:
    """Progress shared across containers (a Modal Dict); a plain dict when running locally."""
    if modal.is_local():
        return _LOCAL_PROGRESS
    return modal.Dict.from_name(PROGRESS, create_if_missing=True)


_LOCAL_PROGRESS: dict[str, Any] = {}


# ---- `modal run modal_app.py --content-file-path A.jpg ...`: its flags come from the request schema ----------


def _entrypoint_parameters() -> list[inspect.Parameter]:
    """One ``modal run`` flag per declared request parameter (images as ``--NAME-file-path``)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    declared = []
    for param in pipelines.REQUEST_PARAMETERS:
        if param.kind == "image":
            default = "" if param.optional else inspect.Parameter.empty
            declared.append(inspect.Parameter(f"{param.name}_file_path", keyword, default=default, annotation=str))
        elif param.kind in ("options", "method"):  # options: NAME=VALUE pairs, e.g. --options eta=0,style_size=256
            declared.append(inspect.Parameter(param.name, keyword, default="", annotation=str))
        else:
            declared.append(inspect.Parameter(param.name, keyword, default=param.default, annotation=param.python_type))
    declared.append(inspect.Parameter("style_name", keyword, default="", annotation=str))
    declared.append(inspect.Parameter("output_path", keyword, default="output.png", annotation=str))
    return declared


def stylize_files(call: Callable[[bytes, bytes | None, dict[str, Any]], tuple[bytes, dict]], **flags: Any) -> Path:
    """Read the files named by the flags, call ``stylize`` (``.remote``, or ``.local`` in tests), write the PNG."""
    images, parameters = {}, {}
    for param in pipelines.REQUEST_PARAMETERS:
        if param.kind == "image":
            path = flags.get(f"{param.name}_file_path") or ""
            images[param.name] = Path(path).read_bytes() if path else None
        elif param.kind == "options":
            pairs = [p for p in (flags.get(param.name) or "").split(",") if p.strip()]
            parameters[param.name] = dict(pair.strip().split("=", 1) for pair in pairs)
        elif param.name in flags:
            parameters[param.name] = flags[param.name] if flags[param.name] != "" else None
    if flags.get("style_name"):
        parameters["options"] = {**parameters.get("options", {}), "style_name": flags["style_name"]}
    png, metadata = call(images["content"], images["style"], parameters)
    path = Path(flags.get("output_path") or "output.png")
    path.write_bytes(png)
    print(f"{path}  {pipelines.ResultMetadata.from_dict(metadata).summary()}")
    return path


def main(**flags: Any) -> None:
    """`modal run modal_app.py --content-file-path A.jpg --style-file-path B.jpg` writes output.png."""
    stylize_files(Studio().stylize.remote, **flags)


main.__signature__ = inspect.Signature(_entrypoint_parameters())  # type: ignore[attr-defined]
main.__annotations__ = {p.name: p.annotation for p in main.__signature__.parameters.values()}  # type: ignore[attr-defined]
main = app.local_entrypoint(name="main")(main)
