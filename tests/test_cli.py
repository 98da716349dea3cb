"""The command line, run as a user runs it (a real subprocess)."""

import os
import stat
import subprocess
import sys
import time

from conftest import ROOT

import pipelines
from pipelines import read_png_metadata


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_stylize_writes_a_png_with_its_parameters(tmp_path, content_path, style_path):
    out = tmp_path / "result.png"
    done = cli(
        "stylize",
        "--content",
        str(content_path),
        "--style",
        str(style_path),
        "-o",
        str(out),
        "--method",
        "fast",
        "--strength",
        "0.6",
        "--seed",
        "11",
        "--max-side",
        "256",
        "--preserve-color",
    )
    assert done.returncode == 0, done.stderr
    meta = read_png_metadata(out)
    assert done.stdout.strip() == f"{out}  {pipelines.ResultMetadata.from_dict(meta).summary()}"
    assert (meta["method"], meta["strength"], meta["seed"], meta["max_side"], meta["preserve_color"]) == (
        "fast",
        0.6,
        None,  # fast is deterministic: the seed is not used and not recorded
        256,
        True,
    )
    mode = stat.S_IMODE(out.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask, oct(mode)  # an ordinary file, readable by others as usual (not 0600)


def test_the_old_modal_script_spelling_works_and_replay_reproduces(tmp_path, content_path, style_path):
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    done = cli(
        "stylize",
        "--content-file-path",
        str(content_path),
        "--style-file-path",
        str(style_path),
        "-o",
        str(first),
        "--max-side",
        "200",
    )
    assert done.returncode == 0, done.stderr
    done = cli(
        "stylize", "--content", str(content_path), "--style", str(style_path), "-o", str(second), "--replay", str(first)
    )
    assert done.returncode == 0, done.stderr
    from PIL import Image

    assert Image.open(first).tobytes() == Image.open(second).tobytes()
    assert read_png_metadata(first)["seed"] == read_png_metadata(second)["seed"]


def test_bad_input_exits_nonzero_with_one_clear_line(tmp_path, style_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 this is no jpeg")
    cases = [
        (["--content", str(junk), "--style", str(style_path)], "content image (junk.jpg)"),
        (["--content", str(tmp_path / "missing.png"), "--style", str(style_path)], "not found"),
        (["--content", str(style_path), "--style", str(style_path), "--strength", "1.5"], "strength"),
        (["--content", str(style_path), "--style", str(style_path), "--strength", "lots"], "invalid float"),
        (["--content", str(style_path), "--style", str(style_path), "--method", "nope"], "invalid choice"),
        (["--style", str(style_path)], "--content"),
    ]
    for args, expected in cases:
        done = cli("stylize", *args, "-o", str(tmp_path / "never.png"))
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "never.png").exists()


def test_methods_and_metadata_commands(tmp_path, content_path, style_path):
    done = cli("methods")
    assert done.returncode == 0 and done.stdout.startswith("fast")
    out = tmp_path / "r.png"
    cli(
        "stylize",
        "--content",
        str(content_path),
        "--style",
        str(style_path),
        "-o",
        str(out),
        "--strength",
        "0.35",
        "--max-side",
        "128",
    )
    shown = cli("metadata", str(out))
    assert shown.returncode == 0 and '"strength": 0.35' in shown.stdout


def test_metadata_piped_into_head_ends_quietly(tmp_path, content_path, style_path):
    out = tmp_path / "r.png"
    cli("stylize", "--content", str(content_path), "--style", str(style_path), "-o", str(out), "--max-side", "128")
    for reader in ("head -1", "true"):  # `true` closes the pipe before anything is written: always a broken pipe
        piped = subprocess.run(
            f"{sys.executable} -m pipelines metadata {out} | {reader}; echo status ${{PIPESTATUS[0]}}",
            shell=True,
            executable="/bin/bash",
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert piped.stderr == "" and piped.stdout.endswith("status 0\n"), (reader, piped.stdout, piped.stderr)


def test_every_request_parameter_has_its_flag():
    done = cli("stylize", "--help")
    for param in pipelines.REQUEST_PARAMETERS:
        flag = "--option" if param.kind == "options" else param.flag
        assert flag in done.stdout, param.name


def test_replay_with_other_pictures_says_so(tmp_path, content_path, style_path):
    first = tmp_path / "first.png"
    cli("stylize", "--content", str(content_path), "--style", str(style_path), "-o", str(first), "--max-side", "128")
    other = ROOT / "assets" / "content" / "rocket.jpg"
    done = cli("stylize", "--content", str(other), "--style", str(style_path), "-o", str(tmp_path / "b.png"),
               "--replay", str(first))  # fmt: skip
    assert done.returncode == 0 and "content image" in done.stderr and "not the one that made" in done.stderr
    same = cli("stylize", "--content", str(content_path), "--style", str(style_path), "-o", str(tmp_path / "c.png"),
               "--replay", str(first))  # fmt: skip
    assert same.returncode == 0 and same.stderr == ""


def test_missing_weights_fail_at_once_in_one_line_with_the_cli_flag(tmp_path, content_path, style_path):
    """No network and no weights: one line naming this front end's flag, in seconds, without retry warnings.
    The Hub endpoint is a closed port on this machine and offline mode is off, so the studio must notice by itself."""
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "STYLE_STUDIO_CACHE": str(tmp_path)}
    args = ("stylize", "--content", str(content_path), "--style", str(style_path), "-o", str(tmp_path / "x.png"))
    started = time.perf_counter()
    done = cli(*args, "--method", "artfusion", "--steps", "2", env=env)
    seconds = time.perf_counter() - started
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "cannot be reached" in lines[0] and "--weights /path/to/" in lines[0] and "artfusion=" not in lines[0]
    assert seconds < 30, seconds  # the import of torch is most of it; retries would add ~20 s
    missing = cli(*args, "--method", "artfusion", "--weights", str(tmp_path / "nope.ckpt"), env=env)
    assert missing.returncode == 2 and "nope.ckpt were not found" in missing.stderr


def test_inst_without_a_learned_style_fails_before_loading_any_model(tmp_path, content_path):
    started = time.perf_counter()
    done = cli("stylize", "--content", str(content_path), "--method", "inst", "--style-name", "scream",
               "--library", str(tmp_path / "empty"), "-o", str(tmp_path / "x.png"))  # fmt: skip
    assert done.returncode == 2 and "No learned style 'scream'" in done.stderr
    assert time.perf_counter() - started < 15  # no Stable Diffusion was loaded to say so


def test_import_style_checks_the_file_before_loading_models(tmp_path, style_path):
    bogus = tmp_path / "embeddings.pt"
    bogus.write_bytes(b"not a torch file")
    done = cli("import-style", str(bogus), "--style", str(style_path), "--name", "x",
               "--base-model", str(tmp_path / "no-sd"), "--clip-model", str(tmp_path / "no-clip"))  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "embeddings.pt" in lines[0], done.stderr


def test_demo_help_lists_its_flags():
    done = subprocess.run([sys.executable, "demo.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for flag in ("--host", "--port", "--share", "--method", "--device"):
        assert flag in done.stdout
