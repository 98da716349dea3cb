"""The /stylize API through gradio_client against the real app on 127.0.0.1."""

import pytest
from conftest import app_context, gradient_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import pipelines
from pipelines import read_png_metadata

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def client(running_app):
    return Client(running_app, verbose=False)


def test_the_public_endpoints_have_named_parameters(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert sorted(api["named_endpoints"]) == ["/apply_style", "/compare", "/styles", "/stylize"]
    names = [p["parameter_name"] for p in api["named_endpoints"]["/stylize"]["parameters"]]
    assert names == [p.name for p in pipelines.REQUEST_PARAMETERS]  # the request schema, in its order
    assert names == ["content", "style", "method", "strength", "steps", "seed", "max_side", "preserve_color", "options"]
    applied = [p["parameter_name"] for p in api["named_endpoints"]["/apply_style"]["parameters"]]
    assert applied == ["content", "style_name", *(n for n in names if n not in ("content", "style", "method"))]


def test_the_api_page_documents_every_parameter_instead_of_placeholders(running_app):
    import json
    import urllib.request

    with urllib.request.urlopen(running_app + "gradio_api/info", timeout=10) as response:  # noqa: S310 (loopback)
        info = json.load(response)
    documented = {p.name: p.help for p in pipelines.REQUEST_PARAMETERS}
    for endpoint in ("/stylize", "/apply_style"):
        endpoint_info = info["named_endpoints"][endpoint]
        assert endpoint_info["description"]
        for parameter in endpoint_info["parameters"]:
            description = parameter["python_type"]["description"]
            assert description, (endpoint, parameter["parameter_name"])
            name = parameter["parameter_name"]
            if name in documented and name not in ("content", "style"):
                assert description.rstrip(".") == documented[name], name


def test_a_good_request_returns_a_png_with_its_parameters(client, content_path, style_path):
    path = client.predict(
        content=handle_file(str(content_path)),
        style=handle_file(str(style_path)),
        method="fast",
        strength=0.65,
        seed=123,
        max_side=320,
        api_name="/stylize",
    )
    image = Image.open(path)
    assert image.format == "PNG" and max(image.size) == 320
    meta = read_png_metadata(path)
    assert (meta["method"], meta["strength"], meta["seed"], meta["max_side"]) == ("fast", 0.65, None, 320)


def test_unreadable_file_is_an_error_and_the_next_request_still_works(client, tmp_path, content_path, style_path):
    junk = tmp_path / "holiday.png"
    junk.write_bytes(b"definitely not a png")
    with pytest.raises(AppError, match=r"content image \(holiday.png\) is not an image"):
        client.predict(content=handle_file(str(junk)), style=handle_file(str(style_path)), api_name="/stylize")
    path = client.predict(
        content=handle_file(str(content_path)),
        style=handle_file(str(style_path)),
        strength=0.45,
        max_side=128,
        api_name="/stylize",
    )
    assert read_png_metadata(path)["strength"] == 0.45


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"strength": 1.5}, "strength must be between 0 and 1"),
        ({"steps": 25}, None),  # fast has no steps: accepted, ignored, recorded as null
        ({"steps": 0}, "steps must be from 1"),
        ({"seed": -4}, "seed must be from 0"),
        ({"max_side": 10}, "max_side must be from 64"),
        ({"method": "picasso"}, "Unknown method 'picasso'"),
        ({"preserve_color": "maybe"}, "preserve_color must be true or false"),
    ],
)
def test_bad_parameters_get_clear_messages(client, content_path, style_path, params, message):
    call = lambda: client.predict(  # noqa: E731
        content=handle_file(str(content_path)),
        style=handle_file(str(style_path)),
        api_name="/stylize",
        **{"max_side": 96, **params},
    )
    if message is None:
        assert read_png_metadata(call())["steps"] is None
    else:
        with pytest.raises(AppError, match=message):
            call()


def test_artfusion_through_the_api_with_its_options(client, content_path, style_path):
    path = client.predict(
        content=handle_file(str(content_path)),
        style=handle_file(str(style_path)),
        method="artfusion",
        strength=0.6,
        steps=2,
        seed=3,
        max_side=96,
        options={"content_scale": 0.8, "eta": 0.0},
        api_name="/stylize",
    )
    meta = read_png_metadata(path)
    assert (meta["method"], meta["steps"], meta["seed"]) == ("artfusion", 2, 3)
    assert meta["derived"]["content_scale"] == 0.8 and meta["options"] == {"content_scale": 0.8, "eta": 0.0}
    with pytest.raises(AppError, match="no option banana"):
        client.predict(
            content=handle_file(str(content_path)),
            style=handle_file(str(style_path)),
            method="artfusion",
            steps=1,
            max_side=96,
            options={"banana": 1},
            api_name="/stylize",
        )


def test_learned_styles_are_listed_and_applied_through_the_api(app_models, client, content_path, style_path):
    run = pipelines.learn_style(str(style_path), "API Waves", steps=2, resolution=32, context=app_context(app_models))
    assert run.wait().slug == "api-waves"
    listed = client.predict(api_name="/styles")
    assert "api-waves" in [s["slug"] for s in listed]
    path = client.predict(
        content=handle_file(str(content_path)),
        style_name="api-waves",
        strength=0.6,
        steps=5,
        seed=9,
        max_side=64,
        api_name="/apply_style",
    )
    meta = read_png_metadata(path)
    assert meta["method"] == "inst" and meta["derived"]["style_name"] == "api-waves" and meta["seed"] == 9
    with pytest.raises(AppError, match="No learned style 'ghost'"):
        client.predict(
            content=handle_file(str(content_path)), style_name="ghost", steps=5, max_side=64, api_name="/apply_style"
        )


def test_app_start_preloads_the_default_method_in_the_background(monkeypatch):
    """The server starts listening at once; the model loads beside it, so the first user rarely pays the load."""
    import threading

    import demo

    release, started, loading = threading.Event(), threading.Event(), []
    launched = []

    def slow_preload(method, context):
        loading.append(threading.current_thread().name)
        started.set()
        release.wait(10)

    monkeypatch.setattr(demo, "_preload", slow_preload)
    monkeypatch.setattr(demo, "_clean_results_forever", lambda: None)
    monkeypatch.setattr(
        demo, "build_demo", lambda *a, **k: type("App", (), {"launch": lambda self, **kw: launched.append(kw)})()
    )
    monkeypatch.setattr(pipelines, "set_default_context", lambda context: context)
    demo.main(["--backend", "local", "--device", "cpu", "--method", "fast"])
    try:
        assert launched, "launch must not wait for the model"
        assert started.wait(10) and loading == ["preload"]
    finally:
        release.set()


def test_api_writes_only_the_result_and_the_ui_adds_a_jpeg_before_picture(tmp_path, monkeypatch):
    import demo

    monkeypatch.setattr(demo, "RESULTS_DIR", tmp_path)
    result = pipelines.stylize(gradient_image(96, 64), gradient_image(64, 64, seed=1), method="fast", strength=0.3)
    api_file = demo._save(result)
    assert [p.name for p in api_file.parent.iterdir()] == [api_file.name]  # nothing the API does not return
    assert read_png_metadata(api_file)["strength"] == 0.3
    png, before = demo._save_with_before(result)
    assert before.parent == png.parent and before.suffix == ".jpg"
    with Image.open(before) as picture:
        assert picture.size == result.image.size


def test_compare_endpoint_returns_a_zip_of_scored_cells(client, content_path, style_path):
    import io
    import json
    import zipfile
    from pathlib import Path

    archive = client.predict(
        handle_file(str(content_path)),
        [handle_file(str(style_path))],
        ["fast"],
        [0.0, 1.0],
        api_name="/compare",
    )
    with zipfile.ZipFile(io.BytesIO(Path(archive).read_bytes())) as bundle:
        cells = json.loads(bundle.read("scores.json"))
        assert "grid.png" in bundle.namelist()
        assert all(cell["png"] in bundle.namelist() for cell in cells)
    assert [(cell["method"], cell["strength"]) for cell in cells] == [("fast", 0.0), ("fast", 1.0)]
    untouched, styled = cells
    assert untouched["scores"]["content_ssim"] > 0.99 > styled["scores"]["content_ssim"]
    assert untouched["scores"]["style_distance"] > styled["scores"]["style_distance"]
    assert styled["better"]["style_distance"] == "lower"
