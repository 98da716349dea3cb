"""Style studio web app (Gradio 6): pick a content image and a style image, get a stylized picture.

Run ``python demo.py`` or ``style-studio`` (``--help`` for options). ``build_demo`` reads like the page: a header,
one function per tab, the HTTP API registered in one place. Handlers only translate between widgets and the
``pipelines`` package's public API, which does all the work; the request widgets are generated from the request
schema (``pipelines.REQUEST_PARAMETERS``), so a new request parameter appears here by itself.

A failure never hides the person's work: the last result, the history and the inputs stay, and the message stays
readable in the status line until the next action.

API: ``/stylize`` (two image files and the request parameters → a PNG whose ``style-studio`` text chunk holds
every parameter), ``/styles`` (the learned InST styles) and ``/apply_style`` (a learned style on a photo).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import queue
import shutil
import sysconfig
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:  # ZeroGPU needs `spaces` imported before anything initialises CUDA (pipelines imports torch lazily)
    import spaces
except ImportError:
    spaces = None

import gradio as gr
from gradio import FileData

import pipelines
from pipelines import StudioContext, StudioError, StyleRequest, StyleResult

logger = logging.getLogger("style-studio")

FRONT_END = "app"  # how errors spell their fixes: `--weights artfusion=...`
RESULTS_DIR = Path(tempfile.gettempdir()) / "style-studio" / "results"
QUEUE_MAX_SIZE = 32  # waiting requests; beyond this a client is told the queue is full
CPU_CONCURRENCY = 2  # the fast engine uses every core per picture; 2 overlaps decoding and encoding
GPU_CONCURRENCY = 1  # one diffusion job at a time per GPU
REMOTE_CONCURRENCY = 8  # requests in flight to Modal at once (it starts more containers as needed)
HISTORY_LIMIT = 24  # results kept per browser session
MAX_UPLOAD = "25mb"
RESULT_TTL_S = 6 * 3600  # result files are deleted six hours after they were made
IMAGE_SOURCES = {"content": ["upload", "clipboard", "webcam"], "style": ["upload", "clipboard"]}
NO_STEPS = "Not used by this method (it has no diffusion steps)."
NO_SEED = "Not used by this method (it gives the same picture every time)."
SEED_INFO = "The same seed and settings give the same picture."
COMPARE_STRENGTHS = [0.0, 0.25, 0.5, 0.75, 1.0]
BROWSER_VIDEO = (".mp4", ".webm", ".gif")  # the output formats a browser plays
VIDEO_UPDATE_S = 0.5  # the page's video status is refreshed at most this often
UPLOAD_CHECK = {"preprocess": False, "queue": False, "api_visibility": "private"}  # raw upload, checked at once


def _assets_dir() -> Path:
    """The example pictures: beside this file (a checkout, an editable install), else where ``pip install .``
    put them (``<prefix>/share/style-studio/assets``)."""
    candidates = [Path(__file__).resolve().parent / "assets"]
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")):
        candidates.append(Path(sysconfig.get_path("data", scheme)) / "share" / "style-studio" / "assets")
    return next((folder for folder in candidates if (folder / "content").is_dir()), candidates[0])


ASSETS = _assets_dir()
CONTENT_EXAMPLES = sorted((ASSETS / "content").glob("*.jpg"))
STYLE_EXAMPLES = sorted((ASSETS / "style").glob("*.jpg"))


# ---- page building blocks (no events here) ------------------------------------------------------------------


@dataclass
class StylizeTab:
    """The Stylize tab's components, by what they are."""

    request: dict[str, Any]  # request parameter name → its widget (generated from the schema)
    random_seed: gr.Checkbox
    method_help: gr.Markdown
    retry: gr.Button
    generate: gr.Button
    cancel: gr.Button
    status: gr.Markdown
    comparison: gr.ImageSlider
    download: gr.DownloadButton
    parameters: gr.JSON
    gallery: gr.Gallery
    history: gr.State
    run_on: gr.Radio
    option_groups: dict[str, gr.Group] = field(default_factory=dict)
    option_inputs: dict[tuple[str, str], Any] = field(default_factory=dict)  # (method, option) → widget
    option_previews: list[tuple[pipelines.OptionSpec, Any, Any]] = field(default_factory=list)
    batch: BatchPanel | None = None


@dataclass
class VideoTab:
    """The Video tab's components."""

    video: gr.Video
    style: gr.Image
    request: dict[str, Any]  # the request's parameters a video takes (generated from the schema)
    video_settings: dict[str, Any]  # the video's own parameters (``pipelines.VIDEO_PARAMETERS``)
    output_format: gr.Radio
    random_seed: gr.Checkbox
    estimate: gr.Button
    start: gr.Button
    cancel: gr.Button
    status: gr.Markdown
    preview: gr.Image
    result: gr.Video
    result_gif: gr.Image
    download: gr.DownloadButton


@dataclass
class CompareTab:
    """The Compare tab's components."""

    content: gr.Image
    styles: gr.File
    methods: gr.CheckboxGroup
    strengths: gr.CheckboxGroup
    request: dict[str, Any]  # steps, seed, max side (generated from the schema)
    start: gr.Button
    cancel: gr.Button
    status: gr.Markdown
    grid: gr.Image
    cells: gr.Gallery
    table: gr.Dataframe
    grid_download: gr.DownloadButton
    zip_download: gr.DownloadButton
    entries: gr.State


@dataclass
class BatchPanel:
    """Many content pictures at once, in the Stylize tab (same style and settings)."""

    files: gr.File
    start: gr.Button
    status: gr.Markdown
    gallery: gr.Gallery
    download: gr.DownloadButton


@dataclass
class LearnTab:
    image: gr.Image
    name: gr.Textbox
    preset: gr.Radio
    steps: gr.Number
    clip_mode: gr.Radio
    resolution: gr.Number
    start: gr.Button
    cancel: gr.Button
    status: gr.Markdown
    plot: gr.LinePlot
    library: gr.Gallery
    library_list: gr.Markdown


def _method_choices(context: StudioContext) -> list[tuple[str, str]]:
    """The method menu; a method whose weights could not be reached says so in its label."""
    unavailable = context.availability.unavailable()
    return [
        (pipelines.get_method(name).label + (" — unavailable" if name in unavailable else ""), name)
        for name in pipelines.method_names()
    ]


def _method_help(name: str, context: StudioContext) -> str:
    method = pipelines.get_method(name)
    text = f"{method.description}  \n*Strength:* {method.strength_mapping}."
    failure = context.availability.unavailable().get(name)
    if failure is not None:
        text += f"  \n**Unavailable:** {failure.error.for_front_end(FRONT_END)} Press *Retry* once that is fixed."
    return text


def _request_control(param: pipelines.Parameter, default_method: str, context: StudioContext, prefix: str = "") -> Any:
    """A widget for one declared request parameter (the page never hard-codes the request's fields); ``prefix``
    keeps element ids apart where a second tab shows the same parameter."""
    if param.kind == "image":
        return gr.Image(
            label=param.label,
            type="filepath",
            image_mode=None,
            height=280,
            sources=IMAGE_SOURCES.get(param.name, ["upload", "clipboard"]),
            elem_id=f"{prefix}{param.name}-image",
        )
    if param.kind == "method":
        return gr.Dropdown(_method_choices(context), value=default_method, label=param.label, elem_id=f"{prefix}method")
    if param.kind == "bool":
        return gr.Checkbox(bool(param.default), label=param.label, info=param.help.capitalize() + ".")
    if param.name == "steps":
        return _steps_slider(default_method, prefix)
    if param.step is None:  # a wide integer range (the seed): a number box
        return gr.Number(
            0, label=param.label, precision=0, minimum=param.minimum, maximum=param.maximum, elem_id=prefix + param.name
        )
    return gr.Slider(
        param.minimum,
        param.maximum,
        value=param.default,
        step=param.step,
        precision=0 if param.kind == "int" else None,
        label=param.label,
        info=param.help.capitalize() + ".",
        elem_id=prefix + param.name.replace("_", "-"),
    )


def _steps_slider(method_name: str, prefix: str = "") -> gr.Slider:
    spec = pipelines.get_method(method_name).steps
    return gr.Slider(
        spec.minimum if spec else 1,
        spec.maximum if spec else 100,
        value=spec.default if spec else 1,
        step=1,
        precision=0,
        label="Diffusion steps",
        elem_id=f"{prefix}steps",
        interactive=spec is not None,
        info=f"More steps: finer detail, slower. Default {spec.default}." if spec else NO_STEPS,
    )


def _option_control(spec: pipelines.OptionSpec, context: StudioContext) -> Any:
    """A widget for one method option (a method declares its options; the UI never hard-codes them)."""
    if spec.kind == "choice":
        return gr.Radio(list(spec.choices), value=spec.default, label=spec.label, info=spec.help)
    if spec.kind == "text":
        if spec.suggestions is not None:
            return gr.Dropdown(
                spec.suggestions(context), value=None, label=spec.label, info=spec.help, allow_custom_value=True
            )
        return gr.Textbox("", label=spec.label, info=spec.help)
    if spec.default is None:  # "automatic" unless set: a text box left empty (a number box would show 0)
        return gr.Textbox("", label=spec.label, info=spec.help, placeholder=f"auto ({spec.minimum}–{spec.maximum})")
    return gr.Slider(
        spec.minimum,
        spec.maximum,
        value=spec.default,
        step=1 if spec.kind == "int" else 0.05,
        label=spec.label,
        info=spec.help,
        precision=0 if spec.kind == "int" else None,
    )


def _thumbnails(elem_id: str, label: str, height: int = 130) -> gr.Gallery:
    return gr.Gallery(
        label=label,
        columns=6,
        height=height,
        allow_preview=False,
        fit_columns=False,
        object_fit="cover",
        elem_id=elem_id,
    )


# ---- the page -----------------------------------------------------------------------------------------------


def build_demo(context: StudioContext | None = None, default_method: str | None = None) -> gr.Blocks:
    """The whole app over ``context`` (device, backend, weights, library: see ``StudioContext``);
    ``default_method`` preselects a method (default: the best one where the context runs)."""
    context = context or pipelines.default_context()
    default_method = pipelines.resolve_method(default_method, context).name  # a bad name fails at start-up
    with gr.Blocks(title="Style Studio", delete_cache=(3600, 3600)) as demo:
        _render_header()
        with gr.Tabs() as tabs:
            with gr.Tab("Stylize", id="stylize") as stylize_tab:
                stylize = _render_stylize_tab(context, default_method)
            with gr.Tab("Compare", id="compare"):
                comparing = _render_compare_tab(context)
            with gr.Tab("Video", id="video"):
                video = _render_video_tab(context)
            with gr.Tab("Learn a style", id="learn"):
                learn = _render_learn_tab()
        learning = LearnHandlers(learn, context)
        stylizing = StylizeHandlers(stylize, context)
        _wire_stylize(demo, stylize, stylizing, context)
        _wire_batch(stylize, stylizing)
        _wire_compare(comparing, CompareHandlers(comparing, stylizing, tabs))
        _wire_video(demo, video, VideoHandlers(video, context))
        _wire_learn(learn, learning)
        _wire_live_choices(demo, stylize_tab, stylize, learning, context)
        _register_api(demo, context, default_method)
    demo.queue(max_size=QUEUE_MAX_SIZE)
    return demo


def _render_header() -> None:
    gr.Markdown(
        "# Style Studio\n"
        "Pick a **content** photo and a **style** painting, set the strength, press **Generate**. "
        "Every result is a PNG that remembers how it was made."
    )


def _render_stylize_tab(context: StudioContext, default_method: str) -> StylizeTab:
    """Inputs and Generate on the left, the result on the right; on a phone the result follows Generate, and
    the Advanced settings come last."""
    controls = {p.name: None for p in pipelines.REQUEST_PARAMETERS if p.kind != "options"}
    basic = [p for p in pipelines.REQUEST_PARAMETERS if p.kind not in ("image", "options") and not p.advanced]
    advanced = [p for p in pipelines.REQUEST_PARAMETERS if p.kind != "options" and p.advanced]
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=320):
            with gr.Row():
                for param, examples in (("content", CONTENT_EXAMPLES), ("style", STYLE_EXAMPLES)):
                    with gr.Column(min_width=200):
                        controls[param] = _request_control(
                            pipelines.get_request_parameter(param), default_method, context
                        )
                        gr.Examples(
                            [[str(p)] for p in examples],
                            inputs=[controls[param]],
                            cache_examples=False,
                            label="Example photos" if param == "content" else "Example paintings (public domain)",
                        )
            for param in basic:
                controls[param.name] = _request_control(param, default_method, context)
                if param.kind == "method":
                    method_help = gr.Markdown(_method_help(default_method, context), elem_id="method-help")
                    retry = gr.Button("Retry loading this method", size="sm", visible=False, elem_id="retry")
            random_seed = gr.Checkbox(True, label="Random seed", info="Untick to reuse the seed shown.")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
                cancel = gr.Button("Cancel", elem_id="cancel", scale=1)
            batch = _render_batch_panel()
        with gr.Column(scale=5, min_width=320):
            status = gr.Markdown("Your result will appear here.", elem_id="status")
            comparison = gr.ImageSlider(
                label="Before / after", type="filepath", format="png", elem_id="result", interactive=False, height=420
            )
            download = gr.DownloadButton("Download PNG (with parameters)", interactive=False, elem_id="download")
            with gr.Accordion("Parameters", open=False):
                parameters = gr.JSON(label="Everything needed to reproduce this picture")
            gallery = _thumbnails("history", "History (this session; click to reopen)", height=200)
    with gr.Accordion("Advanced", open=False):
        for param in advanced:
            controls[param.name] = _request_control(param, default_method, context)
        run_on = gr.Radio(
            [("Remote GPU (Modal)", "modal"), ("This machine", "local")],
            value=context.backend,
            label="Run on",
            info="If the remote GPU fails, switch to this machine.",
            visible=context.backend == "modal" or context.modal_configured,
        )
        tab = StylizeTab(
            controls,
            random_seed,
            method_help,
            retry,
            generate,
            cancel,
            status,
            comparison,
            download,
            parameters,
            gallery,
            gr.State([]),
            run_on,
            batch=batch,
        )
        _render_method_options(tab, context, default_method)
    return tab


def _render_compare_tab(context: StudioContext) -> CompareTab:
    """One photo, one or more paintings, methods × strengths → a grid with scores; a cell opens in Stylize."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            content = _request_control(pipelines.get_request_parameter("content"), "fast", context, "compare-")
            styles = gr.File(
                label="Style pictures (one or several)",
                file_count="multiple",
                file_types=["image"],
                elem_id="compare-styles",
            )
            methods = gr.CheckboxGroup(
                _method_choices(context), value=["fast"], label="Methods", elem_id="compare-methods"
            )
            strengths = gr.CheckboxGroup(
                COMPARE_STRENGTHS, value=[0.0, 0.5, 1.0], label="Strengths", elem_id="compare-strengths"
            )
            with gr.Accordion("Advanced", open=False):
                request = {
                    name: _request_control(pipelines.get_request_parameter(name), "artfusion", context, "compare-")
                    for name in ("steps", "seed", "max_side")
                }
            with gr.Row():
                start = gr.Button("Compare", variant="primary", elem_id="compare-start", scale=3)
                cancel = gr.Button("Cancel", elem_id="compare-cancel", scale=1)
        with gr.Column(scale=6, min_width=320):
            status = gr.Markdown(
                "Each cell shows its scores and time; click one to open it in Stylize.", elem_id="compare-status"
            )
            grid = gr.Image(label="Grid", show_label=False, type="filepath", interactive=False, elem_id="compare-grid")
            cells = _thumbnails("compare-cells", "Cells (click to open in Stylize)", height=220)
            table = gr.Dataframe(
                label="Scores (↑ higher is better, ↓ lower is better; scores that could not be computed are left out)",
                interactive=False,
                elem_id="compare-table",
            )
            with gr.Row():
                grid_download = gr.DownloadButton("Download grid (PNG)", interactive=False, elem_id="compare-grid-png")
                zip_download = gr.DownloadButton("Download all (ZIP)", interactive=False, elem_id="compare-zip")
    with gr.Accordion("What the scores mean", open=False):
        gr.Markdown(pipelines.describe_scores())
    return CompareTab(
        content,
        styles,
        methods,
        strengths,
        request,
        start,
        cancel,
        status,
        grid,
        cells,
        table,
        grid_download,
        zip_download,
        gr.State([]),
    )


def _render_batch_panel() -> BatchPanel:
    with gr.Accordion("Many photos at once", open=False, elem_id="batch"):
        files = gr.File(
            label="Content photos (the style and settings above apply to each)",
            file_count="multiple",
            file_types=["image"],
            elem_id="batch-files",
        )
        start = gr.Button("Stylize all", elem_id="batch-start")
        status = gr.Markdown("", elem_id="batch-status")
        gallery = gr.Gallery(
            label="Results (click one to see it large)", columns=6, height=260, elem_id="batch-gallery"
        )
        download = gr.DownloadButton("Download all (ZIP)", interactive=False, elem_id="batch-download")
    return BatchPanel(files, start, status, gallery, download)


def _render_video_tab(context: StudioContext) -> VideoTab:
    """The clip and the style on the left with the settings; the preview and the video on the right."""
    method = "fast"  # frames per second matter most here; diffusion methods show their estimate first
    shown = [p for p in pipelines.REQUEST_PARAMETERS if p.kind not in ("image", "options")]
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=320):
            with gr.Row():
                video = gr.Video(  # the browser's picker takes videos only; GIFs go through the command line
                    label="Video (MP4, MOV, MKV or WebM)", sources=["upload"], elem_id="video-in"
                )
                style = _request_control(pipelines.get_request_parameter("style"), method, context, "video-")
            request = {p.name: _request_control(p, method, context, "video-") for p in shown if not p.advanced}
            settings = {p.name: _request_control(p, method, context, "video-") for p in pipelines.VIDEO_PARAMETERS}
            with gr.Accordion("Advanced", open=False):
                request.update({p.name: _request_control(p, method, context, "video-") for p in shown if p.advanced})
                random_seed = gr.Checkbox(True, label="Random seed", info="One seed serves every frame.")
                output_format = gr.Radio(
                    [(name[1:].upper(), name) for name in pipelines.VIDEO_OUTPUT_FORMATS if name in BROWSER_VIDEO],
                    value=".mp4",
                    label="Output format",
                    info="MP4 (H.264) plays everywhere; WebM (VP9); GIF has no sound.",
                )
            with gr.Row():
                estimate = gr.Button("Estimate time", elem_id="video-estimate", scale=1)
                start = gr.Button("Stylize video", variant="primary", elem_id="video-start", scale=2)
                cancel = gr.Button("Cancel", elem_id="video-cancel", scale=1)
        with gr.Column(scale=5, min_width=320):
            status = gr.Markdown("Cancel keeps the frames already made as a shorter video.", elem_id="video-status")
            preview = gr.Image(label="First frame", interactive=False, height=240, elem_id="video-preview")
            result = gr.Video(label="Stylized video", interactive=False, elem_id="video-result")
            result_gif = gr.Image(label="Stylized GIF", interactive=False, visible=False, elem_id="video-gif")
            download = gr.DownloadButton("Download video", interactive=False, elem_id="video-download")
    return VideoTab(
        video,
        style,
        request,
        settings,
        output_format,
        random_seed,
        estimate,
        start,
        cancel,
        status,
        preview,
        result,
        result_gif,
        download,
    )


def _render_method_options(tab: StylizeTab, context: StudioContext, default_method: str) -> None:
    """Each method's own options in a group shown only while that method is selected."""
    for name in pipelines.method_names():
        method = pipelines.get_method(name)
        if not method.options:
            continue
        with gr.Group(visible=name == default_method) as tab.option_groups[name]:
            gr.Markdown(f"**{method.label}**")
            for spec in method.options:
                control = tab.option_inputs[(name, spec.name)] = _option_control(spec, context)
                if spec.previews is not None:  # thumbnails to click, e.g. learned styles
                    previews = _thumbnails(f"{spec.name}-previews", f"{spec.label}: click to choose")
                    tab.option_previews.append((spec, control, previews))


def _render_learn_tab() -> LearnTab:
    gr.Markdown(
        "Teach InST a style from **one** painting. The fast preset takes a couple of minutes on a modern GPU; "
        "the paper preset follows the original recipe (6100 steps). A cancelled run resumes when you start "
        "it again with the same name. Learned styles appear below and in the Stylize tab (method InST)."
    )
    presets = pipelines.LEARN_PRESETS
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            image = gr.Image(
                label="Style image",
                type="filepath",
                image_mode=None,
                height=260,
                sources=["upload", "clipboard"],
                elem_id="learn-image",
            )
            name = gr.Textbox(label="Name", placeholder="e.g. starry-night", elem_id="learn-name")
            preset = gr.Radio(list(presets), value="fast", label="Preset")
            steps = gr.Number(
                presets["fast"].steps,
                label="Steps",
                precision=0,
                minimum=1,
                elem_id="learn-steps",
                info="The preset's number; change it to train shorter or longer.",
            )
            clip_mode = gr.Radio(
                list(pipelines.CLIP_MODES),
                value="paper",
                label="CLIP input",
                info="paper: correct preprocessing. code: the official code's quirk.",
            )
            resolution = gr.Number(
                pipelines.LEARN_RESOLUTION,
                label="Training resolution (px, square)",
                precision=0,
                minimum=32,
                maximum=1024,
                elem_id="learn-resolution",
            )
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="learn-start")
                cancel = gr.Button("Cancel", elem_id="learn-cancel")
        with gr.Column(scale=6):
            status = gr.Markdown("Nothing running.", elem_id="learn-status")
            plot = gr.LinePlot(x="step", y="loss", title="Training loss", height=260)
            library = _thumbnails("library", "Learned styles", height=220)
            library_list = gr.Markdown(elem_id="library-list")
    return LearnTab(
        image, name, preset, steps, clip_mode, resolution, start, cancel, status, plot, library, library_list
    )


# ---- handlers: translate widgets ↔ the public API, nothing more --------------------------------------------


def zero_gpu(function: Any, spaces_module: Any = None, environ: dict[str, str] | None = None) -> Any:
    """``spaces.GPU(duration=…)(function)`` on a ZeroGPU Space (SPACES_ZERO_GPU set), else ``function`` as is.
    The GPU time asked for is the method's own (``StyleMethod.gpu_seconds``): shorter requests get priority."""
    environ = os.environ if environ is None else environ
    if spaces_module is None or environ.get("SPACES_ZERO_GPU", "").lower() not in ("1", "true"):
        return function
    return spaces_module.GPU(duration=gpu_seconds)(function)


def gpu_seconds(request: StyleRequest, context: StudioContext, *_: Any) -> int:
    """The GPU time a ZeroGPU call asks for: the method's estimate for the request's steps."""
    method = pipelines.resolve_method(request.method, context)
    return method.gpu_seconds(request.steps or (method.steps.default if method.steps else 0))


def _run_locally(request: StyleRequest, context: StudioContext, report: Any, cancel: threading.Event) -> StyleResult:
    """The GPU work of a local request (on ZeroGPU this is what borrows the GPU)."""
    return pipelines.run(request, context=context, progress=report, cancel=cancel)


_run_locally = zero_gpu(_run_locally, spaces)


def _message(exc: BaseException, method: str | None = None) -> str:
    """What the person reads about a failure: the studio's own words, or one line naming an unexpected crash."""
    if isinstance(exc, StudioError):
        logger.warning("refused: %s", exc)
        return exc.for_front_end(FRONT_END)
    logger.error("unexpected failure", exc_info=exc)
    first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
    return (
        f"The {method or 'chosen'} method failed unexpectedly ({type(exc).__name__}: {first_line}). Your images and "
        "earlier results are kept; try again, use a smaller max side, or pick another method."
    )


def _failure(exc: BaseException, what: str, method: str | None = None) -> str:
    """The status line for a failure."""
    return f"**{what}:** {_message(exc, method)}"


class SessionCancels:
    """One cancel flag per browser session: armed at the click (before queueing, so a Cancel pressed while the
    work still waits counts too), set by the Cancel button, dropped when the work ends."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}

    def arm(self, request: gr.Request) -> threading.Event:
        event = self._events[request.session_hash] = threading.Event()
        return event

    def current(self, request: gr.Request) -> threading.Event:
        return self._events.setdefault(request.session_hash, threading.Event())

    def done(self, request: gr.Request) -> None:
        self._events.pop(request.session_hash, None)

    def cancel(self, request: gr.Request) -> str:
        event = self._events.get(request.session_hash)
        if event is None:
            return "Nothing is running."
        event.set()
        return "Cancelling at the next step…"


class StylizeHandlers:
    """The Stylize tab's event handlers (each takes its inputs by component, as one dict)."""

    def __init__(self, tab: StylizeTab, context: StudioContext) -> None:
        self.tab, self.context = tab, context
        self.cancels = SessionCancels()

    def request_from(self, values: dict[Any, Any]) -> tuple[StyleRequest, StudioContext]:
        tab = self.tab
        parameters = {name: values[control] for name, control in tab.request.items()}
        method = pipelines.get_method(parameters["method"])
        if parameters["content"] is None:
            raise pipelines.InvalidRequestError(
                "Add a content image first: upload one, paste it, take a photo, or pick an example."
            )
        if parameters["style"] is None and method.uses_style_image:
            raise pipelines.InvalidRequestError(
                "Add a style image first: upload or paste a painting, or pick an example."
            )
        if not method.uses_seed or values[tab.random_seed]:
            parameters["seed"] = None
        elif parameters["seed"] is None:
            raise pipelines.InvalidRequestError("Enter a seed, or tick 'Random seed'.")
        if method.steps is None:
            parameters["steps"] = None
        parameters["options"] = {
            option: values[widget]
            for (owner, option), widget in tab.option_inputs.items()
            if owner == method.name and values[widget] not in (None, "")
        }
        return StyleRequest(**parameters), self.context.with_overrides(backend=values[tab.run_on])

    def arm(self, request: gr.Request) -> str:
        """At the click, before queueing: a cancel flag for this session, and the last message cleared."""
        self.cancels.arm(request)
        return "Working…"

    def generate(self, values: dict[Any, Any], request: gr.Request, progress: gr.Progress = gr.Progress()) -> dict:
        tab = self.tab
        cancel = self.cancels.current(request)
        try:
            style_request, context = self.request_from(values)
            result = _run_locally(
                style_request, context, lambda done, total, text: progress((done, total), desc=text), cancel
            )
        except Exception as exc:  # the message goes to the status line; results, history and inputs stay
            method = values[tab.request["method"]]
            return {tab.status: _failure(exc, "Could not generate", method), **self.method_state(method)}
        finally:
            self.cancels.done(request)
        png, before = _save_with_before(result)
        meta = result.metadata
        entry = {"png": str(png), "before": str(before), "caption": meta.summary(), "metadata": meta.to_dict()}
        history = [entry, *values[tab.history]][:HISTORY_LIMIT]
        return {
            tab.comparison: (str(before), str(png)),
            tab.download: gr.update(value=str(png), interactive=True),
            tab.request["seed"]: meta.seed if meta.seed is not None else gr.skip(),
            tab.status: meta.summary(),
            tab.parameters: meta.to_dict(),
            tab.history: history,
            tab.gallery: [(h["png"], h["caption"]) for h in history],
            **self.method_state(meta.method),
        }

    def method_state(self, name: str) -> dict:
        """The method menu, help and Retry button as the remembered availability says."""
        tab = self.tab
        unavailable = name in self.context.availability.unavailable()
        return {
            tab.request["method"]: gr.update(choices=_method_choices(self.context)),
            tab.method_help: _method_help(name, self.context),
            tab.retry: gr.update(visible=unavailable),
        }

    def method_changed(self, name: str) -> dict:
        """Everything that follows the chosen method: help, steps range, seed, style picker, its options."""
        tab, method = self.tab, pipelines.get_method(name)
        steps, seed, random_seed = _steps_and_seed(method)
        style_label = "Style" if method.uses_style_image else "Style (not used: InST applies a learned style, below)"
        return {
            tab.request["steps"]: steps,
            tab.request["seed"]: seed,
            tab.random_seed: random_seed,
            tab.request["style"]: gr.update(label=style_label),
            **{group: gr.update(visible=owner == name) for owner, group in tab.option_groups.items()},
            **self.method_state(name),
        }

    def retry(self, name: str) -> dict:
        pipelines.retry_method(name, context=self.context)
        return {self.tab.status: f"{name} will be tried again on the next Generate.", **self.method_state(name)}

    def reopen(self, history: list[dict], evt: gr.SelectData) -> dict:
        """A history item back in the main view, with its parameters in the controls (seed fixed)."""
        return self.show(history[evt.index])

    def show(self, entry: dict) -> dict:
        """A saved result (``png``, ``before``, ``metadata``) in the main view, its parameters in the controls."""
        tab = self.tab
        meta = pipelines.ResultMetadata.from_dict(entry["metadata"])
        controls = {name: gr.update(value=meta.parameters[name]) for name in ("method", "strength", "max_side")}
        if meta.steps:
            controls["steps"] = gr.update(value=meta.steps)
        if meta.seed is not None:
            controls["seed"] = meta.seed
        return {
            tab.comparison: (entry["before"], entry["png"]),
            tab.download: gr.update(value=entry["png"], interactive=True),
            tab.status: meta.summary(),
            tab.parameters: entry["metadata"],
            tab.random_seed: False if meta.seed is not None else gr.skip(),
            **{tab.request[name]: update for name, update in controls.items()},
        }

    @staticmethod
    def check_upload(role: str) -> Any:
        """An upload handler that says at once when a file is not a picture this app can read, and takes it out
        of the input (so the next Generate does not trip over it). It runs without Gradio's preprocessing, which
        would fail on such a file before any handler could explain it."""

        def check(upload: dict | None) -> tuple[Any, Any]:
            path = (upload or {}).get("path")
            if not path:
                return gr.skip(), gr.skip()
            try:
                pipelines.load_image(path, role=role)
            except StudioError as exc:
                return f"**Could not use that file:** {exc.for_front_end(FRONT_END)}", None
            return f"{role.capitalize()} image ready.", gr.skip()

        return check


def _wire_stylize(demo: gr.Blocks, tab: StylizeTab, handlers: StylizeHandlers, context: StudioContext) -> None:
    """Every Stylize event, in one place."""
    method = tab.request["method"]
    follows_method = [
        tab.request["steps"],
        tab.request["seed"],
        tab.random_seed,
        tab.request["style"],
        method,
        tab.method_help,
        tab.retry,
        *tab.option_groups.values(),
    ]
    method.change(handlers.method_changed, method, follows_method, api_visibility="private")
    demo.load(handlers.method_changed, method, follows_method, api_visibility="private")  # the page opens in sync
    tab.retry.click(handlers.retry, method, [tab.status, method, tab.method_help, tab.retry], api_visibility="private")
    for role in ("content", "style"):
        image = tab.request[role]
        image.upload(handlers.check_upload(role), image, [tab.status, image], **UPLOAD_CHECK)
    concurrency = REMOTE_CONCURRENCY if context.backend == "modal" else _local_concurrency(context)
    tab.generate.click(handlers.arm, None, tab.status, queue=False, api_visibility="private").then(
        handlers.generate,
        {*tab.request.values(), tab.random_seed, tab.history, tab.run_on, *tab.option_inputs.values()},
        [
            tab.comparison,
            tab.download,
            tab.request["seed"],
            tab.status,
            tab.parameters,
            tab.history,
            tab.gallery,
            method,
            tab.method_help,
            tab.retry,
        ],
        api_visibility="private",
        concurrency_id="stylize",
        concurrency_limit=concurrency,
        show_progress="minimal",  # the bar over the result; the previous picture stays visible beneath it
        show_progress_on=[tab.comparison],
    )
    tab.cancel.click(handlers.cancels.cancel, None, tab.status, api_visibility="private", queue=False)
    reopened = [tab.comparison, tab.download, tab.status, tab.parameters, tab.random_seed]
    reopened += [tab.request[name] for name in ("method", "strength", "max_side", "steps", "seed")]
    tab.gallery.select(handlers.reopen, tab.history, reopened, api_visibility="private")
    for _, control, previews in tab.option_previews:
        previews.select(_pick_preview, None, control, api_visibility="private")


def _pick_preview(evt: gr.SelectData) -> str:
    """A clicked thumbnail selects its value (the caption is the value)."""
    return evt.value["caption"] if isinstance(evt.value, dict) else str(evt.value)


def _local_concurrency(context: StudioContext) -> int:
    return GPU_CONCURRENCY if pipelines.resolve_device(context.device).startswith("cuda") else CPU_CONCURRENCY


class CompareHandlers:
    """The Compare tab: ``pipelines.compare`` over the chosen methods × strengths × styles, shown as a grid, a
    gallery of cells (each opens in the Stylize tab with its parameters) and a score table."""

    def __init__(self, tab: CompareTab, stylizing: StylizeHandlers, tabs: gr.Tabs) -> None:
        self.tab, self.stylizing, self.tabs = tab, stylizing, tabs
        self.context = stylizing.context
        self.cancels = SessionCancels()

    def arm(self, request: gr.Request) -> str:
        self.cancels.arm(request)
        return "Working…"

    def run(self, values: dict[Any, Any], request: gr.Request, progress: gr.Progress = gr.Progress()) -> dict:
        tab, cancel = self.tab, self.cancels.current(request)
        try:
            if values[tab.content] is None:
                raise pipelines.InvalidRequestError("Add a content photo first.")
            styles = [str(path) for path in values[tab.styles] or []]
            if not styles:
                raise pipelines.InvalidRequestError("Add one or more style pictures to compare.")
            if not values[tab.methods] or not values[tab.strengths]:
                raise pipelines.InvalidRequestError("Tick at least one method and one strength.")
            comparison = pipelines.compare(
                values[tab.content],
                styles,
                methods=values[tab.methods],
                strengths=sorted(values[tab.strengths]),
                steps=values[tab.request["steps"]],
                seed=values[tab.request["seed"]] or None,
                max_side=values[tab.request["max_side"]],
                context=self.context,
                progress=lambda done, total, text: progress((done, total), desc=text),
                cancel=cancel,
                front_end=FRONT_END,
            )
        except Exception as exc:  # what was shown before stays
            return {tab.status: _failure(exc, "Could not compare")}
        finally:
            self.cancels.done(request)
        return self.show(comparison, values[tab.content], {Path(path).name: path for path in styles})

    def show(self, comparison: Any, content_path: str, style_paths: dict[str, str]) -> dict:
        tab = self.tab
        folder = RESULTS_DIR / f"compare-{uuid.uuid4().hex[:12]}"
        comparison.save(folder)  # each picture encoded and the grid drawn once: the ZIP packs these files
        archive = shutil.make_archive(str(folder), "zip", folder)
        before = folder / "before.jpg"  # the slider's before-picture, display only (not in the ZIP)
        comparison.content.save(before, quality=92)
        entries, gallery = [], []
        for cell in comparison.cells:
            if cell.ok:
                png = folder / cell.png
                entries.append(
                    {
                        "content": content_path,
                        "style": style_paths.get(cell.style),
                        "png": str(png),
                        "before": str(before),
                        "caption": cell.result.metadata.summary(),
                        "metadata": cell.metadata,
                    }
                )
                gallery.append((str(png), _cell_caption(cell)))
        reasons: dict[tuple[str, str], int] = {}  # one line per method and reason, not one per cell
        for cell in comparison.failures:
            reasons[(cell.method, cell.error)] = reasons.get((cell.method, cell.error), 0) + 1
        failed = [f"  \n- **{method}** ({count} cells): {error}" for (method, error), count in reasons.items()]
        head = f"{len(entries)} of {len(comparison.cells)} cells made" + (
            " (cancelled)" if comparison.cancelled else ""
        )
        return {
            tab.status: head + "." + "".join(failed),
            tab.grid: str(folder / "grid.png"),
            tab.cells: gallery,
            tab.table: _score_table(comparison),
            tab.grid_download: gr.update(value=str(folder / "grid.png"), interactive=True),
            tab.zip_download: gr.update(value=str(archive), interactive=True),
            tab.entries: entries,
        }

    def open_cell(self, entries: list[dict], evt: gr.SelectData) -> dict:
        """A clicked cell in the Stylize tab's main view, with its parameters in the controls."""
        entry, request = entries[evt.index], self.stylizing.tab.request
        pictures = {request["content"]: entry["content"], request["style"]: entry["style"] or gr.skip()}
        return {**self.stylizing.show(entry), **pictures, self.tabs: gr.Tabs(selected="stylize")}


def _cell_caption(cell: Any) -> str:
    shown = [f"{name} {value:.2f}" for name, value in cell.scores.items() if value is not None][:3]
    return f"{cell.method} · {cell.strength:.2f} · {cell.seconds:.1f} s · " + ", ".join(shown)


def _score_table(comparison: Any) -> Any:
    import pandas as pd

    measured = [n for n in comparison.score_names if any(c.scores.get(n) is not None for c in comparison.cells)]
    arrows = {"higher": "↑", "lower": "↓"}
    rows = []
    for cell in comparison.cells:
        row = {"style": cell.style, "method": cell.method, "strength": cell.strength, "seconds": cell.seconds}
        row |= {f"{name} {arrows[pipelines.SCORES[name].better]}": cell.scores.get(name) for name in measured}
        rows.append(row | {"made": "yes" if cell.ok else "no"})
    return pd.DataFrame(rows).round(3)


def _wire_compare(tab: CompareTab, handlers: CompareHandlers) -> None:
    """Every Compare event, in one place."""
    stylize = handlers.stylizing.tab
    tab.start.click(handlers.arm, None, tab.status, queue=False, api_visibility="private").then(
        handlers.run,
        {tab.content, tab.styles, tab.methods, tab.strengths, *tab.request.values()},
        [tab.status, tab.grid, tab.cells, tab.table, tab.grid_download, tab.zip_download, tab.entries],
        api_visibility="private",
        concurrency_id="stylize",
        show_progress_on=[tab.grid],
    )
    tab.cancel.click(handlers.cancels.cancel, None, tab.status, api_visibility="private", queue=False)
    tab.content.upload(StylizeHandlers.check_upload("content"), tab.content, [tab.status, tab.content], **UPLOAD_CHECK)
    shown = [stylize.comparison, stylize.download, stylize.status, stylize.parameters, stylize.random_seed]
    shown += [stylize.request[name] for name in ("content", "style", "method", "strength", "max_side", "steps", "seed")]
    tab.cells.select(handlers.open_cell, tab.entries, [*shown, handlers.tabs], api_visibility="private")


class BatchHandlers:
    """Many content pictures in the Stylize tab's style and settings: ``pipelines.stylize_batch`` into a folder of
    this session's results, shown as a gallery and offered as one ZIP (the PNGs and the manifest)."""

    def __init__(self, stylizing: StylizeHandlers) -> None:
        self.stylizing = stylizing
        self.panel = stylizing.tab.batch

    def run(self, values: dict[Any, Any], request: gr.Request, progress: gr.Progress = gr.Progress()) -> dict:
        panel, tab = self.panel, self.stylizing.tab
        files = [str(path) for path in values[panel.files] or []]  # gr.File gives paths
        cancel = self.stylizing.cancels.current(request)
        try:
            if not files:
                raise pipelines.InvalidRequestError("Add some content photos first (several at once are fine).")
            style_request, context = self.stylizing.request_from({**values, tab.request["content"]: files[0]})
            parameters = {p.name: getattr(style_request, p.name) for p in pipelines.REQUEST_PARAMETERS}
            del parameters["content"], parameters["style"]
            out_dir = RESULTS_DIR / f"batch-{uuid.uuid4().hex[:12]}"
            summary = pipelines.stylize_batch(
                files,
                style_request.style,
                out_dir,
                context=context,
                progress=lambda done, total, text: progress((done, total), desc=text),
                cancel=cancel,
                **parameters,
            )
        except Exception as exc:  # the single-picture result and history stay as they were
            return {panel.status: _failure(exc, "Could not stylize the batch", values[tab.request["method"]])}
        finally:
            self.stylizing.cancels.done(request)
        order = {path: index for index, path in enumerate(files)}
        entries = sorted(pipelines.read_manifest(out_dir), key=lambda e: order.get(e["input"], len(order)))
        made = [(e["output"], Path(e["input"]).name) for e in entries if e.get("output") and e["status"] == "done"]
        archive = shutil.make_archive(str(out_dir), "zip", out_dir)
        failures = "".join(f"  \n- {Path(name).name}: {error}" for name, error in summary.failures)
        counts = f"{summary.done} of {summary.total} done" + (f", {summary.failed} failed" if summary.failed else "")
        stopped = f", {summary.not_run} not started (cancelled)" if summary.not_run else ""
        return {
            panel.status: f"{counts}{stopped} in {_duration(summary.seconds)}.{failures}",
            panel.gallery: made,
            panel.download: gr.update(value=archive, interactive=bool(made)),
        }


def _wire_batch(tab: StylizeTab, stylizing: StylizeHandlers) -> None:
    """The batch panel's events: the Stylize tab's settings and Cancel apply."""
    panel, handlers = tab.batch, BatchHandlers(stylizing)
    panel.start.click(stylizing.arm, None, panel.status, queue=False, api_visibility="private").then(
        handlers.run,
        {panel.files, *tab.request.values(), tab.random_seed, tab.run_on, *tab.option_inputs.values()},
        [panel.status, panel.gallery, panel.download],
        api_visibility="private",
        concurrency_id="stylize",
        show_progress_on=[panel.gallery],
    )


class VideoHandlers:
    """The Video tab's handlers: ``pipelines.stylize_video`` in a worker thread, its progress relayed to the page
    as it comes (frames done, time left, the first frame), Cancel keeping what was made."""

    def __init__(self, tab: VideoTab, context: StudioContext) -> None:
        self.tab, self.context = tab, context
        self.cancels = SessionCancels()

    def arm(self, request: gr.Request) -> str:
        self.cancels.arm(request)
        return "Starting…"

    def job_from(self, values: dict[Any, Any]) -> dict[str, Any]:
        """``stylize_video``'s arguments from the widgets (clear errors for what is missing)."""
        tab = self.tab
        job = {name: values[control] for name, control in {**tab.request, **tab.video_settings}.items()}
        method = pipelines.get_method(job["method"])
        if not values[tab.video]:
            raise pipelines.InvalidRequestError("Add a video first: upload an MP4, MOV, MKV or WebM file.")
        if values[tab.style] is None and method.uses_style_image:
            raise pipelines.InvalidRequestError("Add a style image first: upload or paste a painting.")
        if not method.uses_seed or values[tab.random_seed]:
            job["seed"] = None
        if method.steps is None:
            job["steps"] = None
        return {"source": values[tab.video], "style": values[tab.style], **job}

    @staticmethod
    def check_upload(upload: dict | None) -> tuple[Any, Any]:
        """Says at once when an uploaded file is not a video the studio can read, and takes it out."""
        path = (upload or {}).get("path")
        if not path:
            return gr.skip(), gr.skip()
        try:
            info = pipelines.probe_video(path)
        except StudioError as exc:
            return f"**Could not use that file:** {exc.for_front_end(FRONT_END)}", None
        ready = f"Video ready: {info.width}×{info.height}, {info.duration_s:.1f} s, {info.frame_count} frames."
        return ready, gr.skip()

    def estimate(self, values: dict[Any, Any]) -> dict:
        tab = self.tab
        try:
            job = self.job_from(values)
            estimate = pipelines.estimate_video(
                **job, output="estimate" + values[tab.output_format], context=self.context
            )
        except Exception as exc:
            return {tab.status: _failure(exc, "Could not estimate", values[tab.request["method"]])}
        return {tab.status: f"Estimated: {estimate.summary()}.", tab.preview: estimate.preview}

    def render(self, values: dict[Any, Any], request: gr.Request) -> Any:
        """A generator: one page update per progress event (at most a few a second), then the video."""
        tab, cancel = self.tab, self.cancels.current(request)
        suffix = values[tab.output_format]
        try:
            job = self.job_from(values)
            if pipelines.get_method(job["method"]).steps is not None:  # slow methods: the honest estimate first
                estimate = pipelines.estimate_video(**job, output="estimate" + suffix, context=self.context)
                yield {tab.status: f"Estimated: {estimate.summary()}. Starting…", tab.preview: estimate.preview}
            output = RESULTS_DIR / f"video-{uuid.uuid4().hex[:12]}{suffix}"
            run = _VideoRun(job, output, self.context, cancel)
            for event in run.events():
                yield {
                    tab.status: _video_progress_line(event),
                    tab.preview: event.preview if event.preview is not None else gr.skip(),
                }
            result = run.result()
        except Exception as exc:  # the previous video, the inputs and the settings stay
            self.cancels.done(request)
            yield {tab.status: _failure(exc, "Could not stylize the video", values[tab.request["method"]])}
            return
        self.cancels.done(request)
        if result.path is None:
            yield {tab.status: "Cancelled before the first frame: nothing was made."}
            return
        gif = result.path.suffix == ".gif"
        yield {
            tab.status: _video_summary(result),
            tab.result: gr.update(value=None if gif else str(result.path), visible=not gif),
            tab.result_gif: gr.update(value=str(result.path) if gif else None, visible=gif),
            tab.download: gr.update(value=str(result.path), interactive=True),
        }


class _VideoRun:
    """``stylize_video`` in a thread, its progress events handed over through a queue (the page's generator
    reads them; the newest wins when several arrive between two reads)."""

    def __init__(self, job: dict[str, Any], output: Path, context: StudioContext, cancel: threading.Event) -> None:
        self._events: queue.Queue = queue.Queue()
        self._outcome: dict[str, Any] = {}
        arguments = {**job, "output": output, "context": context, "cancel": cancel, "progress": self._events.put}
        self._thread = threading.Thread(target=self._work, args=(arguments,), name="video", daemon=True)
        self._thread.start()

    def _work(self, arguments: dict[str, Any]) -> None:
        try:
            self._outcome["result"] = pipelines.stylize_video(**arguments)
        except BaseException as exc:
            self._outcome["error"] = exc
        finally:
            self._events.put(None)

    def events(self) -> Any:
        last_shown = 0.0
        while (event := self._events.get()) is not None:
            if event.preview is not None or time.monotonic() - last_shown > VIDEO_UPDATE_S:
                last_shown = time.monotonic()
                yield event

    def result(self) -> Any:
        self._thread.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["result"]


def _video_progress_line(event: Any) -> str:
    left = f", about {_duration(event.seconds_left)} left" if event.frames_done > 1 else ""
    return f"Frame {event.frames_done} of {event.frames_total}{left}. Cancel keeps what is done."


def _video_summary(result: Any) -> str:
    made = f"{result.frames_done} frames at {result.size[0]}×{result.size[1]}"
    pace = f"in {_duration(result.seconds)} ({result.frames_per_second:.1f} frames/s)"
    cuts = f", {len(result.scene_cuts)} scene cut(s)" if result.scene_cuts else ""
    sound = ", with sound" if result.has_audio else ""
    if result.cancelled:
        return f"**Cancelled:** kept the first {made} {pace}{sound}."
    return f"Done: {made} {pace}{cuts}{sound}."


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _wire_video(demo: gr.Blocks, tab: VideoTab, handlers: VideoHandlers) -> None:
    """Every Video event, in one place."""
    method = tab.request["method"]
    follows_method = [tab.request["steps"], tab.request["seed"], tab.random_seed]
    follow = {"fn": lambda name: _steps_and_seed(pipelines.get_method(name)), "api_visibility": "private"}
    method.change(inputs=method, outputs=follows_method, **follow)
    demo.load(inputs=method, outputs=follows_method, **follow)
    inputs = {tab.video, tab.style, tab.output_format, tab.random_seed, *tab.request.values()}
    inputs |= set(tab.video_settings.values())
    tab.estimate.click(
        handlers.estimate, inputs, [tab.status, tab.preview], api_visibility="private", concurrency_id="stylize"
    )
    tab.start.click(handlers.arm, None, tab.status, queue=False, api_visibility="private").then(
        handlers.render,
        inputs,
        [tab.status, tab.preview, tab.result, tab.result_gif, tab.download],
        api_visibility="private",
        concurrency_id="video",
        concurrency_limit=1,
        show_progress="hidden",  # the status line counts the frames
    )
    tab.cancel.click(handlers.cancels.cancel, None, tab.status, api_visibility="private", queue=False)
    tab.style.upload(StylizeHandlers.check_upload("style"), tab.style, [tab.status, tab.style], **UPLOAD_CHECK)
    tab.video.upload(handlers.check_upload, tab.video, [tab.status, tab.video], **UPLOAD_CHECK)


def _steps_and_seed(method: pipelines.StyleMethod) -> tuple[Any, Any, Any]:
    """The steps slider, seed box and random-seed tick as ``method`` wants them (both tabs follow the method)."""
    spec = method.steps
    steps = (
        gr.update(
            minimum=spec.minimum,
            maximum=spec.maximum,
            value=spec.default,
            interactive=True,
            info=f"More steps: finer detail, slower. Default {spec.default}.",
        )
        if spec
        else gr.update(minimum=1, maximum=100, value=1, interactive=False, info=NO_STEPS)
    )
    seed = gr.update(interactive=method.uses_seed, info=SEED_INFO if method.uses_seed else NO_SEED)
    return steps, seed, gr.update(interactive=method.uses_seed)


class LearnHandlers:
    """The Learn tab's handlers: they drive ``pipelines.learn_style`` (here or on Modal) and show its events."""

    def __init__(self, tab: LearnTab, context: StudioContext) -> None:
        self.tab, self.context = tab, context
        self.cancels = SessionCancels()

    def arm(self, request: gr.Request) -> str:
        self.cancels.arm(request)
        return "Starting…"

    def learn(self, values: dict[Any, Any], request: gr.Request, progress: gr.Progress = gr.Progress()) -> Any:
        tab = self.tab
        points: list[tuple[int, float]] = []
        cancel = self.cancels.current(request)
        try:
            if values[tab.image] is None:
                raise pipelines.InvalidRequestError("Add the style image to learn from.")
            if not (values[tab.name] or "").strip():
                raise pipelines.InvalidRequestError("Give the style a name.")
            steps = values[tab.steps]
            run = pipelines.learn_style(
                values[tab.image],
                values[tab.name],
                preset=values[tab.preset],
                steps=int(steps) if steps else None,
                clip_mode=values[tab.clip_mode],
                resolution=int(values[tab.resolution] or pipelines.LEARN_RESOLUTION),
                context=self.context,
            )
            for event in run:
                if cancel.is_set():
                    run.cancel()  # the run ends with a "cancelled" event at its next step
                if event.kind == "step":
                    points.append((event.step, event.loss))
                    progress((event.step, event.total), desc=f"Learning: step {event.step}/{event.total}")
                    if event.step == event.total or event.step % 5 == 0:
                        yield {
                            tab.status: f"Step {event.step}/{event.total}, loss {event.loss:.4f}",
                            tab.plot: _loss_frame(points),
                        }
                elif event.kind == "loading":
                    yield {tab.status: event.message}
                elif event.kind == "cancelled":
                    yield {tab.status: f"Cancelled: {event.message}", tab.plot: _loss_frame(points)}
                else:
                    entry = event.entry
                    yield {
                        tab.status: (
                            f"Learned **{entry.name}** ({entry.steps} steps, final loss {entry.final_loss}). "
                            "Pick it in the Stylize tab: method InST, Advanced → Learned style."
                        ),
                        tab.plot: _loss_frame(points),
                        **self.library(),
                    }
        except Exception as exc:
            yield {tab.status: _failure(exc, "Could not learn the style")}
        finally:
            self.cancels.done(request)

    def library(self) -> dict:
        """The learned styles: thumbnails from a local library, names from the remote one."""
        tab = self.tab
        if self.context.backend == "modal":
            try:
                names = [entry["name"] for entry in pipelines.ModalBackend().styles()]
            except StudioError as exc:
                return {tab.library: [], tab.library_list: f"Could not list the remote styles: {exc}"}
            return {tab.library: [], tab.library_list: "Learned styles (Modal): " + (", ".join(names) or "none yet")}
        library = pipelines.style_library(self.context)
        thumbnails = [(path, entry.name) for path, entry in library.thumbnails()]
        return {
            tab.library: thumbnails,
            tab.library_list: "" if thumbnails else f"No learned styles yet in {library.root}.",
        }

    @staticmethod
    def preset_steps(preset: str) -> int:
        return pipelines.LEARN_PRESETS[preset].steps


def _loss_frame(points: list[tuple[int, float]]) -> Any:
    import pandas as pd

    return pd.DataFrame(points, columns=["step", "loss"])


def _wire_learn(tab: LearnTab, handlers: LearnHandlers) -> None:
    """Every Learn-a-style event, in one place."""
    tab.preset.change(handlers.preset_steps, tab.preset, tab.steps, api_visibility="private")
    tab.start.click(handlers.arm, None, tab.status, queue=False, api_visibility="private").then(
        handlers.learn,
        {tab.image, tab.name, tab.preset, tab.steps, tab.clip_mode, tab.resolution},
        [tab.status, tab.plot, tab.library, tab.library_list],
        api_visibility="private",
        concurrency_id="learn",
        concurrency_limit=1,
    )
    tab.cancel.click(handlers.cancels.cancel, None, tab.status, api_visibility="private", queue=False)
    tab.image.upload(
        StylizeHandlers.check_upload("style"), tab.image, [tab.status, tab.image], api_visibility="private"
    )


def _wire_live_choices(
    demo: gr.Blocks, stylize_tab: gr.Tab, tab: StylizeTab, learning: LearnHandlers, context: StudioContext
) -> None:
    """What changes between visits: learned styles (choices, thumbnails) and methods marked unavailable."""

    def refresh() -> dict:
        updates: dict = {tab.request["method"]: gr.update(choices=_method_choices(context))}
        for spec, control, previews in tab.option_previews:
            updates[control] = gr.update(choices=spec.suggestions(context))
            updates[previews] = spec.previews(context) if context.backend == "local" else []
        return {**updates, **learning.library()}

    outputs = [tab.request["method"], learning.tab.library, learning.tab.library_list]
    for _, control, previews in tab.option_previews:
        outputs += [control, previews]
    demo.load(refresh, None, outputs, api_visibility="private")  # on every visit
    stylize_tab.select(refresh, None, outputs, api_visibility="private")  # and after learning a style


# ---- the HTTP API: every endpoint, registered here ----------------------------------------------------------


def _api_function(
    name: str, doc: str, call: Any, *, drop: tuple[str, ...] = (), extra: tuple[tuple[inspect.Parameter, str], ...] = ()
) -> Any:
    """An API function whose signature and parameter docs are generated from the request schema (plus ``extra``
    (parameter, description) pairs after the content), so Gradio's API page documents every parameter."""
    declared, docs = [], []
    for param in pipelines.REQUEST_PARAMETERS:
        if param.name in drop:
            continue
        annotation = FileData if param.kind == "image" else param.python_type
        default = inspect.Parameter.empty if param.name == "content" else param.default
        declared.append(
            inspect.Parameter(
                param.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation
            )
        )
        if param.kind == "image":
            docs.append(f"    {param.name}: {param.help.split(' (')[0]}, an image file (gradio_client.handle_file).")
        else:
            docs.append(f"    {param.name}: {param.help}.")
        if param.name == "content":
            declared += [parameter for parameter, _ in extra]
            docs += [f"    {parameter.name}: {description}." for parameter, description in extra]
    signature = inspect.Signature(declared, return_annotation=FileData)

    def endpoint(*args: Any, **kwargs: Any) -> FileData:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return call(dict(bound.arguments))

    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__signature__ = signature
    endpoint.__annotations__ = {p.name: p.annotation for p in declared} | {"return": FileData}
    endpoint.__doc__ = (
        f"{doc}\n\nParameters:\n" + "\n".join(docs) + "\n\nReturns:\n    The PNG, with every parameter inside."
    )
    return endpoint


def _describe_api_parameters(demo: gr.Blocks, dependency: Any, fn: Any) -> None:
    """Show each parameter's documented meaning on the "Use via API" page. Gradio 6.31 shows only a placeholder
    there for ``gr.api`` endpoints; its input components carry an ``additional_description`` it does display
    (``_api_info``, not public API: skipped if absent; ``tests/test_app.py`` notices if it stops working)."""
    from gradio import utils

    _, descriptions, _ = utils.get_function_description(fn)
    inputs = demo.fns[dependency["id"]].inputs
    for (name, *_), component in zip(utils.get_function_params(fn), inputs, strict=False):
        info = getattr(component, "_api_info", None)
        if isinstance(info, dict) and descriptions.get(name):
            component._api_info = {**info, "additional_description": descriptions[name]}


def _register_api(demo: gr.Blocks, context: StudioContext, default_method: str) -> None:
    """``/stylize``, ``/styles`` and ``/apply_style``; they run where the context says (here or on Modal)."""
    concurrency = REMOTE_CONCURRENCY if context.backend == "modal" else _local_concurrency(context)

    def run(values: dict[str, Any]) -> FileData:
        values = {**values, "content": _upload_path(values["content"], "content")}
        if values.get("style") is not None:
            values["style"] = _upload_path(values["style"], "style")
        try:
            result = pipelines.run(StyleRequest(**values), context=context)
        except Exception as exc:  # an API client gets the same words as the page, as a gradio_client AppError
            raise gr.Error(_message(exc, values.get("method")), print_exception=False) from None
        png = _save(result)
        return FileData(path=str(png), orig_name=png.name, mime_type="image/png")

    def apply_style(values: dict[str, Any]) -> FileData:
        options = {**(values.pop("options") or {}), "style_name": values.pop("style_name")}
        return run({**values, "style": None, "method": "inst", "options": options})

    style_name = inspect.Parameter("style_name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)
    endpoints = {
        "stylize": _api_function("stylize", "Stylize `content` in the style of `style`.", run),
        "apply_style": _api_function(
            "apply_style",
            "Apply a learned InST style (see /styles) to `content`.",
            apply_style,
            drop=("style", "method"),
            extra=((style_name, "the learned style's name or slug (see /styles)"),),
        ),
    }
    for name, endpoint in endpoints.items():
        dependency = gr.api(endpoint, api_name=name, concurrency_id="stylize", concurrency_limit=concurrency)
        _describe_api_parameters(demo, dependency, endpoint)

    def compare(
        content: FileData,
        styles: list[FileData],
        methods: list[str] | None = None,
        strengths: list[float] | None = None,
        steps: int | None = None,
        seed: int | None = None,
    ) -> FileData:
        """Compare methods and strengths on one photo with one or more styles, each picture scored.

        Parameters:
            content: the photo, an image file (gradio_client.handle_file).
            styles: one or more style pictures (a list of handle_file).
            methods: the methods to compare (default ["fast"]).
            strengths: the strengths to compare (default [0, 0.5, 1]).
            steps: diffusion steps for the methods that have them (default: each method's own).
            seed: one seed for every cell (default: drawn once).

        Returns:
            A ZIP: grid.png, each cell's PNG (every parameter inside) and scores.json (a list of cells with
            method, strength, style, seconds, scores and whether higher or lower is better).
        """
        try:
            comparison = pipelines.compare(
                _upload_path(content, "content"),
                [_upload_path(style, "style") for style in styles or []],
                methods=methods or ["fast"],
                strengths=strengths if strengths else [0.0, 0.5, 1.0],
                steps=steps,
                seed=seed,
                context=context,
                front_end=FRONT_END,
            )
        except Exception as exc:
            raise gr.Error(_message(exc), print_exception=False) from None
        folder = RESULTS_DIR / f"compare-{uuid.uuid4().hex[:12]}"
        archive = comparison.save_zip(folder.with_suffix(".zip"))
        return FileData(path=str(archive), orig_name="comparison.zip", mime_type="application/zip")

    gr.api(compare, api_name="compare", concurrency_id="stylize", concurrency_limit=concurrency)

    def styles() -> list[dict]:
        """The learned InST styles: name, slug, source, CLIP mode, steps, final loss, created."""
        if context.backend == "modal":
            return pipelines.ModalBackend().styles()
        return [asdict(entry) for entry in pipelines.style_library(context).list()]

    gr.api(styles, api_name="styles", queue=False)


def _upload_path(file: Any, role: str) -> str:
    """The server-side path of an uploaded file sent as FileData (what ``gradio_client.handle_file`` makes)."""
    path = file.get("path") if isinstance(file, dict) else getattr(file, "path", None)
    if not isinstance(path, str) or not path:
        raise gr.Error(f"{role} must be an image file; send it with gradio_client.handle_file('picture.jpg').")
    return path


# ---- result files ---------------------------------------------------------------------------------------------


def _save(result: StyleResult) -> Path:
    """Write the result PNG (with its parameters) to a folder of its own; return its path."""
    meta = result.metadata
    seed = f"-seed{meta.seed}" if meta.seed is not None else ""
    return result.save(RESULTS_DIR / uuid.uuid4().hex / f"stylized-{meta.method}{seed}.png")


def _save_with_before(result: StyleResult) -> tuple[Path, Path]:
    """The result PNG and, beside it, the before-picture for the comparison slider. The before-picture is for
    display only, so it is a JPEG: encoding it as PNG cost 90 ms of a fast-engine request's 160."""
    png = _save(result)
    before = png.parent / "content.jpg"
    (result.content or result.image).save(before, quality=92)
    return png, before


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


# ---- the edge: flags and environment → settings → the app -----------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Style Studio: diffusion style transfer in the browser.")
    env = os.environ
    parser.add_argument(
        "--host",
        default=env.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to listen on (0.0.0.0 to serve your network; default 127.0.0.1)",
    )
    parser.add_argument("--port", type=int, default=int(env.get("GRADIO_SERVER_PORT", "7860")), help="default 7860")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--method",
        choices=pipelines.method_names(),
        default=None,
        help="method selected when the page opens (default: the best this machine can run)",
    )
    parser.add_argument("--device", default=None, help="auto (CUDA, else MPS, else CPU), cuda, cuda:N, mps or cpu")
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="METHOD=PATH_OR_REPO",
        help="weights for a method, e.g. artfusion=/models/artfusion_r12_step=317673.ckpt "
        "or inst=SD_FOLDER::CLIP_FOLDER (repeatable)",
    )
    parser.add_argument(
        "--score-weights",
        action="append",
        default=[],
        metavar="MODEL=LOCATION",
        help="Compare tab: a learned score's weights, csd, lpips or dino = a folder or Hub repo, or off (repeatable)",
    )
    parser.add_argument("--library", default=None, metavar="DIR", help="the InST style library folder")
    parser.add_argument(
        "--backend",
        choices=pipelines.BACKENDS,
        default=None,
        help="where methods run: auto (default) = local CUDA, else Modal if configured, else this CPU",
    )
    parser.add_argument("--compile", nargs="?", const="on", default=None, metavar="MODE", help=pipelines.COMPILE_HELP)
    parser.add_argument("--precision", choices=pipelines.PRECISIONS, default=None, help=pipelines.PRECISION_HELP)
    parser.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="require a login (repeatable); or set STYLE_STUDIO_AUTH_FILE to a file of USER:PASSWORD lines",
    )
    return parser


def context_from(args: argparse.Namespace) -> StudioContext:
    """The app's StudioContext: its flags over the environment; weights that cannot exist fail here."""
    context = StudioContext.from_environment(
        device=args.device,
        backend=args.backend,
        compile=args.compile,
        precision=args.precision,
        library_dir=args.library,
        weights=pipelines.parse_weights(args.weights, "--weights"),
        score_weights=pipelines.parse_score_weights(args.score_weights, "--score-weights"),
    )
    for name, location in context.weights.items():
        pipelines.get_method(name).check_weights(location)
    if context.device != "auto":
        pipelines.resolve_device(context.device)
    return context


def _preload(method: str | None, context: StudioContext) -> None:
    """Load the page's default method while the server starts, so the first visitor does not wait for it."""
    try:
        key = pipelines.preload(method, context=context)
        logger.info("preloaded %s on %s", key.method, key.device)
    except Exception as exc:  # remembered if it is about weights; the first request shows it properly
        logger.warning("could not preload the default method: %s", pipelines.describe_error(exc, FRONT_END))


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        auth = read_auth(args.auth, os.environ.get("STYLE_STUDIO_AUTH_FILE"))
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        context = pipelines.set_default_context(context_from(args))
        app = build_demo(context, args.method)
    except StudioError as exc:
        parser.exit(2, f"error: {exc.for_front_end(FRONT_END)}\n")
    if context.backend == "local":
        threading.Thread(target=_preload, args=(args.method, context), name="preload", daemon=True).start()
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
