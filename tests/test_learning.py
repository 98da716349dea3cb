"""Style learning through the one door: ``pipelines.learn_style`` checks at once, then yields its steps; a
cancel stops it at the next step with a checkpoint the same name resumes from."""

import time

import pytest
from conftest import app_context

import pipelines


@pytest.fixture
def context(app_models, tmp_path):
    return app_context(app_models, library_dir=tmp_path / "styles")


def test_bad_requests_fail_before_any_model_is_loaded(context, style_path, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    cases = [
        (dict(style=notes, name="x"), "not an image this app can read"),
        (dict(style=style_path, name="!!!"), "has no letters or digits"),
        (dict(style=style_path, name="x", preset="slow"), "preset must be one of"),
        (dict(style=style_path, name="x", steps=0), "steps must be a whole number of at least 1"),
        (dict(style=style_path, name="x", clip_mode="odd"), "clip_mode must be paper or code"),
        (dict(style=style_path, name="x", resolution=5000), "resolution must be from 32 to 1024"),
    ]
    started = time.perf_counter()
    for arguments, message in cases:
        with pytest.raises(pipelines.StudioError, match=message):
            pipelines.learn_style(**arguments, context=context)
    assert time.perf_counter() - started < 2 and not context.pipelines.stats().keys  # nothing was loaded


def test_a_run_yields_loading_every_step_then_done_and_the_style_is_in_the_library(context, style_path):
    run = pipelines.learn_style(style_path, "Iterated Waves", steps=4, resolution=32, context=context)
    events = list(run)
    assert [e.kind for e in events] == ["loading", "step", "step", "step", "step", "done"]
    assert [e.step for e in events if e.kind == "step"] == [1, 2, 3, 4] and all(e.total == 4 for e in events[1:5])
    assert run.entry.slug == "iterated-waves" and events[-1].entry == run.entry
    assert [e.slug for e in pipelines.style_library(context).list()] == ["iterated-waves"]
    with pytest.raises(pipelines.InvalidRequestError, match="already exists"):
        pipelines.learn_style(style_path, "iterated waves", steps=4, resolution=32, context=context)


def test_cancel_stops_at_the_next_step_and_the_same_name_resumes(context, style_path):
    run = pipelines.learn_style(style_path, "Patient", steps=40, resolution=32, checkpoint_every=2, context=context)
    kinds = []
    for event in run:
        kinds.append(event.kind)
        if event.kind == "step" and event.step == 3:
            run.cancel()
    assert kinds[-1] == "cancelled" and kinds.count("step") <= 4 and run.entry is None
    assert pipelines.style_library(context).list() == []  # nothing half-made is listed
    resumed = pipelines.learn_style(style_path, "Patient", steps=40, resolution=32, context=context)
    steps = [e.step for e in resumed if e.kind == "step"]
    assert steps[0] > 1 and steps[-1] == 40 and resumed.entry.slug == "patient"  # it went on where it stopped


def test_a_failure_inside_the_run_is_raised_from_the_iteration(context, style_path):
    broken = context.with_overrides(weights={"inst": "/nowhere/sd::/nowhere/clip"})
    with pytest.raises(pipelines.MethodUnavailableError, match="was not found"):
        pipelines.learn_style(style_path, "never", steps=2, resolution=32, context=broken)
    offline = context.with_overrides(weights={"inst": "nobody/sd::nobody/clip"})
    run = pipelines.learn_style(style_path, "never", steps=2, resolution=32, context=offline)
    with pytest.raises(pipelines.MethodUnavailableError, match="offline"):
        list(run)
    with pytest.raises(pipelines.MethodUnavailableError, match="offline"):  # remembered: refused at once
        pipelines.learn_style(style_path, "never", steps=2, resolution=32, context=offline)
