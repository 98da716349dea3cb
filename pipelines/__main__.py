"""Command line: ``python -m pipelines stylize --content A.jpg --style B.jpg -o output.png``.

The ``stylize`` flags are generated from the request schema (``pipelines.REQUEST_PARAMETERS``); the settings
flags (``--device``, ``--weights``, ``--compile``, ``--precision``, ``--backend``, ``--library``) build the
``StudioContext``.
Bad input exits with status 2 and one line saying what was wrong; an internal failure exits with 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pipelines

FRONT_END = "cli"


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ---- flags -------------------------------------------------------------------------------------------------


def add_request_arguments(
    parser: argparse.ArgumentParser,
    *,
    without: tuple[str, ...] = (),
    defaults: dict[str, tuple[Any, str]] | None = None,
) -> None:
    """One flag per declared request parameter (adding a parameter to ``StyleRequest`` adds its flag here);
    ``without``: parameters the command takes another way (``stylize-batch`` takes its contents as arguments);
    ``defaults``: parameter → (default, what it means) where the command differs from a picture's."""
    for param in pipelines.REQUEST_PARAMETERS:
        if param.name in without:
            continue
        flags = (param.flag, *param.aliases)
        default_text = "" if param.default is None else f" (default {param.default})"
        if defaults and param.name in defaults:
            default, meaning = defaults[param.name]
            parser.set_defaults(**{param.name: default})
            param = dataclasses.replace(param, default=default, help=param.help.split(";")[0].split(" (")[0])
            default_text = f" (default {meaning})"
        if param.kind == "image":
            parser.add_argument(
                *flags, dest=param.name, default=None, metavar="IMG", required=not param.optional, help=param.help
            )
        elif param.kind == "method":
            parser.add_argument(
                *flags, dest=param.name, choices=pipelines.method_names(), help=param.help + default_text
            )
        elif param.kind == "bool":
            parser.add_argument(*flags, dest=param.name, action="store_true", help=param.help)
        elif param.kind == "options":
            parser.add_argument(
                "--option",
                dest=param.name,
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help="a method-specific option, e.g. --option eta=0 (repeatable; see `methods`)",
            )
        else:
            kind = float if param.kind == "fraction" else int
            parser.add_argument(
                *flags, dest=param.name, type=kind, default=param.default, help=param.help + default_text
            )


def add_context_arguments(parser: argparse.ArgumentParser, *, compile_flag: bool = True) -> None:
    """The settings flags; each overrides its environment variable (see ``StudioContext.from_environment``)."""
    parser.add_argument("--device", default=None, help=f"one of {', '.join(pipelines.DEVICE_CHOICES)} or cuda:N")
    parser.add_argument(
        "--weights",
        default=None,
        metavar="PATH_OR_REPO",
        help="weights for the method (a local file or folder, or a Hub repo id); default: the method's own",
    )
    parser.add_argument("--base-model", default=None, metavar="ID_OR_PATH", help="InST: the Stable Diffusion 1.x model")
    parser.add_argument("--clip-model", default=None, metavar="ID_OR_PATH", help="InST: the CLIP image encoder")
    parser.add_argument("--library", default=None, metavar="DIR", help="the InST style library folder")
    parser.add_argument(
        "--backend",
        choices=pipelines.BACKENDS,
        default=None,
        help="where to run: local (default), modal (the deployed Modal app), or auto (local CUDA, else Modal)",
    )
    if compile_flag:
        parser.add_argument(
            "--compile", nargs="?", const="on", default=None, metavar="MODE", help=pipelines.COMPILE_HELP
        )
    parser.add_argument("--precision", choices=pipelines.PRECISIONS, default=None, help=pipelines.PRECISION_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m pipelines", description="Style studio command line.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    run = commands.add_parser("stylize", help="stylize one content image with one style image")
    add_request_arguments(run)
    run.add_argument("--style-name", default=None, metavar="NAME", help="a learned style from the library (inst)")
    run.add_argument("-o", "--output", default="output.png", metavar="PNG", help="where to write the PNG")
    run.add_argument(
        "--replay",
        metavar="PNG",
        default=None,
        help="take every parameter from a result PNG made earlier (reproduces it with the same inputs)",
    )
    add_context_arguments(run)
    run.add_argument("-v", "--verbose", action="store_true", help="log progress and show tracebacks")

    _add_batch_command(commands)
    _add_video_command(commands)

    commands.add_parser("methods", help="list the available methods and their options")

    convert = commands.add_parser("convert-artfusion", help="convert an original ArtFusion .ckpt to a diffusers folder")
    convert.add_argument("checkpoint", metavar="CKPT", help="the original Lightning checkpoint")
    convert.add_argument("out_dir", metavar="OUT_DIR", help="where to write the diffusers folder")
    convert.add_argument("--original-config", default=None, metavar="YAML_OR_JSON", help="a non-default config")
    convert.add_argument(
        "--push-to-hub", default=None, metavar="REPO", help="also upload to this Hub repo (private; needs HF_TOKEN)"
    )

    learn = commands.add_parser("learn-style", help="learn an InST style from one image into the library")
    learn.add_argument("--style", required=True, metavar="IMG", help="the style image")
    learn.add_argument("--name", required=True, help="the style's name in the library")
    learn.add_argument(
        "--preset",
        choices=list(pipelines.LEARN_PRESETS),
        default="fast",
        help="paper: the official recipe (6100 steps); fast: precomputed inputs, 4 timesteps a step (800 steps)",
    )
    learn.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    learn.add_argument("--clip-mode", choices=pipelines.CLIP_MODES, default="paper", help="CLIP input preprocessing")
    learn.add_argument("--resolution", type=int, default=pipelines.LEARN_RESOLUTION, help="training side (square)")
    learn.add_argument("--overwrite", action="store_true", help="replace a style of the same name")
    learn.add_argument("--checkpoint-every", type=int, default=None, metavar="N", help="checkpoint every N steps")
    learn.add_argument("--gradient-checkpointing", action="store_true", help="less GPU memory, a little slower")
    add_context_arguments(learn, compile_flag=False)

    imported = commands.add_parser("import-style", help="import an official InST embeddings.pt into the library")
    imported.add_argument("embeddings", metavar="FILE.pt")
    imported.add_argument("--style", required=True, metavar="IMG", help="the style image the file was trained on")
    imported.add_argument("--name", required=True)
    imported.add_argument("--resolution", type=int, default=pipelines.LEARN_RESOLUTION)
    add_context_arguments(imported, compile_flag=False)

    styles = commands.add_parser("styles", help="list the learned styles in the library")
    styles.add_argument("--library", default=None, metavar="DIR", help="the style library folder")
    styles.add_argument("--rename", nargs=2, metavar=("NAME", "NEW_NAME"), help="rename a learned style")
    styles.add_argument("--delete", metavar="NAME", help="delete a learned style")

    show = commands.add_parser("metadata", help="print the parameters stored in a result PNG")
    show.add_argument("png")
    add_compare_commands(commands)
    return parser


def _add_batch_command(commands: Any) -> None:
    batch = commands.add_parser(
        "stylize-batch",
        help="stylize many content images with one style into a folder (resumable; see OUT_DIR/manifest.jsonl)",
    )
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="content images: files, folders or quoted globs")
    add_request_arguments(batch, without=("content",))
    batch.add_argument("--style-name", default=None, metavar="NAME", help="a learned style from the library (inst)")
    batch.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="where to write <name>.png each")
    batch.add_argument("--recursive", action="store_true", help="also take images from the folders' subfolders")
    batch.add_argument(
        "--workers", type=int, default=None, metavar="N", help="pictures at once here (default: by method and CPUs)"
    )
    add_context_arguments(batch)
    batch.add_argument("-v", "--verbose", action="store_true", help="log progress and show tracebacks")


def _add_video_command(commands: Any) -> None:
    video = commands.add_parser(
        "stylize-video",
        help=f"stylize a video ({pipelines.READABLE_VIDEOS}) with one style, steady from frame to frame",
    )
    video.add_argument("source", metavar="VIDEO", help="the video to restyle")
    add_request_arguments(  # fast frames by default, at the video's own size
        video,
        without=("content",),
        defaults={"method": ("fast", "fast"), "max_side": (None, "the video's own size")},
    )
    for param in pipelines.VIDEO_PARAMETERS:
        video.add_argument(
            param.flag, type=float, default=param.default, help=f"{param.help} (default {param.default})"
        )
    video.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="the video to write; its extension picks the format: .mp4 (H.264), .webm (VP9), .gif, .mov, .mkv",
    )
    video.add_argument("--estimate", action="store_true", help="only say how long it would take (one frame is made)")
    add_context_arguments(video)
    video.add_argument("-v", "--verbose", action="store_true", help="log progress and show tracebacks")


def context_from(args: argparse.Namespace, method: str | None = None) -> pipelines.StudioContext:
    """The StudioContext for this invocation: its flags over the environment."""
    weights = {}
    if getattr(args, "base_model", None) or getattr(args, "clip_model", None):
        weights["inst"] = f"{args.base_model or ''}::{args.clip_model or ''}"
    if getattr(args, "weights", None):
        weights[method or "inst"] = args.weights
    return pipelines.StudioContext.from_environment(
        device=getattr(args, "device", None),
        backend=getattr(args, "backend", None),
        default_backend="local",
        compile=getattr(args, "compile", None),
        precision=getattr(args, "precision", None),
        library_dir=getattr(args, "library", None),
        weights=weights,
        score_weights=pipelines.parse_score_weights(getattr(args, "score_weights", None) or [], "--score-weights"),
    )


# ---- commands ----------------------------------------------------------------------------------------------


def _stylize(args: argparse.Namespace) -> int:
    if args.replay:
        request, replayed = _replayed_request(args)
    else:
        values = {p.name: getattr(args, p.name) for p in pipelines.REQUEST_PARAMETERS}
        values["options"] = _parse_options(args.options) | ({"style_name": args.style_name} if args.style_name else {})
        request, replayed = pipelines.StyleRequest(**values), None
    context = context_from(args, request.method)
    if replayed is not None and not args.weights and replayed.weights:
        method = pipelines.get_method(request.method)
        if replayed.weights != method.default_weights():
            context = context.with_overrides(weights={request.method: replayed.weights})
    method = pipelines.resolve_method(request.method, context)
    if context.weights_for(method.name):
        method.check_weights(context.weights_for(method.name))
    result = pipelines.run(request, context=context, progress=_progress_line if args.verbose else None)
    path = result.save(args.output)
    print(f"{path}  {result.metadata.summary()}")
    return 0


def _replayed_request(args: argparse.Namespace) -> tuple[pipelines.StyleRequest, pipelines.ResultMetadata]:
    """The request stored in ``--replay``'s PNG; warns when the given pictures are not the ones that made it."""
    replayed = pipelines.read_metadata(args.replay)
    request = pipelines.request_from_metadata(replayed, args.content, args.style)
    for role, source, digest in (
        ("content", args.content, replayed.content_digest),
        ("style", args.style, replayed.style_digest),
    ):
        if source is None or not digest:
            continue
        actual = pipelines.image_digest(pipelines.load_image(source, role=role, max_side=request.max_side))
        if actual != digest:
            print(
                f"warning: the {role} image {source} is not the one that made {args.replay} "
                "(its pixels differ), so the result will differ; the parameters are replayed as stored.",
                file=sys.stderr,
            )
    return request, replayed


def _stylize_batch(args: argparse.Namespace) -> int:
    values = {p.name: getattr(args, p.name) for p in pipelines.REQUEST_PARAMETERS if p.kind != "image"}
    values["options"] = _parse_options(args.options) | ({"style_name": args.style_name} if args.style_name else {})
    progress = _ProgressBar()
    try:
        summary = pipelines.stylize_batch(
            args.inputs,
            args.style,
            args.output_dir,
            context=context_from(args, args.method),
            workers=args.workers,
            recursive=args.recursive,
            progress=progress,
            **values,
        )
    except KeyboardInterrupt:
        summary = None
    finally:
        progress.close()
    if summary is None:
        print("interrupted: run the same command again to make the rest (finished pictures are kept)", file=sys.stderr)
        return 130
    for path, error in summary.failures[:20]:
        print(f"failed: {path}: {error}", file=sys.stderr)
    if len(summary.failures) > 20:
        print(f"… and {len(summary.failures) - 20} more failures (see the manifest)", file=sys.stderr)
    print(summary.line())
    return 0 if summary.ok else 1


def _stylize_video(args: argparse.Namespace) -> int:
    values = {p.name: getattr(args, p.name) for p in pipelines.REQUEST_PARAMETERS if p.kind != "image"}
    values |= {p.name: getattr(args, p.name) for p in pipelines.VIDEO_PARAMETERS}
    values["options"] = _parse_options(args.options)
    context = context_from(args, args.method)
    if args.estimate:
        estimate = pipelines.estimate_video(args.source, args.style, output=args.output, context=context, **values)
        print(f"{args.source}: {estimate.summary()}")
        return 0
    cancel = threading.Event()  # Ctrl-C stops at the next frame and keeps what is made
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    progress = _ProgressBar(unit="frame")
    try:
        result = pipelines.stylize_video(
            args.source,
            args.style,
            args.output,
            context=context,
            cancel=cancel,
            progress=lambda event: progress(event.frames_done, event.frames_total, ""),
            **values,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.close()
    pace = f"made at {result.frames_per_second:.1f} frames/s"
    made = f"{result.frames_done} frames, {result.size[0]}×{result.size[1]}, {pace}"
    if result.cancelled:
        kept = f"kept {result.path}" if result.path else "nothing was made"
        print(f"cancelled: {kept} ({made})", file=sys.stderr)
        return 130
    print(f"{result.path}  {made}, {len(result.scene_cuts)} scene cut(s){', with sound' if result.has_audio else ''}")
    return 0


class _ProgressBar:
    """One progress bar on stderr: tqdm's when installed, else one line rewritten in place."""

    def __init__(self, unit: str = "pic") -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self._tqdm, self.bar, self.shown, self.unit = tqdm, None, False, unit

    def __call__(self, done: int, total: int, description: str) -> None:
        self.shown = True
        if self._tqdm is None:
            print(f"\r{done}/{total} {description[:60]:60s}", end="", file=sys.stderr, flush=True)
            return
        if self.bar is None:  # made at the first picture, when the total is known
            self.bar = self._tqdm(total=total, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.set_postfix_str(description[:40], refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.shown:
            print(file=sys.stderr)


def _progress_line(done: int, total: int, description: str) -> None:
    print(f"{description} ({done}/{total})", file=sys.stderr, flush=True)


def _learn_style(args: argparse.Namespace) -> int:
    run = pipelines.learn_style(
        args.style,
        args.name,
        preset=args.preset,
        steps=args.steps,
        clip_mode=args.clip_mode,
        resolution=args.resolution,
        overwrite=args.overwrite,
        gradient_checkpointing=args.gradient_checkpointing,
        checkpoint_every=args.checkpoint_every,
        context=context_from(args),
    )
    first = True
    try:
        for event in run:
            if event.kind == "step" and (first or event.step % 25 == 0 or event.step == event.total):
                print(
                    f"step {event.step}/{event.total}  loss {event.loss:.4f}", flush=True
                )  # first: where a resume starts
                first = False
            elif event.kind == "loading":
                print(event.message, flush=True)
            elif event.kind == "cancelled":
                print(f"cancelled: {event.message}", file=sys.stderr)
                return 130
    except KeyboardInterrupt:
        run.cancel()
        run.wait()  # lets the run write its checkpoint
        raise
    entry = run.entry
    print(f"learned style {entry.slug!r} ({entry.steps} steps, final loss {entry.final_loss}) into the library")
    return 0


def _import_style(args: argparse.Namespace) -> int:
    entry = pipelines.import_style(
        args.embeddings, args.style, args.name, resolution=args.resolution, context=context_from(args)
    )
    print(f"imported {args.embeddings} as style {entry.slug!r} (CLIP mode {entry.clip_mode})")
    return 0


def _styles(args: argparse.Namespace) -> int:
    library = pipelines.style_library(context_from(args))
    if args.rename:
        entry = library.rename(*args.rename)
        print(f"renamed {args.rename[0]!r} to {entry.slug!r}")
        return 0
    if args.delete:
        library.delete(args.delete)
        print(f"deleted {args.delete!r}")
        return 0
    entries = library.list()
    if not entries:
        print(f"no learned styles in {library.root}")
    for e in entries:
        loss = f"{e.final_loss:.4f}" if e.final_loss is not None else "-"
        print(
            f"{e.slug:24s} {e.source:8s} clip={e.clip_mode:5s} steps={e.steps:<5d} loss={loss:8s} {e.created}  {e.name}"
        )
    return 0


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise pipelines.InvalidRequestError(f"--option takes NAME=VALUE, got {pair!r}.")
        options[name.strip()] = value.strip()
    return options


def _convert_artfusion(args: argparse.Namespace) -> int:
    folder = pipelines.convert_artfusion(args.checkpoint, args.out_dir, args.original_config)
    print(f"converted {args.checkpoint} -> {folder}")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push_to_hub, private=True, exist_ok=True)
        api.upload_folder(repo_id=args.push_to_hub, folder_path=str(folder))
        print(f"uploaded to https://huggingface.co/{args.push_to_hub} (private: check the licence first)")
    return 0


def _methods() -> int:
    for name in pipelines.method_names():
        method = pipelines.get_method(name)
        spec = method.steps
        steps = f"steps {spec.minimum}-{spec.maximum} (default {spec.default})" if spec else "no steps"
        print(f"{name:10s} {method.label}; {steps}. {method.description}")
        for option in method.options:
            print(f"{'':10s}   --option {option.name}=…  {option.label}. {option.help}")
    return 0


def _metadata(args: argparse.Namespace) -> int:
    print(json.dumps(pipelines.read_png_metadata(args.png), indent=2, sort_keys=True), flush=True)
    return 0


# ---- compare and evaluate -------------------------------------------------------------------------------------


def add_compare_commands(commands: argparse._SubParsersAction) -> None:
    """``compare`` (one content, several styles × methods × strengths → a scored grid) and ``evaluate`` (the same
    over many pairs → a results table and a trade-off plot). Defaults left as None are the library's own."""

    def sweep_arguments(parser: argparse.ArgumentParser, strengths: str) -> None:
        parser.add_argument(
            "--methods",
            nargs="+",
            default=["fast"],
            choices=pipelines.method_names(),
            metavar="METHOD",
            help=f"methods to compare, from {', '.join(pipelines.method_names())} (default fast)",
        )
        parser.add_argument(
            "--strengths", nargs="+", type=float, default=None, metavar="S", help=f"strengths from 0 to 1 ({strengths})"
        )
        parser.add_argument("--steps", type=int, default=None, help="diffusion steps (default: each method's own)")
        parser.add_argument("--seed", type=int, default=None, help="one seed for every cell (default: drawn once)")
        parser.add_argument(
            "--max-side", type=int, default=None, metavar="PX", help="long side of the pictures in pixels (default 512)"
        )
        parser.add_argument(
            "--scores",
            nargs="+",
            default=None,
            metavar="NAME",
            help="scores to compute, e.g. content_ssim style_distance (default: all; a wrong name lists them)",
        )
        parser.add_argument(
            "--score-weights",
            action="append",
            default=[],
            metavar="MODEL=LOCATION",
            help="a learned score's weights: csd, lpips or dino = a folder or Hub repo, or off (repeatable; "
            "default: the studio cache's scores/ folders and facebook/dinov2-small)",
        )
        add_context_arguments(parser)
        parser.add_argument("-v", "--verbose", action="store_true", help="log progress and show tracebacks")

    grid = commands.add_parser(
        "compare", help="one content with several styles, methods and strengths: a scored grid and each picture"
    )
    grid.add_argument("--content", required=True, metavar="IMG", help="the picture to restyle")
    grid.add_argument("--style", required=True, nargs="+", metavar="IMG", help="one or more style pictures")
    grid.add_argument(
        "-o", "--output-dir", required=True, metavar="OUT_DIR", help="where to write grid.png, the PNGs, scores.json"
    )
    sweep_arguments(grid, "default 0.7")

    sweep = commands.add_parser(
        "evaluate", help="score methods over many content × style pairs and strengths: results.csv and tradeoff.png"
    )
    sweep.add_argument(
        "--pairs",
        nargs="+",
        default=["default"],
        metavar="default|DIR",
        help="default: the bundled 4 photos × 5 paintings; DIR: a folder with content/ and style/ subfolders "
        "(every content with every style)",
    )
    sweep.add_argument(
        "-o",
        "--output-dir",
        required=True,
        metavar="OUT_DIR",
        help="where to write results.csv, results.json, summary.json and tradeoff.png",
    )
    sweep_arguments(sweep, "default 0 0.25 0.5 0.75 1")


def _sweep_context(args: argparse.Namespace) -> pipelines.StudioContext:
    """The context for several methods: ``--weights`` names its method (``artfusion=PATH``) unless only one runs."""
    name = (args.weights or "").partition("=")[0].strip()
    if name in pipelines.method_names():
        weights = pipelines.parse_weights(args.weights, "--weights")
        return context_from(argparse.Namespace(**{**vars(args), "weights": None})).with_overrides(weights=weights)
    if args.weights and len(set(args.methods)) > 1:
        raise pipelines.InvalidRequestError(
            "With several --methods, say which one --weights is for: --weights METHOD=PATH_OR_REPO "
            "(several separated by commas), e.g. --weights artfusion=/path/to/checkpoint.ckpt."
        )
    return context_from(args, args.methods[0])


def _sweep_options(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep flags that were given, as ``compare``/``evaluate`` keywords (the others keep their defaults)."""
    given = {
        "methods": args.methods,
        "strengths": args.strengths,
        "steps": args.steps,
        "seed": args.seed,
        "max_side": args.max_side,
        "score_names": args.scores,
    }
    return {name: value for name, value in given.items() if value is not None}


def _cell_progress(done: int, total: int, text: str) -> None:
    print(f"[{done}/{total}] {text}", file=sys.stderr, flush=True)


def _compare(args: argparse.Namespace) -> int:
    comparison = pipelines.compare(
        args.content,
        args.style,
        **_sweep_options(args),
        context=_sweep_context(args),
        progress=_cell_progress,
        front_end=FRONT_END,
    )
    out = comparison.save(args.output_dir)
    failed = comparison.failures
    for cell in failed:
        print(f"failed: {cell.name}: {cell.error}", file=sys.stderr)
    made = len(comparison.cells) - len(failed)
    pictures = f"{made} picture{'s' * (made != 1)}"
    print(
        f"{len(comparison.cells)} cells: {made} made, {len(failed)} failed; "
        f"wrote {out / 'grid.png'}, {pictures} and {out / 'scores.json'}"
    )
    return 0 if not failed else 1


def _evaluate(args: argparse.Namespace) -> int:
    bar = _ProgressBar()
    try:
        evaluation = pipelines.evaluate(
            pipelines.evaluation_pairs(args.pairs),
            **_sweep_options(args),
            context=_sweep_context(args),
            progress=_cell_progress if args.verbose else bar,
            front_end=FRONT_END,
        )
    finally:
        bar.close()
    out = evaluation.save(args.output_dir)
    failed = evaluation.failures
    for row in failed[:20]:
        print(
            f"failed: {row['content']} × {row['style']} · {row['method']} · {row['strength']:.2f}: {row['error']}",
            file=sys.stderr,
        )
    if len(failed) > 20:
        print(f"… and {len(failed) - 20} more failures (see results.csv)", file=sys.stderr)
    shown = [name for name in ("content_ssim", "style_distance") if name in evaluation.score_names]
    print(f"{'method':10s} {'strength':>8s} {'pairs':>5s} {'seconds':>8s} " + " ".join(f"{n:>15s}" for n in shown))
    for entry in evaluation.summary():
        values = " ".join(f"{'n/a' if entry[n] is None else format(entry[n], '.4f'):>15s}" for n in shown)
        seconds = "n/a" if entry["seconds"] is None else f"{entry['seconds']:.3f}"
        print(f"{entry['method']:10s} {entry['strength']:8.2f} {entry['pairs']:5d} {seconds:>8s} {values}")
    print(
        f"{len(evaluation.rows)} rows: {len(evaluation.rows) - len(failed)} made, {len(failed)} failed; "
        f"wrote {out / 'results.csv'}, {out / 'results.json'} and {out / 'tradeoff.png'}"
    )
    return 0 if not failed else 1


COMMANDS = {
    "stylize": _stylize,
    "stylize-batch": _stylize_batch,
    "stylize-video": _stylize_video,
    "methods": lambda args: _methods(),
    "convert-artfusion": _convert_artfusion,
    "learn-style": _learn_style,
    "import-style": _import_style,
    "styles": _styles,
    "metadata": _metadata,
    "compare": _compare,
    "evaluate": _evaluate,
}


THIRD_PARTY_QUIET = {  # read only from the environment, by those libraries, when they are first imported
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
}


def _quiet_libraries() -> None:
    """Our own lines only: no third-party progress bars or advisories. transformers and diffusers reset their
    log level from these variables when they are first imported, so this is the one way to quiet them without
    importing them (and torch) for every command; the studio's own settings never travel this way."""
    for name, value in THIRD_PARTY_QUIET.items():
        os.environ.setdefault(name, value)
    for name in ("huggingface_hub", "httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not verbose:
        _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except pipelines.StudioError as exc:
        print(f"error: {pipelines.describe_error(exc, FRONT_END)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head` closed our output: not an error
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print(
            "interrupted (a style being learned resumes from its last checkpoint: run the same command)",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # a bug, not the user's fault: say so in one line, details with --verbose
        if verbose:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose for details)", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so Python's exit flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
