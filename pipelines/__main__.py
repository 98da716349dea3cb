"""Command line: ``python -m pipelines stylize --content A.jpg --style B.jpg -o output.png``.

The ``stylize`` flags are generated from the request schema (``pipelines.REQUEST_PARAMETERS``); the settings
flags (``--device``, ``--weights``, ``--compile``, ``--precision``, ``--backend``, ``--library``) build the
``StudioContext``.
Bad input exits with status 2 and one line saying what was wrong; an internal failure exits with 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

import pipelines

FRONT_END = "cli"


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ---- flags -------------------------------------------------------------------------------------------------


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per declared request parameter (adding a parameter to ``StyleRequest`` adds its flag here)."""
    for param in pipelines.REQUEST_PARAMETERS:
        flags = (param.flag, *param.aliases)
        default_text = "" if param.default is None else f" (default {param.default})"
        if param.kind == "image":
            parser.add_argument(
                *flags, dest=param.name, default=None, metavar="IMG", required=not param.optional, help=param.help
            )
        elif param.kind == "method":
            parser.add_argument(*flags, dest=param.name, choices=pipelines.method_names(), help=param.help)
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
    return parser


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


COMMANDS = {
    "stylize": _stylize,
    "methods": lambda args: _methods(),
    "convert-artfusion": _convert_artfusion,
    "learn-style": _learn_style,
    "import-style": _import_style,
    "styles": _styles,
    "metadata": _metadata,
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
