"""Command line: ``python -m pipelines stylize --content A.jpg --style B.jpg -o output.png``.

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
from pipelines import DEFAULT_MAX_SIDE, DEVICE_CHOICES, StudioError, StyleRequest
from pipelines.core.compiling import COMPILE_HELP, set_compile


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m pipelines", description="Style studio command line.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    run = commands.add_parser("stylize", help="stylize one content image with one style image")
    run.add_argument(
        "--content", "--content-file-path", dest="content", required=True, metavar="IMG", help="the picture to restyle"
    )
    run.add_argument(
        "--style",
        "--style-file-path",
        dest="style",
        default=None,
        metavar="IMG",
        help="the picture whose style to take (not needed with --method inst: use --style-name)",
    )
    run.add_argument(
        "-o",
        "--output",
        default="output.png",
        metavar="PNG",
        help="where to write the result (PNG with every parameter inside; default output.png)",
    )
    run.add_argument(
        "--method",
        choices=pipelines.method_names(),
        default=None,
        help="style method (default: the best one this machine can run)",
    )
    run.add_argument("--strength", type=float, default=0.7, help="0 = content unchanged, 1 = strongest style")
    run.add_argument("--steps", type=int, default=None, help="diffusion steps (method default if omitted)")
    run.add_argument("--seed", type=int, default=None, help="random seed (drawn and recorded if omitted)")
    run.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="long side of the working resolution")
    run.add_argument("--preserve-color", action="store_true", help="keep the content's colours")
    run.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    run.add_argument("--weights", default=None, help="weights location for the method (path or Hub repo id)")
    run.add_argument("--compile", nargs="?", const="on", default=None, metavar="MODE", help=COMPILE_HELP)
    run.add_argument("--style-name", default=None, metavar="NAME", help="a learned style from the library (inst)")
    _add_inst_model_arguments(run)
    run.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a method-specific option, e.g. --option content_scale=0.5 (see `methods`)",
    )
    run.add_argument(
        "--replay",
        metavar="PNG",
        default=None,
        help="take every parameter from a result PNG made earlier (reproduces it with the same inputs)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log progress and show tracebacks")

    commands.add_parser("methods", help="list the available methods and their options")

    convert = commands.add_parser("convert-artfusion", help="convert an original ArtFusion .ckpt to a diffusers folder")
    convert.add_argument("checkpoint", metavar="CKPT", help="the original Lightning checkpoint")
    convert.add_argument("out_dir", metavar="OUT_DIR", help="where to write the diffusers folder")
    convert.add_argument(
        "--original-config",
        default=None,
        metavar="YAML_OR_JSON",
        help="the training config, if not the released kl16_content12 architecture",
    )
    convert.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="also upload the folder to this Hub repo (created private; needs HF_TOKEN)",
    )

    learn = commands.add_parser("learn-style", help="learn an InST style from one image into the library")
    learn.add_argument("--style", required=True, metavar="IMG", help="the style image")
    learn.add_argument("--name", required=True, help="the style's name in the library")
    learn.add_argument(
        "--preset",
        choices=["paper", "fast"],
        default="fast",
        help="paper: the official recipe (6100 steps); fast: precomputed inputs, 4 timesteps a step",
    )
    learn.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    learn.add_argument(
        "--clip-mode",
        choices=["paper", "code"],
        default="paper",
        help="CLIP input: paper = correct preprocessing; code = the official code's cast",
    )
    learn.add_argument("--resolution", type=int, default=512, help="training resolution (square)")
    learn.add_argument("--device", default="auto")
    learn.add_argument("--overwrite", action="store_true", help="replace a style of the same name")
    learn.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="save a resumable checkpoint every N steps (default 500)",
    )
    learn.add_argument("--gradient-checkpointing", action="store_true", help="less GPU memory, a little slower")
    _add_inst_model_arguments(learn)

    imported = commands.add_parser("import-style", help="import an official InST embeddings.pt into the library")
    imported.add_argument("embeddings", metavar="FILE.pt")
    imported.add_argument("--style", required=True, metavar="IMG", help="the style image the file was trained on")
    imported.add_argument("--name", required=True)
    imported.add_argument("--resolution", type=int, default=512)
    imported.add_argument("--device", default="auto")
    _add_inst_model_arguments(imported)

    styles = commands.add_parser("styles", help="list the learned styles in the library")
    styles.add_argument("--library", default=None, metavar="DIR", help="the style library folder")
    styles.add_argument("--rename", nargs=2, metavar=("NAME", "NEW_NAME"), help="rename a learned style")
    styles.add_argument("--delete", metavar="NAME", help="delete a learned style")

    show = commands.add_parser("metadata", help="print the parameters stored in a result PNG")
    show.add_argument("png")
    return parser


def _stylize(args: argparse.Namespace) -> int:
    if args.compile is not None:
        set_compile(args.compile)
    if args.replay:
        request = pipelines.request_from_metadata(pipelines.read_png_metadata(args.replay), args.content, args.style)
    else:
        request = StyleRequest(
            content=args.content,
            style=args.style,
            method=args.method,
            strength=args.strength,
            steps=args.steps,
            seed=args.seed,
            max_side=args.max_side,
            preserve_color=args.preserve_color,
            device=args.device,
            weights=_weights_for(args),
            extras={**_parse_options(args.option), **({"style_name": args.style_name} if args.style_name else {})},
        )
    result = pipelines.run(request)
    path = result.save(args.output)
    meta = result.metadata
    steps = f", {meta['steps']} steps" if meta["steps"] else ""
    print(
        f"{path}  {meta['size'][0]}x{meta['size'][1]}  {meta['method']}, strength {meta['strength']:.2f}{steps}, "
        f"seed {meta['seed']}  ({meta['timings']['total_s']:.2f} s on {meta['device']})"
    )
    return 0


def _add_inst_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-model", default=None, metavar="ID_OR_PATH", help="InST: the Stable Diffusion 1.x model")
    parser.add_argument("--clip-model", default=None, metavar="ID_OR_PATH", help="InST: the CLIP image encoder")
    parser.add_argument("--library", default=None, metavar="DIR", help="InST: the style library folder")


def _weights_for(args: argparse.Namespace) -> str | None:
    if args.base_model or args.clip_model:
        from pipelines.inst.method import weights_spec

        return weights_spec(args.base_model, args.clip_model)
    return args.weights


def _progress_printer(every: int) -> object:
    seen = []

    def on_step(step: int, total: int, loss: float) -> None:
        if not seen or step % every == 0 or step == total:  # the first line shows where a resumed run starts
            print(f"step {step}/{total}  loss {loss:.4f}", flush=True)
        seen.append(step)

    return on_step


def _learn_style(args: argparse.Namespace) -> int:
    from pipelines.inst.service import learn_style_into_library

    entry = learn_style_into_library(
        args.style,
        args.name,
        preset=args.preset,
        steps=args.steps,
        clip_mode=args.clip_mode,
        resolution=args.resolution,
        base_model=args.base_model,
        clip_model=args.clip_model,
        device=args.device,
        on_step=_progress_printer(25),
        overwrite=args.overwrite,
        gradient_checkpointing=args.gradient_checkpointing,
        checkpoint_every=args.checkpoint_every,
    )
    print(f"learned style {entry.slug!r} ({entry.steps} steps, final loss {entry.final_loss}) into the library")
    return 0


def _import_style(args: argparse.Namespace) -> int:
    from pipelines.inst.service import import_style_into_library

    entry = import_style_into_library(
        args.embeddings,
        args.style,
        args.name,
        base_model=args.base_model,
        clip_model=args.clip_model,
        device=args.device,
        resolution=args.resolution,
    )
    print(f"imported {args.embeddings} as style {entry.slug!r} (CLIP mode {entry.clip_mode})")
    return 0


def _styles(args: argparse.Namespace) -> int:
    from pipelines.inst.library import StyleLibrary

    library = StyleLibrary()
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
    from pipelines.artfusion.weights import convert_to_folder

    folder = convert_to_folder(args.checkpoint, args.out_dir, args.original_config)
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
        steps = (
            f"steps {method.steps.minimum}-{method.steps.maximum} (default {method.steps.default})"
            if method.steps
            else "no steps"
        )
        print(f"{name:10s} {method.label}; {steps}. {method.description}")
        for option in method.options:
            print(f"{'':10s}   --option {option.name}=…  {option.label}. {option.help}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    if not verbose:  # keep the output to our own lines: no library progress bars or advisory warnings
        for name, value in (
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
            ("TRANSFORMERS_VERBOSITY", "error"),
            ("DIFFUSERS_VERBOSITY", "error"),
        ):
            os.environ.setdefault(name, value)
    if getattr(args, "library", None):  # the style library folder, for this process
        os.environ["STYLE_STUDIO_LIBRARY"] = args.library
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.command == "stylize":
            return _stylize(args)
        if args.command == "methods":
            return _methods()
        if args.command == "convert-artfusion":
            return _convert_artfusion(args)
        if args.command == "learn-style":
            return _learn_style(args)
        if args.command == "import-style":
            return _import_style(args)
        if args.command == "styles":
            return _styles(args)
        print(json.dumps(pipelines.read_png_metadata(args.png), indent=2, sort_keys=True))
        return 0
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
