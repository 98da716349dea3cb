"""Compare (one content, styles × methods × strengths → a scored grid) and evaluate (many pairs → a table and a
trade-off plot): the library, the saved files and the command line."""

import csv
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
from conftest import ASSETS, ROOT
from PIL import Image

import pipelines
from pipelines.__main__ import main
from pipelines.compare import CANCELLED, NOT_RUN, compare
from pipelines.evaluate import evaluate, evaluation_pairs

SIDE = 96  # small pictures: the fast method takes a few hundredths of a second each
STRENGTHS = (0.25, 0.5, 1.0)
CELL_KEYS = {"method", "strength", "style", "seconds", "scores", "better"}


@pytest.fixture(scope="module")
def offline_context(tmp_path_factory):
    """CPU, nothing cached: artfusion's weights are on the Hub and the Hub is off (HF_HUB_OFFLINE)."""
    return pipelines.StudioContext(device="cpu", cache_dir=tmp_path_factory.mktemp("compare-cache"))


@pytest.fixture(scope="module")
def two_methods(offline_context, content_path, style_path):
    """fast and artfusion × three strengths, once for the module; every progress call is kept."""
    calls = []
    comparison = compare(
        content_path,
        [style_path],
        methods=("fast", "artfusion"),
        strengths=STRENGTHS,
        max_side=SIDE,
        context=offline_context,
        progress=lambda done, total, text: calls.append((done, total, text)),
    )
    return comparison, calls


def test_a_method_that_cannot_run_says_why_in_its_cells_and_the_others_are_scored(two_methods, style_path):
    comparison, calls = two_methods
    assert [(c.method, c.strength) for c in comparison.cells] == [
        (m, s) for m in ("fast", "artfusion") for s in STRENGTHS
    ]
    fast = [c for c in comparison.cells if c.method == "fast"]
    artfusion = [c for c in comparison.cells if c.method == "artfusion"]
    for cell in fast:
        assert cell.error is None and cell.image is not None and cell.seconds > 0
        assert cell.style == style_path.name
        assert cell.metadata["method"] == "fast" and cell.metadata["strength"] == cell.strength
        assert isinstance(cell.scores["content_ssim"], float) and isinstance(cell.scores["style_distance"], float)
        assert cell.better["content_ssim"] == "higher" and cell.better["style_distance"] == "lower"
    for cell in artfusion:
        assert cell.image is None and cell.result is None and cell.metadata is None
        assert "ArtFusion weights" in cell.error and "offline" in cell.error
        assert set(cell.scores) == set(fast[0].scores) and not any(cell.scores.values())
    # Once the method is known to be unavailable its other cells are not tried again.
    assert [c.seconds for c in artfusion[1:]] == [0.0, 0.0]
    assert not comparison.ok and comparison.failures == artfusion
    # Progress after every cell, in order.
    assert [(done, total) for done, total, _ in calls] == [(n, 6) for n in range(1, 7)]
    assert calls[0][2].startswith(f"{style_path.name} · fast · strength 0.25: ")
    assert "failed" in calls[3][2]


def test_the_scores_move_with_strength(two_methods):
    comparison, _ = two_methods
    fast = [c for c in comparison.cells if c.method == "fast"]
    ssim = [c.scores["content_ssim"] for c in fast]
    distance = [c.scores["style_distance"] for c in fast]
    assert ssim == sorted(ssim, reverse=True) and distance == sorted(distance, reverse=True)


def test_cancel_stops_the_cells_after_the_one_in_progress(offline_context, content_path, style_path):
    cancel = threading.Event()
    calls = []

    def progress(done, total, text):
        calls.append(done)
        if done == 2:
            cancel.set()

    comparison = compare(
        content_path, style_path, strengths=(0.2, 0.4, 0.6, 0.8), max_side=SIDE, context=offline_context,
        score_names=["content_ssim"], progress=progress, cancel=cancel,
    )  # fmt: skip
    assert calls == [1, 2] and comparison.cancelled
    assert [c.error for c in comparison.cells] == [None, None, NOT_RUN, NOT_RUN]
    assert comparison.cells[2].scores == {"content_ssim": None}
    comparison.grid_image()  # a cancelled comparison still draws


def test_a_cancel_during_a_cell_stops_it_and_leaves_the_rest_unrun(
    offline_context, content_path, style_path, monkeypatch
):
    # The module itself (``pipelines.compare`` may also name the function once it is exported).
    module = importlib.import_module("pipelines.compare")
    cancel = threading.Event()
    real, started = module.stylize, []

    def stylize(*args, **kwargs):
        started.append(kwargs["strength"])
        if len(started) == 2:
            cancel.set()  # the person presses Cancel while the second cell runs
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "stylize", stylize)
    comparison = compare(
        content_path, style_path, strengths=(0.2, 0.4, 0.6), max_side=SIDE, context=offline_context,
        score_names=["content_ssim"], cancel=cancel,
    )  # fmt: skip
    assert started == [0.2, 0.4] and comparison.cancelled
    assert [c.error for c in comparison.cells] == [None, CANCELLED, NOT_RUN]
    assert comparison.cells[0].ok and not comparison.cells[1].ok


def test_a_comparison_saves_its_grid_pictures_and_scores(two_methods, tmp_path, style_path):
    comparison, _ = two_methods
    out = comparison.save(tmp_path / "out")
    stem = style_path.stem
    pictures = {f"{stem}__fast__s{s:.2f}.png" for s in STRENGTHS}
    assert {p.name for p in out.iterdir()} == pictures | {"grid.png", "scores.json"}

    entries = json.loads((out / "scores.json").read_text())
    assert len(entries) == 6
    for entry, cell in zip(entries, comparison.cells, strict=True):
        if cell.method == "fast":
            assert set(entry) == CELL_KEYS | {"png"}
            assert entry["png"] == f"{stem}__fast__s{cell.strength:.2f}.png"
            assert all(
                isinstance(v, float) for k, v in entry["scores"].items() if k in ("content_ssim", "style_distance")
            )
        else:
            assert set(entry) == CELL_KEYS | {"error"} and "offline" in entry["error"]
        assert (entry["method"], entry["strength"], entry["style"]) == (cell.method, cell.strength, style_path.name)
        assert entry["seconds"] == cell.seconds
        assert set(entry["better"]) == set(entry["scores"]) and set(entry["better"].values()) <= {"higher", "lower"}

    meta = pipelines.read_metadata(out / f"{stem}__fast__s0.50.png")
    assert (meta.method, meta.strength, meta.size) == ("fast", 0.5, comparison.content.size)

    grid = Image.open(out / "grid.png")
    assert grid.size == comparison.grid_image().size
    assert grid.width > 3 * 240 and grid.height > 2 * 120  # a header column + 3 strengths, a header row + 2 rows


def test_failed_cells_show_their_reason_in_the_grid(two_methods):
    comparison, _ = two_methods
    grid = comparison.grid_image(cell_width=200)
    pink = int(np.all(np.asarray(grid) == (246, 232, 232), axis=-1).sum())
    assert pink > 3 * 200 * 80  # the three artfusion cells are drawn as failed boxes
    assert comparison.grid_image(cell_width=200, score_names=[]).size[1] < grid.size[1]


def test_the_zip_holds_the_pictures_with_their_metadata(two_methods):
    comparison, _ = two_methods
    with zipfile.ZipFile(io.BytesIO(comparison.zip_bytes())) as archive:
        names = set(archive.namelist())
        assert names == {c.png for c in comparison.cells if c.ok} | {"grid.png", "scores.json"}
        for cell in comparison.cells:
            if cell.ok:
                meta = pipelines.read_metadata(archive.read(cell.png))
                assert meta.to_dict() == cell.metadata
        assert json.loads(archive.read("scores.json")) == comparison.to_json()


def test_several_styles_get_a_row_each_and_distinct_file_names(offline_context, content_path, tmp_path):
    twin = tmp_path / "b" / "van-gogh-starry-night.jpg"
    twin.parent.mkdir()
    shutil.copy(ASSETS / "style" / "munch-the-scream.jpg", twin)
    styles = [ASSETS / "style" / "van-gogh-starry-night.jpg", twin, tmp_path / "missing.jpg"]
    comparison = compare(content_path, styles, max_side=SIDE, context=offline_context, score_names=["content_ssim"])
    assert [c.style for c in comparison.cells] == [
        "van-gogh-starry-night.jpg",
        "van-gogh-starry-night.jpg (2)",
        "missing.jpg",
    ]
    assert [c.png for c in comparison.cells] == [
        "van-gogh-starry-night__fast__s0.70.png",
        "van-gogh-starry-night-2__fast__s0.70.png",
        "missing__fast__s0.70.png",
    ]
    assert comparison.cells[0].ok and comparison.cells[1].ok
    assert "missing.jpg" in comparison.cells[2].error  # an unreadable style fails its own cells only
    assert comparison.cells[0].scores != comparison.cells[1].scores


def test_bad_arguments_fail_before_anything_runs(content_path, style_path):
    for bad in ({"strengths": (1.5,)}, {"methods": ()}, {"score_names": ["sharpness"]}):
        with pytest.raises(pipelines.InvalidRequestError):
            compare(content_path, style_path, **bad)


# ---- the command line -----------------------------------------------------------------------------------------


def test_python_m_pipelines_compare_end_to_end(tmp_path, content_path, style_path):
    out = tmp_path / "grid"
    args = ["compare", "--content", str(content_path), "--style", str(style_path), "--methods", "fast"]
    args += ["--strengths", "0", "0.5", "1", "--max-side", str(SIDE), "-o", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 cells: 3 made, 0 failed" in done.stdout
    entries = json.loads((out / "scores.json").read_text())
    assert [(e["method"], e["strength"], e["style"]) for e in entries] == [
        ("fast", s, style_path.name) for s in (0.0, 0.5, 1.0)
    ]
    assert entries[0]["scores"]["content_ssim"] == pytest.approx(1.0)  # strength 0 is the content itself
    assert all((out / e["png"]).is_file() for e in entries) and (out / "grid.png").is_file()


def test_the_cli_exits_1_naming_each_failed_cell_and_2_for_bad_usage(tmp_path, content_path, style_path, capsys):
    base = ["compare", "--content", str(content_path), "--style", str(style_path), "--max-side", str(SIDE)]
    code = main([*base, "--methods", "fast", "artfusion", "--strengths", "0", "1", "-o", str(tmp_path / "a")])
    captured = capsys.readouterr()
    assert code == 1
    failed = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and all("artfusion" in line and "--weights" in line for line in failed)
    assert "4 cells: 2 made, 2 failed" in captured.out
    assert len(json.loads((tmp_path / "a" / "scores.json").read_text())) == 4

    # With several methods, --weights names the one it is for.
    weights = ["--weights", "artfusion=/nonexistent/artfusion.ckpt", "--methods", "fast", "artfusion"]
    assert main([*base, *weights, "-o", str(tmp_path / "w")]) == 1
    assert "ArtFusion weights /nonexistent/artfusion.ckpt were not found" in capsys.readouterr().err

    out = ["-o", str(tmp_path / "b")]
    for bad in (
        ["--strengths", "1.5"],
        ["--scores", "sharpness"],
        ["--methods", "fast", "artfusion", "--weights", "x"],
    ):
        assert main([*base, *bad, *out]) == 2, bad
    assert "--weights METHOD=PATH_OR_REPO" in capsys.readouterr().err
    for bad in (["--methods", "nonesuch"], ["--strengths", "half"]):  # argparse: one line, status 2
        with pytest.raises(SystemExit) as exited:
            main([*base, *bad, *out])
        assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["compare", "--style", str(style_path), *out])
    assert exited.value.code == 2
    assert not (tmp_path / "b").exists()


# ---- evaluate -------------------------------------------------------------------------------------------------


def test_evaluate_writes_a_row_per_pair_method_and_strength(offline_context, tmp_path):
    pairs = [
        (ASSETS / "content" / "chelsea.jpg", ASSETS / "style" / "van-gogh-starry-night.jpg"),
        (ASSETS / "content" / "coffee.jpg", ASSETS / "style" / "munch-the-scream.jpg"),
    ]
    calls = []
    evaluation = evaluate(
        pairs, strengths=(0, 1), max_side=SIDE, context=offline_context,
        score_names=["content_ssim", "style_distance"], progress=lambda d, t, _: calls.append((d, t)),
    )  # fmt: skip
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    out = evaluation.save(tmp_path / "eval")
    assert {p.name for p in out.iterdir()} == {"results.csv", "results.json", "summary.json", "tradeoff.png"}

    rows = json.loads((out / "results.json").read_text())
    assert [(r["content"], r["style"], r["method"], r["strength"]) for r in rows] == [
        ("chelsea.jpg", "van-gogh-starry-night.jpg", "fast", 0.0),
        ("chelsea.jpg", "van-gogh-starry-night.jpg", "fast", 1.0),
        ("coffee.jpg", "munch-the-scream.jpg", "fast", 0.0),
        ("coffee.jpg", "munch-the-scream.jpg", "fast", 1.0),
    ]
    for row in rows:
        assert set(row) == {
            "content",
            "style",
            "method",
            "strength",
            "seconds",
            "content_ssim",
            "style_distance",
            "error",
        }
        assert row["error"] is None and row["seconds"] > 0
    with open(out / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [float(r["content_ssim"]) for r in table] == [r["content_ssim"] for r in rows]

    summary = {s["strength"]: s for s in json.loads((out / "summary.json").read_text())}
    assert summary[0.0]["pairs"] == 2 and summary[0.0]["content_ssim"] == pytest.approx(1.0)
    assert summary[1.0]["style_distance"] < summary[0.0]["style_distance"]

    plot = Image.open(out / "tradeoff.png")
    assert plot.size == (728, 540)
    blue = np.all(np.asarray(plot.convert("RGB")) == (31, 119, 180), axis=-1).sum()
    assert blue > 100  # the fast curve is drawn


def test_pairs_come_from_folders_of_content_and_style(tmp_path):
    folder = tmp_path / "pairs"
    (folder / "content").mkdir(parents=True)
    (folder / "style").mkdir()
    shutil.copy(ASSETS / "content" / "rocket.jpg", folder / "content")
    for name in ("monet-charing-cross-bridge.jpg", "turner-shipwreck.jpg"):
        shutil.copy(ASSETS / "style" / name, folder / "style")
    assert [(c.name, s.name) for c, s in evaluation_pairs([str(folder)])] == [
        ("rocket.jpg", "monet-charing-cross-bridge.jpg"),
        ("rocket.jpg", "turner-shipwreck.jpg"),
    ]
    assert len(evaluation_pairs(["default"])) == 20
    with pytest.raises(pipelines.InvalidRequestError, match="content/ and style/"):
        evaluation_pairs([str(tmp_path / "nothing")])

    code = main(["evaluate", "--pairs", str(folder), "--strengths", "0.5", "--max-side", str(SIDE), "--scores",
                 "content_ssim", "style_distance", "-o", str(tmp_path / "out")])  # fmt: skip
    assert code == 0
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 2
