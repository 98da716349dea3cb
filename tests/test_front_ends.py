"""The shape the front ends rely on: one door into ``pipelines``, one request schema that every front end follows,
settings built at the edges, the envelope every method shares, remembered load failures and instant offline
detection."""

import argparse
import ast
import dataclasses
import inspect
import re
import threading
import time

import numpy as np
import pytest
from conftest import ROOT, gradient_image
from PIL import Image

import pipelines
from pipelines.core import method as method_module

FRONT_ENDS = ["demo.py", "pipelines/__main__.py", "modal_app.py"]


# ---- one door ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_front_ends_import_nothing_below_the_package(front_end):
    tree = ast.parse((ROOT / front_end).read_text())
    deep = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipelines."):
            deep.append(node.module)
        if isinstance(node, ast.Import):
            deep += [alias.name for alias in node.names if alias.name.startswith("pipelines.")]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pipelines":
            assert node.attr in pipelines.__all__ or node.attr.startswith("__"), f"pipelines.{node.attr} is not public"
    assert deep == [], f"{front_end} reaches below the public surface: {deep}"


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_no_front_end_function_is_much_over_80_lines(front_end):
    tree = ast.parse((ROOT / front_end).read_text())
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 85
    ]
    assert long == []


def test_everything_exported_exists():
    missing = [name for name in pipelines.__all__ if not hasattr(pipelines, name)]
    assert missing == []


# ---- explicit settings ------------------------------------------------------------------------------------------


def test_only_the_context_reads_studio_settings_from_the_environment():
    """Below the edges nothing reads os.environ for a setting, and nothing writes it to pass a message."""
    offenders = []
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if relative == "pipelines/core/context.py":
            continue
        for number, line in enumerate(text.splitlines(), 1):
            reads = re.search(r"os\.(environ|getenv)", line)
            if reads and not (relative == "pipelines/__main__.py" and "setdefault(name, value)" in line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


def test_the_context_is_built_from_flags_over_the_environment(tmp_path):
    env = {
        "HOME": str(tmp_path),
        "STYLE_STUDIO_CACHE": str(tmp_path / "cache"),
        "STYLE_STUDIO_LIBRARY": str(tmp_path / "styles"),
        "STYLE_STUDIO_COMPILE": "on",
        "STYLE_STUDIO_DEVICE": "cpu",
        "STYLE_STUDIO_WEIGHTS": "artfusion=/models/a.ckpt, inst=sd::clip",
    }
    context = pipelines.StudioContext.from_environment(env)
    assert (context.device, context.compile, context.backend) == ("cpu", "on", "local")
    assert context.cache_dir == tmp_path / "cache" and context.styles_dir == tmp_path / "styles"
    assert context.weights == {"artfusion": "/models/a.ckpt", "inst": "sd::clip"}
    flagged = pipelines.StudioContext.from_environment(env, compile="off", weights={"artfusion": "/b.ckpt"})
    assert flagged.compile == "off" and flagged.weights["artfusion"] == "/b.ckpt"
    assert pipelines.StudioContext.from_environment({"HOME": str(tmp_path)}).styles_dir == (
        tmp_path / ".cache" / "style-studio" / "styles"
    )
    with pytest.raises(pipelines.InvalidRequestError, match="METHOD=PATH_OR_REPO"):
        pipelines.StudioContext.from_environment({"STYLE_STUDIO_WEIGHTS": "picasso=/x"})


def test_a_variant_context_shares_the_loaded_pipelines_and_remembered_failures():
    context = pipelines.StudioContext()
    variant = context.with_overrides(device="cpu", weights={"artfusion": "/x.ckpt"})
    assert variant.pipelines is context.pipelines and variant.availability is context.availability
    assert variant.device == "cpu" and context.device == "auto" and variant.weights == {"artfusion": "/x.ckpt"}


# ---- one request schema ---------------------------------------------------------------------------------------


def test_the_schema_is_the_request_dataclass():
    assert [p.name for p in pipelines.REQUEST_PARAMETERS] == [
        f.name for f in dataclasses.fields(pipelines.StyleRequest)
    ]
    for param in pipelines.REQUEST_PARAMETERS:
        assert param.label and param.help, param.name
        if param.kind in ("fraction", "int"):
            assert param.minimum is not None and param.maximum is not None, param.name


def test_a_new_parameter_reaches_every_front_end_from_one_declaration(monkeypatch):
    """Declare one more parameter: the CLI flag, the API signature, the Modal flag and the page's widget follow."""
    import demo
    import modal_app
    from pipelines.__main__ import build_parser

    extra = pipelines.Parameter("grain", "fraction", 0.25, "Film grain", "how much grain to add", 0.0, 1.0, 0.05)
    monkeypatch.setattr(pipelines, "REQUEST_PARAMETERS", (*pipelines.REQUEST_PARAMETERS, extra))

    stylize = build_parser()._subparsers._group_actions[0].choices["stylize"]
    assert stylize.parse_args(["--content", "a.jpg", "--grain", "0.5"]).grain == 0.5
    api = demo._api_function("stylize", "doc", lambda values: values)
    assert inspect.signature(api).parameters["grain"].default == 0.25
    assert "grain: how much grain to add." in api.__doc__
    assert api(content={"path": "a.jpg"})["grain"] == 0.25
    assert "grain" in {p.name for p in modal_app._entrypoint_parameters()}
    with demo.gr.Blocks():
        tab = demo._render_stylize_tab(pipelines.StudioContext(device="cpu"), "fast")
    assert tab.request["grain"].label == "Film grain"


def test_metadata_is_typed_round_trips_and_reads_the_earlier_format():
    result = pipelines.stylize(gradient_image(), gradient_image(seed=1), method="fast", strength=0.3)
    meta = result.metadata
    assert isinstance(meta, pipelines.ResultMetadata) and isinstance(meta.timings, pipelines.Timings)
    assert pipelines.ResultMetadata.from_dict(meta.to_dict()) == meta
    assert meta.method == "fast" and meta["strength"] == 0.3 and dict(meta)["options"] == {}
    old = {**meta.to_dict(), "extras": {"eta": 0.5}}  # version 0.1 called the options "extras"
    del old["options"]
    assert pipelines.ResultMetadata.from_dict(old).parameters["options"] == {"eta": 0.5}
    assert meta.summary() == f"fast · strength 0.30 · 96×64 · {meta.timings.total_s:.2f} s on cpu"


# ---- the envelope every method shares ------------------------------------------------------------------------


class _RecordingMethod(pipelines.StyleMethod):
    """Paints the picture black, and records what the core handed it."""

    name = "recording-test"
    label = description = strength_mapping = "recording (test)"
    fade_in_below = 0.5
    steps = pipelines.StepsSpec(default=3, minimum=1, maximum=10)
    loads: list = []
    calls: list = []
    failure: Exception | None = None

    def load(self, weights, device, dtype, context):
        self.loads.append(weights)
        if self.failure is not None:
            raise self.failure
        return object()

    def generate(self, model, inputs, context):
        self.calls.append(inputs)
        import torch

        draw = torch.randint(0, 2**31, (1,), generator=inputs.generator()).item()  # the core's seeded generator
        inputs.derived["first_draw"] = draw
        for step in range(inputs.steps):
            inputs.progress(step + 1, inputs.steps, f"step {step + 1}")
        return Image.new("RGB", inputs.content.size)


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setattr(method_module, "_REGISTRY", dict(method_module._REGISTRY))
    monkeypatch.setattr(_RecordingMethod, "loads", [])
    monkeypatch.setattr(_RecordingMethod, "calls", [])
    monkeypatch.setattr(_RecordingMethod, "failure", None)
    return pipelines.register_method(_RecordingMethod())


def test_strength_zero_is_the_content_without_loading_anything(recording):
    content = gradient_image()
    result = pipelines.stylize(content, gradient_image(seed=1), method="recording-test", strength=0.0)
    assert result.image.tobytes() == content.tobytes()
    assert _RecordingMethod.loads == [] and _RecordingMethod.calls == []


def test_below_fade_in_the_core_cross_fades_continuously(recording):
    content = gradient_image()
    faded = pipelines.stylize(content, gradient_image(seed=1), method="recording-test", strength=0.25).image
    full = pipelines.stylize(content, gradient_image(seed=1), method="recording-test", strength=0.5).image
    expected = np.asarray(content, float) * 0.5  # halfway between the content and black
    assert np.abs(np.asarray(faded, float) - expected).max() <= 1
    assert np.asarray(full).max() == 0


def test_the_seed_reaches_the_method_as_a_seeded_generator_and_is_recorded(recording):
    first = pipelines.stylize(gradient_image(), gradient_image(seed=1), method="recording-test", strength=0.9, seed=42)
    again = pipelines.stylize(gradient_image(), gradient_image(seed=1), method="recording-test", strength=0.9, seed=42)
    assert first.metadata.seed == 42 and first.metadata.derived["first_draw"] == again.metadata.derived["first_draw"]
    drawn = pipelines.stylize(gradient_image(), gradient_image(seed=1), method="recording-test", strength=0.9)
    assert isinstance(drawn.metadata.seed, int)


def test_a_cancelled_generation_raises_and_changes_nothing(recording):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(pipelines.GenerationCancelled):
        pipelines.stylize(gradient_image(), gradient_image(seed=1), method="recording-test", cancel=cancel)
    assert _RecordingMethod.calls == []


def test_the_artfusion_loop_stops_at_the_next_step_when_cancelled(tmp_path):
    """A diffusers-style interrupt flag, checked each step: cancelled after step 2 of 20, it stops there."""
    from artfusion_tiny import tiny_pipeline

    tiny_pipeline().save_pretrained(tmp_path / "tiny")
    cancel, steps = threading.Event(), []

    def progress(done, total, text):
        if text.startswith("Denoising"):
            steps.append(done)
            if done == 2:
                cancel.set()

    with pytest.raises(pipelines.GenerationCancelled):
        pipelines.stylize(gradient_image(64, 64), gradient_image(64, 64, seed=1), method="artfusion", steps=20,
                          weights=str(tmp_path / "tiny"), device="cpu", progress=progress, cancel=cancel)  # fmt: skip
    assert steps == [1, 2]


# ---- weights that cannot be reached --------------------------------------------------------------------------


def test_a_load_failure_is_remembered_until_retry(recording):
    context = pipelines.StudioContext(device="cpu")  # nothing loaded yet
    _RecordingMethod.failure = pipelines.MethodUnavailableError("no weights here")
    for _ in range(2):
        with pytest.raises(pipelines.MethodUnavailableError, match="no weights here"):
            pipelines.stylize(gradient_image(), gradient_image(seed=1), method="recording-test", context=context)
    assert len(_RecordingMethod.loads) == 1  # the second request did not try again
    assert "recording-test" in context.availability.unavailable()
    _RecordingMethod.failure = None
    pipelines.retry_method("recording-test", context=context)
    pipelines.stylize(gradient_image(), gradient_image(seed=1), method="recording-test", context=context)
    assert len(_RecordingMethod.loads) == 2 and not context.availability.unavailable()


def test_remembered_failures_expire():
    availability = pipelines.Availability(retry_after_s=300)
    error = pipelines.MethodUnavailableError("gone")
    availability.record("artfusion", "w", error, now=1000.0)
    with pytest.raises(pipelines.MethodUnavailableError):
        availability.check("artfusion", "w", now=1299.0)
    availability.check("artfusion", "w", now=1300.0)  # five minutes later: tried again
    assert availability.unavailable(now=1300.0) == {}


def test_a_closed_hub_is_detected_at_once(monkeypatch):
    from huggingface_hub import constants

    from pipelines.core import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a closed port on this machine
    hub.forget_reachability()
    started = time.perf_counter()
    assert hub.hub_reachable() is False and time.perf_counter() - started < hub.PROBE_TIMEOUT_S + 0.5
    assert "127.0.0.1 cannot be reached" in hub.offline_reason()
    hub.forget_reachability()


def test_errors_spell_their_fix_for_each_front_end():
    error = pipelines.MethodUnavailableError(
        "ArtFusion weights could not be fetched.", fix=pipelines.WeightsFix("artfusion", "/w/a.ckpt")
    )
    assert error.for_front_end("cli").endswith("To use your own copy: --weights /w/a.ckpt.")
    assert error.for_front_end("app").endswith("start the app with --weights artfusion=/w/a.ckpt.")
    assert "STYLE_STUDIO_WEIGHTS" in error.for_front_end("modal")
    assert str(error).endswith('weights={"artfusion": "/w/a.ckpt"}.')
    assert not str(error).endswith("..")


def test_the_app_refuses_weights_that_cannot_exist_at_start(capsys, tmp_path):
    import demo

    with pytest.raises(SystemExit) as stop:
        demo.main(["--weights", f"artfusion={tmp_path / 'missing.ckpt'}", "--backend", "local"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "missing.ckpt were not found" in err and "--weights artfusion=" in err


def test_the_parsers_are_argparse_parsers():
    import demo
    from pipelines.__main__ import build_parser

    assert isinstance(build_parser(), argparse.ArgumentParser) and isinstance(
        demo.build_parser(), argparse.ArgumentParser
    )


def test_weights_that_cannot_exist_are_refused_on_every_path(tmp_path):
    context = pipelines.StudioContext(device="cpu", weights={"inst": "/nope/sd::/nope/clip"})
    with pytest.raises(pipelines.MethodUnavailableError, match="InST model folder /nope/sd was not found"):
        pipelines.preload("inst", context=context)
    assert context.availability.unavailable() == {}  # a typo is not remembered as "the Hub is down"


def test_the_default_method_is_the_most_capable_one_whose_weights_can_be_had(monkeypatch, tmp_path):
    """On a GPU the default is chosen among methods that can run there, asked once per few minutes."""
    from pipelines.core import studio

    monkeypatch.setattr(studio, "resolve_device", lambda device: "cuda")
    monkeypatch.setattr(method_module, "_REGISTRY", dict(method_module._REGISTRY))
    asked = []

    class Reachable(pipelines.StyleMethod):
        label = description = strength_mapping = "test"
        reachable = True

        def prefers(self, device):
            return device == "cuda"

        def weights_reachable(self, weights):
            asked.append(self.name)
            return self.reachable

        def load(self, weights, device, dtype, context):
            return None

        def generate(self, model, inputs, context):
            return inputs.content

    best = type("Best", (Reachable,), {"name": "best-test", "priority": 100, "reachable": False})
    second = type("Second", (Reachable,), {"name": "second-test", "priority": 99})
    pipelines.register_method(best())
    pipelines.register_method(second())
    context = pipelines.StudioContext(device="cuda")
    assert pipelines.resolve_method(None, context).name == "second-test"  # the best one's weights are out of reach
    assert pipelines.resolve_method(None, context).name == "second-test"
    assert asked == ["best-test", "second-test"]  # remembered, not asked again
    assert pipelines.default_method_name("cuda") == "best-test"  # without the check: by priority alone
    pipelines.retry_method(context=context)
    best.reachable = True
    assert pipelines.resolve_method(None, context).name == "best-test"


def test_weights_reachability_is_answered_offline_from_what_is_here(tmp_path):
    artfusion, inst = pipelines.get_method("artfusion"), pipelines.get_method("inst")
    assert not artfusion.weights_reachable("nobody/no-such-repo")  # offline (tests), not cached
    assert not artfusion.weights_reachable(str(tmp_path / "missing.ckpt"))
    (tmp_path / "a.ckpt").write_bytes(b"x")
    assert artfusion.weights_reachable(str(tmp_path / "a.ckpt"))
    assert not inst.weights_reachable(f"{tmp_path}::nobody/clip")
