"""The command line, run as a user runs it (a real subprocess)."""

import subprocess
import sys

from conftest import ROOT

from pipelines import read_png_metadata


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
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
    assert str(out) in done.stdout and "seed 11" in done.stdout
    meta = read_png_metadata(out)
    assert (meta["method"], meta["strength"], meta["seed"], meta["max_side"], meta["preserve_color"]) == (
        "fast",
        0.6,
        11,
        256,
        True,
    )


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
        "--seed",
        "3",
        "--max-side",
        "128",
    )
    shown = cli("metadata", str(out))
    assert shown.returncode == 0 and '"seed": 3' in shown.stdout


def test_demo_help_lists_its_flags():
    done = subprocess.run([sys.executable, "demo.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for flag in ("--host", "--port", "--share", "--method", "--device"):
        assert flag in done.stdout
