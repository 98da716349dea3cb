"""Opt-in torch.compile: the setting, the flags, and the denoiser captured as one static graph.

Inductor code generation is what a GPU run measures (bench/artfusion.py --compile); here the graph capture
itself is checked with backends that do not generate code: a graph break, data-dependent control flow or a
host synchronisation in the denoiser fails ``fullgraph=True``, and the same would stop CUDA graphs."""

import numpy as np
import pytest
import torch
from artfusion_tiny import tiny_pipeline
from conftest import gradient_image

import pipelines
from pipelines.core.compiling import check_compile_setting, compile_mode
from pipelines.core.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "off"),
        ("", "off"),
        ("0", "off"),
        ("off", "off"),
        ("1", "on"),
        ("ON", "on"),
        ("max-autotune", "max-autotune"),
    ],
)
def test_settings_are_normalised(value, expected):
    assert check_compile_setting(value) == expected


def test_an_unknown_setting_says_what_is_accepted():
    with pytest.raises(InvalidRequestError, match="use off, on, or one of default, reduce-overhead"):
        check_compile_setting("fastest")


def test_on_means_cuda_graphs_on_cuda_and_default_elsewhere():
    assert compile_mode("on", "cuda:0") == "reduce-overhead" and compile_mode("on", "cpu") == "default"
    assert compile_mode("max-autotune-no-cudagraphs", "cuda") == "max-autotune-no-cudagraphs"
    assert compile_mode("off", "cuda") is None


def test_the_setting_comes_from_the_environment_only_at_the_edge():
    assert pipelines.StudioContext.from_environment({"STYLE_STUDIO_COMPILE": "on"}).compile == "on"
    assert pipelines.StudioContext.from_environment({"STYLE_STUDIO_COMPILE": "on"}, compile="off").compile == "off"
    assert pipelines.StudioContext.from_environment({}).compile == "off"


def run(pipe, content, style, steps=3):
    return pipe(
        content, style, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_artfusion_denoiser_is_one_static_graph_and_compiling_changes_nothing(backend):
    torch._dynamo.reset()
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    content, style = gradient_image(64, 96), gradient_image(64, 64, seed=1)
    eager = run(pipe, content, style)
    pipe.unet = torch.compile(pipe.unet, backend=backend, fullgraph=True, dynamic=False)
    compiled = run(pipe, content, style)
    again = run(pipe, content, style)  # the same size: replayed, not recompiled
    np.testing.assert_allclose(compiled, eager, atol=1e-5)
    assert np.array_equal(compiled, again)


def test_compile_flag_reaches_the_loaded_pipeline_and_the_metadata(tmp_path, monkeypatch, studio_context):
    torch._dynamo.reset()
    folder = tmp_path / "tiny-artfusion"
    tiny_pipeline().save_pretrained(folder)
    requested = []
    real_compile = torch.compile

    def recording_compile(module, **kwargs):
        requested.append(kwargs)
        return real_compile(module, backend="eager", fullgraph=kwargs["fullgraph"], dynamic=kwargs["dynamic"])

    def make(strength, context):
        return pipelines.stylize(
            gradient_image(64, 64), gradient_image(64, 64, seed=2), method="artfusion", weights=str(folder),
            strength=strength, steps=2, seed=1, device="cpu", context=context,
        )  # fmt: skip

    plain = make(0.7, studio_context)
    monkeypatch.setattr(torch, "compile", recording_compile)
    compiled = make(0.7, studio_context.with_overrides(compile="on"))  # another cache key: loaded again, compiled
    assert requested == [{"mode": "default", "fullgraph": True, "dynamic": False}]
    assert compiled.metadata["derived"]["compiled"] == "default" and "compiled" not in plain.metadata["derived"]
    assert np.abs(np.asarray(compiled.image, float) - np.asarray(plain.image, float)).max() <= 1


def test_cli_refuses_an_unknown_compile_mode_in_one_line(capsys, content_path, style_path):
    from pipelines.__main__ import main

    code = main(["stylize", "--content", str(content_path), "--style", str(style_path), "--compile", "turbo"])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown compile setting 'turbo'" in err and len(err.strip().splitlines()) == 1


def test_app_flag_sets_the_mode_in_the_apps_context_and_refuses_nonsense(monkeypatch, capsys):
    import demo

    built = []
    app = type("App", (), {"launch": lambda self, **kw: None})()
    monkeypatch.setattr(demo, "build_demo", lambda context, method=None: built.append(context) or app)
    monkeypatch.setattr(demo, "_preload", lambda *a, **k: None)
    monkeypatch.setattr(demo, "_clean_results_forever", lambda: None)
    default = pipelines.default_context()
    try:
        demo.main(["--compile", "--backend", "local", "--device", "cpu"])
    finally:
        pipelines.set_default_context(default)
    assert built and built[0].compile == "on" and compile_mode(built[0].compile, "cuda") == "reduce-overhead"
    with pytest.raises(SystemExit) as stop:
        demo.main(["--compile", "turbo"])
    assert stop.value.code == 2 and "Unknown compile setting 'turbo'" in capsys.readouterr().err
