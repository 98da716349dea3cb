"""Style studio web app (Gradio 6): pick a content image and a style image, get a stylized picture.

Run ``python demo.py`` (``--help`` for options). The layout below mirrors the page; the handlers only
translate between widgets and ``pipelines`` (the core), which does all the work.

API: ``/stylize`` takes two image files and named parameters and returns a PNG whose ``style-studio`` text
chunk holds every parameter (see README, "Python API over HTTP").
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

try:  # ZeroGPU needs `spaces` imported before anything initialises CUDA (pipelines imports torch lazily)
    import spaces
except ImportError:
    spaces = None

import gradio as gr
from gradio import FileData

import pipelines
from pipelines import DEFAULT_MAX_SIDE, OptionSpec, StudioError, StyleRequest, StyleResult
from pipelines.backends import ModalBackend, choose_backend, modal_configured
from pipelines.core.compiling import COMPILE_HELP, set_compile
from pipelines.core.device import cuda_available
from pipelines.core.request import MAX_SEED

logger = logging.getLogger("style-studio")

ASSETS = Path(__file__).resolve().parent / "assets"
CONTENT_EXAMPLES = sorted((ASSETS / "content").glob("*.jpg"))
STYLE_EXAMPLES = sorted((ASSETS / "style").glob("*.jpg"))
RESULTS_DIR = Path(tempfile.gettempdir()) / "style-studio" / "results"

QUEUE_MAX_SIZE = 32  # waiting requests; beyond this a client is told the queue is full
CPU_CONCURRENCY = 2  # the fast engine uses every core per picture; 2 overlaps decoding and encoding
GPU_CONCURRENCY = 1  # one diffusion job at a time per GPU
REMOTE_CONCURRENCY = 8  # requests in flight to Modal at once (it starts more containers as needed)
HISTORY_LIMIT = 24  # results kept per browser session
MAX_UPLOAD = "25mb"
RESULT_TTL_S = 6 * 3600  # result files are deleted six hours after they were made
ZERO_GPU_SECONDS = 120  # GPU time a ZeroGPU call may take (InST at 50 steps fits; shorter gets priority)


def _method_choices() -> list[tuple[str, str]]:
    return [(pipelines.get_method(name).label, name) for name in pipelines.method_names()]


def _method_help(name: str) -> str:
    method = pipelines.get_method(name)
    return f"{method.description}  \n*Strength:* {method.strength_mapping}."


def _steps_update(name: str) -> dict[str, Any]:
    spec = pipelines.get_method(name).steps
    if spec is None:
        return gr.update(interactive=False, info="Not used by this method (it has no diffusion steps).")
    return gr.update(
        interactive=True,
        minimum=spec.minimum,
        maximum=spec.maximum,
        value=spec.default,
        info=f"More steps: finer detail, slower. Default {spec.default}.",
    )


def zero_gpu(function: Any, spaces_module: Any = None, environ: dict[str, str] | None = None) -> Any:
    """``spaces.GPU(duration=…)(function)`` on a ZeroGPU Space (SPACES_ZERO_GPU set), else ``function`` as is."""
    environ = os.environ if environ is None else environ
    if spaces_module is None or environ.get("SPACES_ZERO_GPU", "").lower() not in ("1", "true"):
        return function
    return spaces_module.GPU(duration=ZERO_GPU_SECONDS)(function)


def _run_locally(request: StyleRequest, report: Any) -> StyleResult:
    """The GPU work of a local request (on ZeroGPU this is what borrows the GPU)."""
    return pipelines.run(request, progress=report)


_run_locally = zero_gpu(_run_locally, spaces)


def _run(progress: gr.Progress | None = None, backend: str = "local", **parameters: Any) -> StyleResult:
    """Validate and run one request (here or on Modal); its failures become messages the person can act on."""
    report = None
    if progress is not None:

        def report(done: int, total: int, description: str) -> None:
            progress((done, total), desc=description)

    try:
        request = StyleRequest(**parameters)
        if backend == "modal":
            return ModalBackend().run(request, progress=report)
        return _run_locally(request, report)
    except StudioError as exc:
        logger.warning("refused: %s", exc)
        raise gr.Error(str(exc), print_exception=False) from None
    except Exception as exc:  # a bug or a crash below us: log it, keep serving, keep the user's inputs
        logger.exception("stylize failed")
        raise gr.Error(
            f"The {parameters.get('method') or 'default'} method failed unexpectedly ({type(exc).__name__}: {exc}). "
            "Your images are kept; try again, use a smaller max side, or pick another method."
        ) from None


def clean_results(older_than_s: float = RESULT_TTL_S, now: float | None = None) -> int:
    """Delete result folders older than ``older_than_s``; returns how many went. Runs on a schedule."""
    now = time.time() if now is None else now
    removed = 0
    for folder in RESULTS_DIR.glob("*") if RESULTS_DIR.is_dir() else []:
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > older_than_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except OSError:  # another cleaner got there first
            continue
    return removed


def _clean_results_forever(interval_s: float = 600) -> None:
    while True:
        try:
            removed = clean_results()
            if removed:
                logger.info("removed %d old result folders", removed)
        except Exception:  # never let housekeeping take the server down
            logger.exception("result cleanup failed")
        time.sleep(interval_s)


def _save(result: StyleResult) -> Path:
    """Write the result PNG (with its parameters) to a folder of its own; return its path."""
    folder = RESULTS_DIR / uuid.uuid4().hex
    meta = result.metadata
    return result.save(folder / f"stylized-{meta['method']}-seed{meta['seed']}.png")


def _save_with_before(result: StyleResult) -> tuple[Path, Path]:
    """The result PNG and, beside it, the before-picture for the comparison slider. The before-picture is for
    display only, so it is a JPEG: encoding it as PNG cost 90 ms of a fast-engine request's 160."""
    png = _save(result)
    before = png.parent / "content.jpg"
    (result.content or result.image).save(before, quality=92)
    return png, before


def _as_file(result: StyleResult) -> FileData:
    """The saved result PNG as the API returns it (the API returns no before-picture, so none is written)."""
    png = _save(result)
    return FileData(path=str(png), orig_name=png.name, mime_type="image/png")


def _summary(meta: dict[str, Any]) -> str:
    where = f"{meta['device']}, via Modal" if meta.get("backend") == "modal" else meta["device"]
    steps = f" · {meta['steps']} steps" if meta["steps"] else ""
    return (
        f"**{meta['method']}** · strength {meta['strength']:.2f}{steps} · seed {meta['seed']} · "
        f"{meta['size'][0]}×{meta['size'][1]} · {meta['timings']['total_s']:.2f} s on {where}"
    )


def build_demo(
    default_method: str | None = None,
    device: str = "auto",
    weights: dict[str, str] | None = None,
    backend: str = "local",
) -> gr.Blocks:
    """The whole app. ``default_method`` preselects a method; ``device`` is where local methods run; ``weights``
    maps a method name to its weights location; ``backend`` is ``local``, ``modal`` or ``auto`` (local CUDA, else
    Modal if configured, else local CPU)."""
    weights = dict(weights or {})
    on_gpu = device.startswith("cuda") or (device == "auto" and cuda_available())
    backend = choose_backend(backend, cuda=on_gpu, modal_ready=modal_configured())
    if default_method is None:  # the remote GPU serves the diffusion methods
        default_method = pipelines.default_method_name(
            "cuda" if backend == "modal" else pipelines.resolve_device(device)
        )
    pipelines.get_method(default_method)  # fail at start-up, not at the first click, on a bad name
    concurrency = GPU_CONCURRENCY if on_gpu else CPU_CONCURRENCY
    if backend == "modal":
        concurrency = REMOTE_CONCURRENCY  # Modal scales out; the queue, not this process, is the limit
    default_steps = pipelines.get_method(default_method).steps

    def generate(
        content,
        style,
        method,
        strength,
        steps,
        seed,
        random_seed,
        max_side,
        preserve_color,
        history,
        run_on,
        *option_values,
        progress=gr.Progress(),
    ):
        if content is None:
            raise gr.Error("Add a content image first: upload one, paste it, take a photo, or pick an example.")
        if style is None and pipelines.get_method(method).uses_style_image:
            raise gr.Error("Add a style image first: upload or paste a painting, or pick an example.")
        if not random_seed and seed is None:
            raise gr.Error("Enter a seed, or tick 'Random seed'.")
        result = _run(
            progress,
            content=content,
            style=style,
            method=method,
            strength=strength,
            steps=steps,
            seed=None if random_seed else seed,
            max_side=max_side,
            preserve_color=preserve_color,
            device=device,
            weights=weights.get(method),
            extras=_extras_for(method, option_values),
            backend=run_on,
        )
        png, before = _save_with_before(result)
        caption = f"{result.metadata['method']} · {result.metadata['strength']:.2f} · seed {result.metadata['seed']}"
        entry = {"png": str(png), "before": str(before), "caption": caption, "metadata": result.metadata}
        history = [entry, *history][:HISTORY_LIMIT]
        return (
            (str(before), str(png)),
            gr.update(value=str(png), interactive=True),
            result.metadata["seed"],
            _summary(result.metadata),
            result.metadata,
            history,
            [(h["png"], h["caption"]) for h in history],
        )

    def reopen(history, evt: gr.SelectData):
        entry = history[evt.index]
        return (
            (entry["before"], entry["png"]),
            gr.update(value=entry["png"], interactive=True),
            _summary(entry["metadata"]),
            entry["metadata"],
        )

    def stylize(
        content: FileData,
        style: FileData,
        method: str | None = None,
        strength: float = 0.7,
        steps: int | None = None,
        seed: int | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
        preserve_color: bool = False,
        options: dict | None = None,
    ) -> FileData:
        """Stylize `content` in the style of `style`.

        Returns a PNG whose `style-studio` text chunk holds every parameter (method, strength, steps, the seed
        actually used, device, timings). `method` None picks the server's default; `seed` None draws one.
        `options`: method-specific options, e.g. {"content_scale": 0.5, "eta": 0} for artfusion.
        """
        result = _run(
            content=_upload_path(content, "content"),
            style=_upload_path(style, "style"),
            method=method,
            strength=strength,
            steps=steps,
            seed=seed,
            max_side=max_side,
            preserve_color=preserve_color,
            device=device,
            weights=weights.get(method or default_method),
            extras=options or {},
            backend=backend,
        )
        return _as_file(result)

    with gr.Blocks(title="Style Studio", delete_cache=(3600, 3600)) as demo:
        history = gr.State([])
        gr.Markdown(
            "# Style Studio\n"
            "Pick a **content** photo and a **style** painting, set the strength, press **Generate**. "
            "Every result is a PNG that remembers how it was made."
        )
        with gr.Tab("Stylize") as stylize_tab, gr.Row(equal_height=False):
            with gr.Column(scale=5):
                with gr.Row():
                    with gr.Column(min_width=200):
                        content = gr.Image(
                            label="Content",
                            type="filepath",
                            image_mode=None,
                            height=280,
                            sources=["upload", "clipboard", "webcam"],
                            elem_id="content-image",
                        )
                        gr.Examples(
                            [[str(p)] for p in CONTENT_EXAMPLES],
                            inputs=[content],
                            label="Example photos",
                            cache_examples=False,
                        )
                    with gr.Column(min_width=200):
                        style = gr.Image(
                            label="Style",
                            type="filepath",
                            image_mode=None,
                            height=280,
                            sources=["upload", "clipboard"],
                            elem_id="style-image",
                        )
                        gr.Examples(
                            [[str(p)] for p in STYLE_EXAMPLES],
                            inputs=[style],
                            label="Example paintings (public domain)",
                            cache_examples=False,
                        )
                method = gr.Dropdown(_method_choices(), value=default_method, label="Method", elem_id="method")
                method_help = gr.Markdown(_method_help(default_method))
                strength = gr.Slider(
                    0,
                    1,
                    value=0.7,
                    step=0.05,
                    label="Style strength",
                    info="0 keeps the content unchanged, 1 is the strongest style.",
                )
                steps = gr.Slider(
                    1,
                    default_steps.maximum if default_steps else 100,
                    step=1,
                    precision=0,
                    value=default_steps.default if default_steps else 30,
                    label="Diffusion steps",
                    elem_id="steps",
                    interactive=default_steps is not None,
                    info=None if default_steps else "Not used by this method (it has no diffusion steps).",
                )
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED)
                    random_seed = gr.Checkbox(True, label="Random seed", info="Untick to reuse the seed shown.")
                with gr.Accordion("Advanced", open=False):
                    max_side = gr.Slider(
                        256,
                        2048,
                        value=DEFAULT_MAX_SIDE,
                        step=64,
                        precision=0,
                        label="Max side (px)",
                        info="Long side of the working resolution.",
                    )
                    preserve_color = gr.Checkbox(
                        False,
                        label="Preserve content colours",
                        info="Take the style's brushwork and light, keep the photo's colours.",
                    )
                    run_on = gr.Radio(
                        [("Remote GPU (Modal)", "modal"), ("This machine", "local")],
                        value=backend,
                        label="Run on",
                        info="If the remote GPU fails, switch to this machine.",
                        visible=backend == "modal" or modal_configured(),
                    )
                    option_groups, option_inputs, option_controls_with_suggestions = {}, [], []
                    for name in pipelines.method_names():
                        specs = pipelines.get_method(name).options
                        if not specs:
                            continue
                        with gr.Group(visible=name == default_method) as option_groups[name]:
                            gr.Markdown(f"**{pipelines.get_method(name).label}**")
                            for spec in specs:
                                option_inputs.append(_option_control(spec))
                                if spec.suggestions is not None:
                                    option_controls_with_suggestions.append((spec, option_inputs[-1], None))
                                if spec.previews is not None:  # thumbnails to click, e.g. learned styles
                                    previews = gr.Gallery(
                                        elem_id=f"{spec.name}-previews",
                                        label=f"{spec.label}: click to choose",
                                        columns=6,
                                        height=130,
                                        allow_preview=False,
                                        fit_columns=False,
                                        object_fit="cover",
                                    )
                                    previews.select(_pick_preview, None, option_inputs[-1], api_visibility="private")
                                    option_controls_with_suggestions[-1] = (spec, option_inputs[-1], previews)
            with gr.Column(scale=5):
                comparison = gr.ImageSlider(
                    label="Before / after",
                    type="filepath",
                    format="png",
                    elem_id="result",
                    interactive=False,
                    height=420,
                )
                summary = gr.Markdown("Your result will appear here.", elem_id="summary")
                download = gr.DownloadButton("Download PNG (with parameters)", interactive=False, elem_id="download")
                with gr.Accordion("Parameters", open=False):
                    parameters = gr.JSON(label="Everything needed to reproduce this picture")
                gallery = gr.Gallery(
                    label="History (this session; click to reopen)",
                    columns=6,
                    height=200,
                    allow_preview=False,
                    fit_columns=False,
                    object_fit="cover",
                    elem_id="history",
                )

        with gr.Tab("Learn a style"):
            gr.Markdown(
                "Teach InST a style from **one** painting. The fast preset takes a couple of minutes on a modern GPU; "
                "the paper preset follows the original recipe (6100 steps). A cancelled run resumes when you start "
                "it again with the same name. Learned styles appear below and in the Stylize tab (method InST)."
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=4):
                    learn_image = gr.Image(
                        label="Style image",
                        type="filepath",
                        image_mode=None,
                        height=260,
                        sources=["upload", "clipboard"],
                        elem_id="learn-image",
                    )
                    learn_name = gr.Textbox(label="Name", placeholder="e.g. starry-night", elem_id="learn-name")
                    learn_preset = gr.Radio(["fast", "paper"], value="fast", label="Preset")
                    learn_steps = gr.Number(None, label="Steps (empty: the preset's)", precision=0, minimum=1)
                    learn_clip_mode = gr.Radio(
                        ["paper", "code"],
                        value="paper",
                        label="CLIP input",
                        info="paper: correct preprocessing. code: the official code's quirk.",
                    )
                    learn_resolution = gr.Number(
                        512,
                        label="Training resolution (px, square)",
                        precision=0,
                        minimum=32,
                        maximum=1024,
                        elem_id="learn-resolution",
                    )
                    with gr.Row():
                        learn_start = gr.Button("Start", variant="primary", elem_id="learn-start")
                        learn_cancel = gr.Button("Cancel", elem_id="learn-cancel")
                with gr.Column(scale=6):
                    learn_status = gr.Markdown("Nothing running.", elem_id="learn-status")
                    learn_plot = gr.LinePlot(x="step", y="loss", title="Training loss", height=260)
                    library_gallery = gr.Gallery(
                        label="Learned styles",
                        columns=5,
                        height=220,
                        allow_preview=False,
                        fit_columns=False,
                        object_fit="cover",
                        elem_id="library",
                    )

        method.change(_method_help, method, method_help, api_visibility="private")
        method.change(_steps_update, method, steps, api_visibility="private")
        method.change(_style_picker_update, method, style, api_visibility="private")
        for name, group in option_groups.items():  # each method's options show only while it is selected
            method.change(
                lambda chosen, name=name: gr.update(visible=chosen == name), method, group, api_visibility="private"
            )
        generate_button.click(
            generate,
            [
                content,
                style,
                method,
                strength,
                steps,
                seed,
                random_seed,
                max_side,
                preserve_color,
                history,
                run_on,
                *option_inputs,
            ],
            [comparison, download, seed, summary, parameters, history, gallery],
            api_visibility="private",
            concurrency_id="stylize",
            concurrency_limit=concurrency,
        )
        gallery.select(reopen, history, [comparison, download, summary, parameters], api_visibility="private")
        gr.api(stylize, api_name="stylize", concurrency_id="stylize", concurrency_limit=concurrency)

        def learn(style_file, name, preset, steps, clip_mode, resolution, request: gr.Request, progress=gr.Progress()):
            """Learn a style in a worker thread; stream its loss to the plot; a Cancel stops it at the next step."""
            if style_file is None:
                raise gr.Error("Add the style image to learn from.")
            if not (name or "").strip():
                raise gr.Error("Give the style a name.")
            cancel = _LEARNING_CANCELS[request.session_hash] = threading.Event()
            updates: queue.Queue = queue.Queue()
            outcome: dict[str, Any] = {}
            base, clip = _inst_models(weights)

            def work() -> None:
                from pipelines.inst.service import learn_style_into_library

                try:
                    outcome["entry"] = learn_style_into_library(
                        style_file,
                        name,
                        preset=preset,
                        steps=int(steps) if steps else None,
                        clip_mode=clip_mode,
                        resolution=int(resolution or 512),
                        base_model=base,
                        clip_model=clip,
                        device=device,
                        cancel=cancel,
                        on_step=lambda step, total, loss: updates.put((step, total, loss)),
                    )
                except BaseException as exc:  # reported to the person below, never swallowed
                    outcome["error"] = exc
                finally:
                    updates.put(None)

            threading.Thread(target=work, name="learn-style", daemon=True).start()
            points: list[tuple[int, float]] = []
            while (item := updates.get()) is not None:
                step, total, loss = item
                points.append((step, loss))
                progress((step, total), desc=f"Learning: step {step}/{total}")
                if step == total or step % 5 == 0:
                    yield f"Step {step}/{total}, loss {loss:.4f}", _loss_frame(points), gr.update()
            _LEARNING_CANCELS.pop(request.session_hash, None)
            error = outcome.get("error")
            if error is not None:
                from pipelines.inst.training import TrainingCancelled

                if isinstance(error, TrainingCancelled):
                    yield (
                        f"Cancelled ({error}). Start again with the same name to resume.",
                        _loss_frame(points),
                        gr.update(),
                    )
                    return
                if isinstance(error, StudioError):
                    raise gr.Error(str(error), print_exception=False)
                logger.error("learning failed", exc_info=error)
                raise gr.Error(f"Learning failed unexpectedly ({type(error).__name__}: {error}).")
            entry = outcome["entry"]
            yield (
                (
                    f"Learned **{entry.name}** ({entry.steps} steps, final loss {entry.final_loss}). Pick it in the "
                    "Stylize tab: method InST, Advanced → Learned style."
                ),
                _loss_frame(points),
                _library_gallery(),
            )

        def cancel_learning(request: gr.Request):
            event = _LEARNING_CANCELS.get(request.session_hash)
            if event is None:
                return "Nothing to cancel."
            event.set()
            return "Cancelling at the next step…"

        learn_start.click(
            learn,
            [learn_image, learn_name, learn_preset, learn_steps, learn_clip_mode, learn_resolution],
            [learn_status, learn_plot, library_gallery],
            api_visibility="private",
            concurrency_id="learn",
            concurrency_limit=1,
        )
        learn_cancel.click(cancel_learning, None, learn_status, api_visibility="private", queue=False)
        demo.load(_library_gallery, None, library_gallery, api_visibility="private")
        for spec, control, previews in option_controls_with_suggestions:  # live choices, e.g. learned styles
            outputs = [control] if previews is None else [control, previews]

            def refresh(spec=spec, with_previews=previews is not None):
                choices = gr.update(choices=spec.suggestions())
                return (choices, spec.previews() if spec.previews else []) if with_previews else choices

            demo.load(refresh, None, outputs, api_visibility="private")  # on every visit
            stylize_tab.select(refresh, None, outputs, api_visibility="private")  # and after learning a style

        def styles() -> list[dict]:
            """The learned InST styles in the library: name, slug, source, CLIP mode, steps, final loss, created."""
            from dataclasses import asdict

            from pipelines.inst.library import StyleLibrary

            return [asdict(entry) for entry in StyleLibrary().list()]

        def apply_style(
            content: FileData,
            style_name: str,
            strength: float = 0.7,
            steps: int | None = None,
            seed: int | None = None,
            max_side: int = DEFAULT_MAX_SIDE,
            preserve_color: bool = False,
            options: dict | None = None,
        ) -> FileData:
            """Apply a learned InST style (see /styles) to `content`; returns the PNG with its parameters."""
            result = _run(
                content=_upload_path(content, "content"),
                style=None,
                method="inst",
                strength=strength,
                steps=steps,
                seed=seed,
                max_side=max_side,
                preserve_color=preserve_color,
                device=device,
                weights=weights.get("inst"),
                extras={**(options or {}), "style_name": style_name},
            )
            return _as_file(result)

        gr.api(styles, api_name="styles", queue=False)
        gr.api(apply_style, api_name="apply_style", concurrency_id="stylize", concurrency_limit=concurrency)

    demo.queue(max_size=QUEUE_MAX_SIZE)
    return demo


def _option_control(spec: OptionSpec) -> gr.components.Component:
    """A widget for one method option (a method declares its options; the UI never hard-codes them)."""
    if spec.kind == "choice":
        return gr.Radio(list(spec.choices), value=spec.default, label=spec.label, info=spec.help)
    if spec.kind == "text":
        if spec.suggestions is not None:
            return gr.Dropdown(
                spec.suggestions(), value=None, label=spec.label, info=spec.help, allow_custom_value=True
            )
        return gr.Textbox("", label=spec.label, info=spec.help)
    if spec.default is None:  # "automatic" unless set: a text box left empty (a number box would show 0)
        return gr.Textbox("", label=spec.label, info=spec.help, placeholder=f"auto ({spec.minimum}–{spec.maximum})")
    step = 1 if spec.kind == "int" else 0.05
    return gr.Slider(
        spec.minimum,
        spec.maximum,
        value=spec.default,
        step=step,
        label=spec.label,
        info=spec.help,
        precision=0 if spec.kind == "int" else None,
    )


def _extras_for(method: str, option_values: tuple) -> dict[str, Any]:
    """The selected method's option values from the flat list of every method's option widgets."""
    specs = [(name, spec) for name in pipelines.method_names() for spec in pipelines.get_method(name).options]
    return {
        spec.name: value
        for (name, spec), value in zip(specs, option_values, strict=True)
        if name == method and value is not None
    }


_LEARNING_CANCELS: dict[str, threading.Event] = {}  # browser session → its running style training


def _style_picker_update(name: str) -> dict[str, Any]:
    """Methods that take their style from elsewhere (InST: a learned style) say so on the style picker."""
    if pipelines.get_method(name).uses_style_image:
        return gr.update(label="Style")
    return gr.update(label="Style (not used: this method applies a learned style, chosen under Advanced)")


def _pick_preview(evt: gr.SelectData) -> str:
    """A clicked thumbnail selects its value (the caption is the value)."""
    return evt.value["caption"] if isinstance(evt.value, dict) else str(evt.value)


def _inst_models(weights: dict[str, str]) -> tuple[str, str]:
    from pipelines.inst.method import split_weights, weights_spec

    return split_weights(weights.get("inst") or weights_spec())


def _loss_frame(points: list[tuple[int, float]]) -> Any:
    import pandas as pd

    return pd.DataFrame(points, columns=["step", "loss"])


def _library_gallery() -> list[tuple[str, str]]:
    """Thumbnails and names of the learned styles."""
    from pipelines.inst.library import StyleLibrary

    return [(path, entry.name) for path, entry in StyleLibrary().thumbnails()]


def _upload_path(file: Any, role: str) -> str:
    """The server-side path of an uploaded file sent as FileData (what ``gradio_client.handle_file`` makes)."""
    path = file.get("path") if isinstance(file, dict) else getattr(file, "path", None)
    if not isinstance(path, str) or not path:
        raise gr.Error(f"{role} must be an image file; send it with gradio_client.handle_file('picture.jpg').")
    return path


def _preload(method: str | None, device: str, weights: dict[str, str]) -> None:
    """Load the page's default method while the server starts, so the first visitor does not wait for it."""
    try:
        method = method or pipelines.default_method_name(pipelines.resolve_device(device))
        key = pipelines.preload(method, device=device, weights=weights.get(method))
        logger.info("preloaded %s on %s", key.method, key.device)
    except Exception as exc:  # the first request will retry and show the error to the user properly
        logger.warning("could not preload the default method: %s", exc)


def read_auth(pairs: list[str], auth_file: str | None) -> list[tuple[str, str]]:
    """Logins from ``--auth USER:PASSWORD`` flags and a file of such lines (blank lines and # comments skipped)."""
    lines = list(pairs)
    if auth_file:
        try:
            text = Path(auth_file).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read the auth file {auth_file}: {exc.strerror}") from None
        lines += [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    logins = []
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError("each login must be USER:PASSWORD (with a non-empty user and password)")
        logins.append((user, password))
    return logins


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Style Studio: diffusion style transfer in the browser.")
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to listen on (0.0.0.0 to serve your network; default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        help="port to listen on (default 7860)",
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--method",
        choices=pipelines.method_names(),
        default=None,
        help="method selected when the page opens (default: the best this machine can run)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cuda, cuda:N, mps or cpu")
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="METHOD=PATH_OR_REPO",
        help="weights for a method, e.g. artfusion=/models/artfusion_r12_step=317673.ckpt",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "local", "modal"],
        default="auto",
        help="where methods run: auto = local CUDA, else Modal if configured, else this CPU",
    )
    parser.add_argument("--compile", nargs="?", const="on", default=None, metavar="MODE", help=COMPILE_HELP)
    parser.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="require a login (repeatable); or set STYLE_STUDIO_AUTH_FILE to a file of USER:PASSWORD lines",
    )
    args = parser.parse_args(argv)
    try:
        auth = read_auth(args.auth, os.environ.get("STYLE_STUDIO_AUTH_FILE"))
    except ValueError as exc:
        parser.error(str(exc))
    weights = {}
    for pair in args.weights:
        name, sep, location = pair.partition("=")
        if not sep or name not in pipelines.method_names():
            parser.error(f"--weights takes METHOD=PATH_OR_REPO with METHOD one of {pipelines.method_names()}")
        weights[name] = location
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.compile is not None:
            set_compile(args.compile)
        device = pipelines.resolve_device(args.device) if args.device != "auto" else "auto"
        app = build_demo(args.method, device, weights, backend=args.backend)
    except StudioError as exc:
        parser.exit(2, f"error: {exc}\n")
    if choose_backend(args.backend, cuda_available(), modal_configured()) == "local":
        threading.Thread(target=_preload, args=(args.method, args.device, weights), name="preload", daemon=True).start()
    threading.Thread(target=_clean_results_forever, name="clean-results", daemon=True).start()
    if args.share and not auth:
        logger.warning("sharing a public link without --auth: anyone with the link can use this machine")
    app.launch(
        auth=auth or None,
        auth_message="Style Studio: log in to use this shared studio." if auth else None,
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=MAX_UPLOAD,
        allowed_paths=[str(RESULTS_DIR.parent)],
        footer_links=["api", "gradio", "settings"],
    )


if __name__ == "__main__":
    main()
