"""Batch stylization: inputs from files, folders and globs; the manifest; resuming; the CLI; the Modal fan-out."""

import json
import os
import subprocess
import sys
import threading

import pytest
from conftest import ROOT, gradient_image
from PIL import Image

import pipelines
import pipelines.batch as batch
from pipelines.__main__ import main as cli_main
from pipelines.batch import expand_inputs, output_names, read_manifest, stylize_batch

# The Modal class runs in-process here (``.local``), without the Volume, as Modal warns.
pytestmark = pytest.mark.filterwarnings("ignore:The Studio.*executing locally:UserWarning")
FAST = {"method": "fast", "strength": 0.8, "max_side": 64}


@pytest.fixture
def photos(tmp_path):
    """photos/{a,b,c}.png, photos/sub/d.jpg, photos/notes.txt and a style image."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for seed, name in enumerate(("a.png", "b.png", "c.png")):
        gradient_image(80, 64, seed=seed).save(folder / name)
    gradient_image(64, 80, seed=9).save(folder / "sub" / "d.jpg")
    (folder / "notes.txt").write_text("not a picture")
    style = tmp_path / "style.png"
    gradient_image(64, 64, seed=42).save(style)
    return folder, style


@pytest.fixture
def calls(monkeypatch):
    """The content files the studio was asked to stylize, in order (counts engine runs)."""
    made = []

    def counting_run_here(request, **kwargs):
        made.append(os.path.basename(str(request.content)))
        return pipelines.run_here(request, **kwargs)

    monkeypatch.setattr(batch, "run_here", counting_run_here)
    return made


# ---- inputs and names ---------------------------------------------------------------------------------------


def test_folders_globs_and_files_expand_in_order_once_each(photos, tmp_path):
    folder, _ = photos
    names = lambda paths: [p.relative_to(folder).as_posix() for p in paths]  # noqa: E731
    assert names(expand_inputs([folder])) == ["a.png", "b.png", "c.png"]  # not notes.txt, not the subfolder
    assert names(expand_inputs([folder], recursive=True)) == ["a.png", "b.png", "c.png", "sub/d.jpg"]
    assert names(expand_inputs([f"{folder}/*.png", folder / "b.png"])) == ["a.png", "b.png", "c.png"]
    assert names(expand_inputs([f"{folder}/**/*.jpg"])) == ["sub/d.jpg"]
    # an explicit file is taken as given (a bad one is reported on its line), and the output folder is skipped
    assert names(expand_inputs([folder / "notes.txt", folder], exclude=folder / "sub")) == [
        "notes.txt",
        "a.png",
        "b.png",
        "c.png",
    ]
    assert expand_inputs([folder], recursive=True, exclude=folder / "sub")[-1].name == "c.png"
    (tmp_path / "link.png").symlink_to(folder / "b.png")
    assert [p.name for p in expand_inputs([tmp_path / "link.png", folder / "b.png"])] == ["link.png"]  # one file
    with pytest.raises(pipelines.InvalidRequestError, match="missing.png was not found"):
        expand_inputs([folder / "missing.png"])
    nested = tmp_path / "nested"
    (nested / "inner").mkdir(parents=True)
    gradient_image().save(nested / "inner" / "x.png")
    with pytest.raises(pipelines.InvalidRequestError, match="has no images.*add --recursive"):
        expand_inputs([nested])
    assert [p.name for p in expand_inputs([nested], recursive=True)] == ["x.png"]


def test_an_empty_folder_or_a_glob_matching_nothing_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(pipelines.InvalidRequestError, match="has no images"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(pipelines.InvalidRequestError, match="glob .* has no images"):
        expand_inputs([f"{tmp_path}/*.jpg"])


def test_output_names_resolve_collisions_deterministically_and_keep_earlier_names(tmp_path):
    a, b, c, d = (
        tmp_path / "x" / "cat.jpg",
        tmp_path / "y" / "cat.png",
        tmp_path / "y" / "Cat.JPG",
        tmp_path / "dog.png",
    )
    assert output_names([a, b, c, d], {}) == {a: "cat.png", b: "cat-2.png", c: "Cat-3.png", d: "dog.png"}
    assert output_names([a, b, c, d], {}) == output_names([a, b, c, d], {})
    # names a previous run gave stay with their inputs, whatever the order now; others avoid them
    kept = output_names([a, b, d], {b: "cat.png", tmp_path / "gone.png": "dog.png"})
    assert kept == {b: "cat.png", a: "cat-2.png", d: "dog-2.png"}


# ---- the batch and its manifest -----------------------------------------------------------------------------


def test_a_batch_writes_pictures_and_a_manifest_line_each_and_a_bad_file_does_not_stop_it(photos, tmp_path):
    folder, style = photos
    out = tmp_path / "out"
    summary = stylize_batch([folder, folder / "notes.txt"], style, out, **FAST)
    assert (summary.total, summary.done, summary.failed, summary.skipped, summary.ok) == (4, 3, 1, 0, False)
    assert summary.line().startswith("4 pictures: 3 done, 0 skipped, 1 failed in ")
    assert summary.line().endswith(f"manifest {out / 'manifest.jsonl'}")
    lines = [json.loads(text) for text in (out / "manifest.jsonl").read_text().splitlines()]
    assert lines == read_manifest(out)
    by_name = {os.path.basename(line["input"]): line for line in lines}
    assert set(by_name) == {"a.png", "b.png", "c.png", "notes.txt"}
    for name in ("a", "b", "c"):
        line = by_name[f"{name}.png"]
        assert line["status"] == "done" and line["error"] is None and line["seconds"] > 0
        assert line["output"] == str(out / f"{name}.png")
        assert line["parameters"]["method"] == "fast" and line["parameters"]["strength"] == 0.8
        assert pipelines.read_png_metadata(line["output"])["max_side"] == 64
    bad = by_name["notes.txt"]
    assert (bad["status"], bad["output"]) == ("failed", None)
    assert "not an image this app can read" in bad["error"]
    assert summary.failures == [(bad["input"], bad["error"])]


def test_a_rerun_skips_what_is_done_retries_what_failed_and_redoes_other_parameters(photos, tmp_path, calls):
    folder, style = photos
    out = tmp_path / "out"
    bad = folder / "broken.png"
    bad.write_bytes(b"\x89PNG truncated")
    stylize_batch([folder], style, out, workers=1, **FAST)
    assert sorted(calls) == ["a.png", "b.png", "broken.png", "c.png"]

    calls.clear()
    again = stylize_batch([folder], style, out, **FAST)
    assert calls == ["broken.png"]  # the engine did not run again for the three done pictures
    assert (again.done, again.skipped, again.failed) == (0, 3, 1)
    latest = {os.path.basename(r["input"]): r for r in read_manifest(out, latest=True)}
    assert latest["a.png"]["status"] == "skipped" and latest["a.png"]["output"] == str(out / "a.png")
    assert len(read_manifest(out)) == 8  # an append-only log: every run's lines are kept

    calls.clear()
    gradient_image(seed=5).save(bad)  # fixed: retried and made
    (out / "b.png").unlink()  # a deleted output is made again
    fixed = stylize_batch([folder], style, out, **FAST)
    assert sorted(calls) == ["b.png", "broken.png"] and fixed.ok and (fixed.done, fixed.skipped) == (2, 2)

    calls.clear()
    other = stylize_batch([folder], style, out, **{**FAST, "strength": 0.3})
    assert sorted(calls) == ["a.png", "b.png", "broken.png", "c.png"] and other.done == 4
    assert pipelines.read_png_metadata(out / "a.png")["strength"] == 0.3


def test_same_names_from_two_folders_get_two_outputs(photos, tmp_path):
    folder, style = photos
    other = tmp_path / "other"
    other.mkdir()
    gradient_image(seed=7).save(other / "a.png")
    out = tmp_path / "out"
    stylize_batch([folder / "a.png", other / "a.png"], style, out, **FAST)
    outputs = {r["input"]: r["output"] for r in read_manifest(out)}
    assert outputs == {str(folder / "a.png"): str(out / "a.png"), str(other / "a.png"): str(out / "a-2.png")}
    # a rerun in the other order keeps each picture's name (and makes nothing)
    again = stylize_batch([other / "a.png", folder / "a.png"], style, out, **FAST)
    assert again.skipped == 2 and {r["input"]: r["output"] for r in read_manifest(out, latest=True)} == outputs


def test_pictures_made_in_parallel_are_the_ones_made_one_at_a_time(photos, tmp_path):
    folder, style = photos
    serial = stylize_batch([folder], style, tmp_path / "serial", workers=1, **FAST)
    parallel = stylize_batch([folder], style, tmp_path / "parallel", workers=3, **FAST)
    assert (serial.workers, parallel.workers, parallel.done) == (1, 3, 3)
    for name in ("a.png", "b.png", "c.png"):
        with Image.open(tmp_path / "serial" / name) as one, Image.open(tmp_path / "parallel" / name) as other:
            assert one.tobytes() == other.tobytes()


def test_the_diffusion_methods_take_one_picture_at_a_time():
    assert batch.default_workers("fast", cpu_count=16) == batch.MAX_LOCAL_WORKERS
    assert batch.default_workers("fast", cpu_count=1) == 2
    assert batch.default_workers("artfusion", cpu_count=16) == 1


def test_cancel_stops_the_batch_and_the_next_run_makes_the_rest(photos, tmp_path, calls):
    folder, style = photos
    out = tmp_path / "out"
    cancel = threading.Event()
    summary = stylize_batch([folder], style, out, workers=1, cancel=cancel, progress=lambda *_: cancel.set(), **FAST)
    assert (summary.done, summary.not_run, summary.ok) == (1, 2, False)
    assert "2 not run (cancelled)" in summary.line()
    assert [r["status"] for r in read_manifest(out)] == ["done"]  # no line for what was not made
    calls.clear()
    rest = stylize_batch([folder], style, out, **FAST)
    assert (rest.done, rest.skipped, rest.ok) == (2, 1, True) and len(calls) == 2


def test_problems_shared_by_every_picture_fail_before_anything_runs(photos, tmp_path, calls):
    folder, style = photos
    out = tmp_path / "out"
    with pytest.raises(pipelines.InvalidRequestError, match="strength"):
        stylize_batch([folder], style, out, method="fast", strength=2)
    with pytest.raises(pipelines.ImageInputError, match="style image"):
        stylize_batch([folder], folder / "notes.txt", out, method="fast")
    with pytest.raises(pipelines.InvalidRequestError, match="needs a style image"):
        stylize_batch([folder], None, out, method="fast")
    with pytest.raises(pipelines.InvalidRequestError, match="Unknown request parameter"):
        stylize_batch([folder], style, out, method="fast", strenght=0.5)
    assert calls == [] and not (out / "manifest.jsonl").exists()


def test_a_line_cut_short_by_a_crash_is_left_out(tmp_path):
    record = {"input": "/x/a.png", "status": "done", "output": "/o/a.png"}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(record) + '\n{"input": "/x/b.png", "sta')
    assert read_manifest(tmp_path) == [record] and read_manifest(tmp_path / "nowhere") == []


# ---- the command line ---------------------------------------------------------------------------------------


def test_the_cli_exits_1_when_a_picture_failed_and_says_so_in_one_line(photos, tmp_path, capsys):
    folder, style = photos
    out = tmp_path / "out"
    code = cli_main(["stylize-batch", str(folder), str(folder / "notes.txt"), "--style", str(style), "-o", str(out),
                     "--method", "fast", "--max-side", "64", "--strength", "0.5"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 1
    assert len(printed.out.strip().splitlines()) == 1 and "3 done, 0 skipped, 1 failed" in printed.out
    assert f"failed: {folder / 'notes.txt'}: The content image (notes.txt) is not an image" in printed.err
    assert {r["parameters"]["strength"] for r in read_manifest(out)} == {0.5}
    assert cli_main(["stylize-batch", str(tmp_path / "nothing"), "--style", str(style), "-o", str(out)]) == 2
    assert "nothing was not found" in capsys.readouterr().err


def test_python_m_pipelines_stylize_batch_end_to_end(photos, tmp_path):
    folder, style = photos
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "stylize-batch",
            f"{folder}/*.png",
            str(folder / "sub"),
            "--style",
            str(style),
            "-o",
            str(out),
            "--method",
            "fast",
            "--max-side",
            "64",
            "--workers",
            "2",
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("4 pictures: 4 done, 0 skipped, 0 failed")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png", "d.png", "manifest.jsonl"]


# ---- the Modal fan-out --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def container():
    """The Modal class run in-process (``.local``), as the deployed app runs it."""
    import modal_app

    instance = modal_app.Studio()
    instance.progress.local("warm-up")  # runs @modal.enter()
    return instance


class _FakeMap:
    """``modal.Cls.from_name(...)`` for a batch: ``stylize_batch_item.starmap`` runs every input through the real
    method (``.local``) and returns the outputs out of order, with one input lost to a 'dead container'."""

    def __init__(self, container, lose=None):
        self.container, self.lose, self.options = container, lose, None

    def __call__(self):
        return self

    @property
    def stylize_batch_item(self):
        return self

    def starmap(self, payloads, *, order_outputs=True, return_exceptions=False):
        self.options = {"order_outputs": order_outputs, "return_exceptions": return_exceptions}
        outputs = []
        for key, content, style, parameters in payloads:
            assert isinstance(content, bytes) and isinstance(style, bytes)
            if self.lose and content == self.lose:
                outputs.append(RuntimeError("container exited unexpectedly"))
            else:
                outputs.append(self.container.stylize_batch_item.local(key, content, style, parameters))
        return iter(outputs[::-1])


def test_the_modal_backend_fans_out_and_writes_results_as_they_come(photos, tmp_path, container, monkeypatch):
    folder, style = photos
    (folder / "notes.txt").rename(folder / "bad.png")
    fake = _FakeMap(container, lose=(folder / "c.png").read_bytes())
    monkeypatch.setattr(pipelines.ModalBackend, "_deployed_class", staticmethod(lambda: fake))
    context = pipelines.default_context().with_overrides(backend="modal")
    out = tmp_path / "out"
    summary = stylize_batch([folder], style, out, context=context, **FAST)
    assert fake.options == {"order_outputs": False, "return_exceptions": True}
    assert (summary.done, summary.failed, summary.workers) == (2, 2, 0)
    lines = {os.path.basename(r["input"]): r for r in read_manifest(out)}
    order = [os.path.basename(r["input"]) for r in read_manifest(out)]
    assert order == ["bad.png", "b.png", "a.png", "c.png"]  # as they came; the lost one when the map ended
    for name in ("a.png", "b.png"):
        assert lines[name]["status"] == "done"
        assert pipelines.read_png_metadata(out / name)["backend"] == "modal"
    assert "not an image this app can read" in lines["bad.png"]["error"]  # the remote's words, on its own line
    assert lines["c.png"]["status"] == "failed" and "container exited unexpectedly" in lines["c.png"]["error"]

    fake.lose = None  # a rerun sends only what is not done
    again = stylize_batch([folder], style, out, context=context, **FAST)
    assert (again.done, again.skipped, again.failed) == (1, 2, 1)


def test_a_modal_map_that_cannot_start_says_what_to_do(photos, tmp_path, monkeypatch):
    import modal.exception

    folder, style = photos

    class NotDeployed:
        def __call__(self):
            return self

        def __getattr__(self, name):
            raise modal.exception.NotFoundError("App 'style-studio' not found")

    monkeypatch.setattr(pipelines.ModalBackend, "_deployed_class", staticmethod(NotDeployed))
    context = pipelines.default_context().with_overrides(backend="modal")
    with pytest.raises(pipelines.RemoteBackendError, match="modal deploy modal_app.py"):
        stylize_batch([folder], style, tmp_path / "out", context=context, **FAST)
