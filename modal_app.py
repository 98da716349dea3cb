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
import io
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
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
    def stylize_batch_item(
        self, key: str, content_png: bytes, style_png: bytes | None, parameters: dict[str, Any]
    ) -> dict[str, Any]:
        """One picture of a batch (``ModalBackend.stylize_many`` maps over this): ``{"key", "png", "metadata"}``,
        or ``{"key", "error"}`` for a problem with that picture. Every answer carries its ``key``, because a
        batch takes its results in the order they finish."""
        try:
            request = pipelines.StyleRequest(content=content_png, style=style_png, **parameters)
            png, metadata = _as_remote(pipelines.run_here(request, context=self.context))
        except pipelines.StudioError as exc:
            return {"key": key, "error": exc.for_front_end("modal")}
        except Exception as exc:  # a bug: that picture fails, the batch and the container go on
            return {"key": key, "error": pipelines.describe_error(exc, "modal")}
        return {"key": key, "png": png, "metadata": metadata}

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


# ---- the web endpoint and the Gradio app: CPU containers in front of the GPU class ---------------------------
#
# Both run in a light image (PyTorch's CPU build, no GPU attached): the GPU class above does the diffusion work.
# The endpoint's guard is chosen at deploy time with STYLE_STUDIO_WEB_AUTH: `token` (default; a bearer token from
# the secret below: `modal secret create style-studio-web STYLE_STUDIO_WEB_TOKEN=...`), `proxy` (Modal's proxy
# auth: clients send Modal-Key / Modal-Secret headers of a workspace proxy-auth token) or `none` (open to anyone).

# Modal's proxy auth by default: guarded without a secret to create, so a plain `modal deploy` still works
WEB_AUTH = os.environ.get("STYLE_STUDIO_WEB_AUTH", "proxy")
WEB_AUTH_CHOICES = ("token", "proxy", "none")
if WEB_AUTH not in WEB_AUTH_CHOICES:
    raise ValueError(f"STYLE_STUDIO_WEB_AUTH must be one of {', '.join(WEB_AUTH_CHOICES)}; got {WEB_AUTH!r}.")
WEB_SECRET = "style-studio-web"
WEB_SECRETS = (
    [modal.Secret.from_name(WEB_SECRET, required_keys=["STYLE_STUDIO_WEB_TOKEN"])] if WEB_AUTH == "token" else []
)

web_image = (
    modal.Image.debian_slim(python_version="3.12")
    # the CPU build first (a fifth of the CUDA build's size); requirements.txt then keeps it
    .pip_install("torch>=2.6,<2.16", index_url="https://download.pytorch.org/whl/cpu")
    .pip_install_from_requirements(str(Path(__file__).parent / "requirements.txt"))
    .env({"GRADIO_ANALYTICS_ENABLED": "False", "STYLE_STUDIO_WEB_AUTH": WEB_AUTH})  # the container sees the same
    .add_local_python_source("pipelines", "demo")
    .add_local_dir(Path(__file__).parent / "assets", remote_path="/root/assets")  # presets and the app's examples
)


def web_settings(environ: Mapping[str, str]) -> pipelines.WebSettings:
    """The endpoint's settings from the container's environment; with token auth, no token means no start (an
    endpoint that should be guarded never opens by mistake)."""
    token = environ.get("STYLE_STUDIO_WEB_TOKEN") or None
    if environ.get("STYLE_STUDIO_WEB_AUTH", "proxy") == "token" and not token:
        raise RuntimeError(
            f"STYLE_STUDIO_WEB_TOKEN is empty: set it in the Modal secret {WEB_SECRET!r}, or deploy with "
            "STYLE_STUDIO_WEB_AUTH=proxy (Modal's proxy auth) or none."
        )
    # every method that paints from a style image (not InST, which applies a learned style)
    methods = tuple(name for name in pipelines.method_names() if pipelines.get_method(name).uses_style_image)
    return pipelines.WebSettings(token=token, allowed_methods=methods)


def web_stylize(request: pipelines.StyleRequest, context: pipelines.StudioContext) -> pipelines.StyleResult:
    """The endpoint's work. ``fast`` runs here, on the web container's CPU: its picture takes a fraction of a
    second, less than waking a GPU would. Every other method runs on the GPU class; the studio's own errors come
    back from it as themselves (Modal re-raises them), so the endpoint answers them as it would locally."""
    if request.method == "fast":
        return pipelines.run_here(request, context=context)
    try:
        png, metadata = Studio().stylize.remote(_png(request.content), _png(request.style), request.parameters())
    except modal.exception.Error as exc:  # timeouts, a failed container, Modal itself unreachable
        raise pipelines.RemoteBackendError(
            f"The GPU backend could not run this request ({type(exc).__name__}). Try again in a minute."
        ) from None
    return pipelines.StyleResult(pipelines.load_image(png, role="result"), pipelines.ResultMetadata.from_dict(metadata))


def _png(image: Any) -> bytes | None:
    """A request picture for the wire: the web layer hands decoded pictures, sent on as lossless PNG."""
    if image is None or isinstance(image, bytes):
        return image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@app.function(
    image=web_image,
    secrets=WEB_SECRETS,
    cpu=2.0,  # the fast engine uses both cores
    memory=2048,
    scaledown_window=300,
    timeout=600,
)
@modal.concurrent(max_inputs=8)  # fast pictures are quick; the others mostly wait on the GPU class
@modal.asgi_app(requires_proxy_auth=WEB_AUTH == "proxy")
def web() -> Any:
    """`POST /stylize`, `GET /presets`, `GET /health` (see pipelines/web.py) at https://<workspace>--style-studio-web.modal.run"""
    context = pipelines.set_default_context(pipelines.StudioContext.from_environment(backend="local"))
    pipelines.preload("fast", context=context)  # once per container, not in the first request
    return pipelines.create_web_app(web_settings(os.environ), stylize=lambda request: web_stylize(request, context))


# A browser cannot send proxy-auth headers, so the app has its own login: deploy with STYLE_STUDIO_UI_LOGIN=1 and
# the secret `style-studio-ui` holding STYLE_STUDIO_UI_USERS="alice:pw1,bob:pw2"; without it the app is public.
UI_SECRET = "style-studio-ui"
UI_SECRETS = (
    [modal.Secret.from_name(UI_SECRET, required_keys=["STYLE_STUDIO_UI_USERS"])]
    if os.environ.get("STYLE_STUDIO_UI_LOGIN") == "1"
    else []
)


@app.function(image=web_image, secrets=UI_SECRETS, max_containers=1, scaledown_window=1200, timeout=600)
@modal.concurrent(max_inputs=100)  # Gradio's own queue decides what runs; Modal only passes requests in
@modal.asgi_app()
def ui() -> Any:
    """The whole Gradio app (demo.py) at https://<workspace>--style-studio-ui.modal.run, its work on the GPU class."""
    users = [pair for pair in os.environ.get("STYLE_STUDIO_UI_USERS", "").split(",") if pair.strip()]
    return gradio_app(pipelines.StudioContext.from_environment(backend="modal"), users)


def gradio_app(context: pipelines.StudioContext, users: list[str] | None = None) -> Any:
    """demo.py's app over ``context`` as one ASGI app (Gradio's documented way onto Modal); ``users``:
    ``USER:PASSWORD`` pairs that may log in (none: no login)."""
    from fastapi import FastAPI
    from gradio.routes import mount_gradio_app

    import demo  # only the web image carries the front end

    blocks = demo.build_demo(pipelines.set_default_context(context))
    auth = demo.read_auth(users or [], None)
    return mount_gradio_app(
        FastAPI(),
        blocks,
        path="/",
        auth=auth or None,
        auth_message="Style Studio: log in to use this studio." if auth else None,
        max_file_size=demo.MAX_UPLOAD,
        allowed_paths=[str(demo.RESULTS_DIR.parent)],
        footer_links=["api", "gradio", "settings"],
    )


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
