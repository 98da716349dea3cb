"""The web endpoint (pipelines/web.py) through FastAPI's TestClient: both body forms, the token, every 4xx, one real
`fast` picture; and the Modal web functions (the endpoint and the Gradio app) built in-process, without Modal."""

import base64
import io
import json
import re
import subprocess
import sys

import modal.exception
import pytest
from conftest import ASSETS, ROOT, gradient_image
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from test_hardening import png_declaring

import pipelines
from pipelines.web import WebSettings, create_web_app, find_presets, resolve_preset

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PRESETS = [
    "marc-large-blue-horses",
    "monet-charing-cross-bridge",
    "munch-the-scream",
    "turner-shipwreck",
    "van-gogh-starry-night",
]


def png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)
    return buffer.getvalue()


class FakeStudio:
    """Stands in for the studio: records each request and answers the inverted content, metadata included."""

    def __init__(self, error: Exception | None = None) -> None:
        self.requests: list[pipelines.StyleRequest] = []
        self.error = error

    def __call__(self, request: pipelines.StyleRequest) -> pipelines.StyleResult:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        content = request.content
        metadata = pipelines.ResultMetadata(
            parameters={**request.parameters(), "method": request.method},
            content_digest=pipelines.image_digest(content),
            style_digest=pipelines.image_digest(request.style) if request.style is not None else None,
            size=content.size,
        )
        return pipelines.StyleResult(ImageOps.invert(content), metadata, content)


def client(stylize=None, **settings) -> TestClient:
    return TestClient(create_web_app(WebSettings(**settings), stylize=stylize or FakeStudio()))


@pytest.fixture
def studio():
    return FakeStudio()


@pytest.fixture
def web(studio):
    return client(studio, token=TOKEN)


CONTENT = png(gradient_image(96, 64))
STYLE = png(gradient_image(50, 70, seed=2))


def form(**fields):
    """A multipart body: bytes become files, everything else text fields."""
    files = {name: (f"{name}.png", value, "image/png") for name, value in fields.items() if isinstance(value, bytes)}
    data = {name: str(value) for name, value in fields.items() if not isinstance(value, bytes)}
    return {"files": files, "data": data}


# ---- the two body forms ---------------------------------------------------------------------------------------


def test_multipart_with_a_preset_answers_the_png_with_its_parameters_inside(web, studio):
    response = web.post("/stylize", headers=AUTH, **form(content=CONTENT, preset="scream", strength=0.8, seed=3))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (96, 64)
    assert ImageOps.invert(image.convert("RGB")).tobytes() == gradient_image(96, 64).tobytes()  # the studio's picture
    meta = pipelines.read_metadata(response.content)
    assert (meta.method, meta.strength, meta.seed) == ("fast", 0.8, 3)
    (request,) = studio.requests
    painting = pipelines.load_image(ASSETS / "style" / "munch-the-scream.jpg", max_side=1024)
    assert request.style.tobytes() == painting.tobytes()  # the preset's picture, through the same hygiene


def test_multipart_with_an_uploaded_style_and_every_parameter(studio):
    web = client(studio, allowed_methods=("fast", "artfusion"))
    fields = form(content=CONTENT, style=STYLE, method="artfusion", strength="0.25", steps=7, seed=11, max_side=64)
    fields["data"].update(preserve_color="true", options='{"eta": 0}')
    response = web.post("/stylize", **fields)
    assert response.status_code == 200, response.text
    (request,) = studio.requests
    assert request.parameters() == {
        "method": "artfusion",
        "strength": 0.25,
        "steps": 7,
        "seed": 11,
        "max_side": 64,
        "preserve_color": True,
        "options": {"eta": 0},
    }
    assert request.content.size == (64, 43) and request.style.size == (46, 64)  # fitted to max_side


def test_json_base64_round_trip_like_the_prototype(web, studio):
    body = {"image": base64.b64encode(CONTENT).decode(), "preset": "starry-night", "strength": 0.6}
    response = web.post("/stylize", headers=AUTH, json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    answer = response.json()
    returned = base64.b64decode(answer["image"])
    assert Image.open(io.BytesIO(returned)).size == (96, 64)
    assert pipelines.read_metadata(returned).strength == 0.6 == answer["metadata"]["strength"]
    assert answer["preset"] == "van-gogh-starry-night" and answer["summary"].startswith("fast · strength 0.60")


def test_json_with_a_style_image_a_data_url_and_line_breaks(web, studio):
    wrapped = base64.encodebytes(STYLE).decode()  # 76 characters a line, as `base64` prints it
    body = {"image": "data:image/png;base64," + base64.b64encode(CONTENT).decode(), "style_image": wrapped}
    response = web.post("/stylize", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    assert studio.requests[0].style.size == (50, 70)


def test_the_answer_format_follows_the_query_then_the_body_then_accept(web):
    body = {"image": base64.b64encode(CONTENT).decode(), "preset": "scream"}
    as_png = web.post("/stylize?format=png", headers=AUTH, json=body)
    assert as_png.headers["content-type"] == "image/png"
    as_json = web.post("/stylize?format=base64", headers=AUTH, **form(content=CONTENT, preset="scream"))
    assert as_json.headers["content-type"] == "application/json"
    wants_json = {**AUTH, "Accept": "application/json"}
    accept = web.post("/stylize", headers=wants_json, **form(content=CONTENT, preset="scream"))
    assert "image" in accept.json()


def test_uploads_go_through_the_studios_image_hygiene(web, studio):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display", as phones store portraits
    rotated = png(gradient_image(120, 60), format="JPEG", exif=exif)
    assert web.post("/stylize", headers=AUTH, **form(content=rotated, preset="scream")).status_code == 200
    assert studio.requests[0].content.size == (60, 120)


# ---- presets ----------------------------------------------------------------------------------------------------


def test_presets_are_the_bundled_paintings_by_file_name(web):
    assert web.get("/presets", headers=AUTH).json() == {"presets": PRESETS}
    assert list(find_presets(ASSETS / "style")) == PRESETS


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("scream", "munch-the-scream"),
        ("the-scream", "munch-the-scream"),
        ("munch-the-scream", "munch-the-scream"),
        ("Starry Night", "van-gogh-starry-night"),
        ("shipwreck", "turner-shipwreck"),
    ],
)
def test_a_preset_is_named_by_its_file_name_or_an_ending_of_it(name, expected):
    assert resolve_preset(name, find_presets(ASSETS / "style")) == expected


def test_an_ending_that_fits_two_presets_asks_for_the_full_name():
    presets = {"a-night": ASSETS, "b-night": ASSETS}
    with pytest.raises(pipelines.InvalidRequestError, match="could mean a-night, b-night; use the full name"):
        resolve_preset("night", presets)


# ---- the token --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "needs a token: send the header Authorization: Bearer <token>"),
        ({"Authorization": "Bearer wrong"}, "The token is not valid"),
        ({"Authorization": f"Basic {TOKEN}"}, "needs a token"),
        ({"Authorization": "Bearer "}, "needs a token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "The token is not valid"),
    ],
)
def test_a_missing_or_wrong_token_is_refused(web, studio, headers, message):
    for response in (
        web.post("/stylize", headers=headers, **form(content=CONTENT, preset="scream")),
        web.get("/presets", headers=headers),
    ):
        assert response.status_code == 401 and message in response.json()["error"]
        assert response.headers["www-authenticate"] == "Bearer" and TOKEN not in response.text
    assert not studio.requests


def test_the_right_token_passes_and_health_needs_none(web):
    assert web.post("/stylize", headers=AUTH, **form(content=CONTENT, preset="scream")).status_code == 200
    assert web.get("/health").json() == {"status": "ok", "methods": ["fast"], "default_method": "fast"}


def test_without_a_token_setting_the_endpoint_is_open():
    assert client(token="").post("/stylize", **form(content=CONTENT, preset="scream")).status_code == 200


# ---- every refusal: status and a message that says what to change -------------------------------------------------


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


def test_413_for_an_image_over_the_limit_and_a_body_over_the_limit(studio):
    settings = WebSettings(max_upload_bytes=20_000)
    web = TestClient(create_web_app(settings, stylize=studio))
    noise = png(Image.effect_noise((128, 128), 60).convert("RGB"))
    assert settings.max_upload_bytes < len(noise) < settings.max_body_bytes  # the body passes, the image does not
    message = error_of(web.post("/stylize", **form(content=noise, preset="scream")), 413)
    assert message == f"The content image is {len(noise) / 1024:.0f} kB; the limit is 20 kB."
    huge = png(Image.effect_noise((400, 400), 60).convert("RGB"))
    assert len(huge) > settings.max_body_bytes
    assert "The request is larger than 116 kB" in error_of(web.post("/stylize", **form(content=huge)), 413)
    # a body sent in chunks, without Content-Length, is cut off while it is read
    chunked = web.post("/stylize", headers={"Content-Type": "application/json"}, content=iter([b" " * 50_000] * 4))
    assert "The request is larger than 116 kB" in error_of(chunked, 413)
    assert not studio.requests


@pytest.mark.parametrize(("width", "height"), [(9_000, 9_000), (50_000, 50_000)])
def test_413_for_a_picture_declaring_too_many_pixels(web, width, height):
    bomb = png_declaring(width, height)
    message = error_of(web.post("/stylize", headers=AUTH, **form(content=bomb, preset="scream")), 413)
    assert re.search("the limit is 64 MP|under 64 megapixels", message)


def test_415_for_other_body_types_and_for_files_that_are_not_images(web):
    plain = web.post("/stylize", headers={**AUTH, "Content-Type": "text/plain"}, content=b"hello")
    assert "Send multipart/form-data" in error_of(plain, 415)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    message = error_of(web.post("/stylize", headers=AUTH, **form(content=svg, preset="scream")), 415)
    assert (
        message == "The content image is not an image this app can read. Use a PNG, JPEG, WebP, GIF, BMP or TIFF file."
    )
    assert "style image" in error_of(web.post("/stylize", headers=AUTH, **form(content=CONTENT, style=b"text")), 415)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"preset": "mona-lisa"}, "Unknown preset 'mona-lisa'. Presets: " + ", ".join(PRESETS)),
        ({"preset": "scream", "strength": "1.5"}, "strength must be between 0 and 1; got 1.5."),
        ({"preset": "scream", "strength": "strong"}, "strength must be a number from 0 to 1; got 'strong'."),
        ({"preset": "scream", "seed": "-1"}, "seed must be from 0 to 4294967295; got -1."),
        ({"preset": "scream", "method": "artfusion"}, "method must be one of fast; got 'artfusion'."),
        ({"preset": "scream", "max_side": "2048"}, "max_side must be from 64 to 1024; got 2048."),
        ({"preset": "scream", "options": "[1]"}, "options must be a JSON object"),
        ({"preset": "scream", "strenght": "0.5"}, "Unknown field 'strenght'. Fields: content, style, preset, method"),
        ({"preset": "scream", "style": STYLE}, "Send either a style image or a preset, not both."),
        ({}, "Send a style image, or a preset: " + ", ".join(PRESETS)),
    ],
)
def test_422_for_bad_parameters_names_the_field_and_the_range(web, studio, fields, message):
    assert message in error_of(web.post("/stylize", headers=AUTH, **form(content=CONTENT, **fields)), 422)
    assert not studio.requests


def test_422_for_a_missing_content_a_text_content_a_tiny_picture_and_an_unknown_format(web):
    assert "content is missing" in error_of(web.post("/stylize", headers=AUTH, **form(preset="scream")), 422)
    as_text = web.post("/stylize", headers=AUTH, files={"style": ("s.png", STYLE)}, data={"content": "photo"})
    assert error_of(as_text, 422) == "content must be a file."
    tiny = png(gradient_image(10, 10))
    speck = web.post("/stylize", headers=AUTH, **form(content=tiny, preset="scream"))
    assert "each side needs at least 32 px" in error_of(speck, 422)
    body = {"image": base64.b64encode(CONTENT).decode(), "preset": "scream"}
    gif = web.post("/stylize?format=gif", headers=AUTH, json=body)
    assert error_of(gif, 422) == "format must be png, base64 or json; got 'gif'."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"image": ', "The body is not valid JSON"),
        (b"[1, 2]", "The JSON body must be an object"),
        (json.dumps({"image": "not base64!", "preset": "scream"}).encode(), "image is not valid base64"),
        (json.dumps({"image": 12, "preset": "scream"}).encode(), "image must be the image file as a base64 string"),
        (json.dumps({"image": "aGk=", "style_image": "%%"}).encode(), "style_image is not valid base64"),
    ],
)
def test_400_for_malformed_json_or_base64(web, body, message):
    response = web.post("/stylize", headers={**AUTH, "Content-Type": "application/json"}, content=body)
    assert message in error_of(response, 400)


def test_400_for_a_multipart_body_that_cannot_be_parsed(web):
    broken = {**AUTH, "Content-Type": "multipart/form-data"}  # no boundary
    assert "Missing boundary in multipart" in error_of(web.post("/stylize", headers=broken, content=b"--x\r\n"), 400)
    crowded = form(content=CONTENT, preset="scream", **{f"extra{i}": i for i in range(20)})
    assert "Too many fields" in error_of(web.post("/stylize", headers=AUTH, **crowded), 400)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (pipelines.InvalidRequestError("steps for artfusion must be from 1 to 250; got 900."), 422),
        (pipelines.MethodUnavailableError("The artfusion weights could not be reached."), 503),
        (pipelines.RemoteBackendError("The GPU backend could not run this request."), 503),
        (pipelines.OutOfMemoryError("The cuda ran out of memory; try a smaller max side."), 503),
    ],
)
def test_the_studios_own_errors_keep_their_words(error, status):
    response = client(FakeStudio(error)).post("/stylize", **form(content=CONTENT, preset="scream"))
    assert error_of(response, status) == error.message


def test_500_for_anything_unexpected_without_internals(caplog):
    web = client(FakeStudio(RuntimeError("/srv/secret/path exploded")))
    message = error_of(web.post("/stylize", **form(content=CONTENT, preset="scream")), 500)
    assert message.startswith("The studio failed unexpectedly") and "secret" not in message
    assert "Traceback" not in message and "exploded" in caplog.text  # logged for the operator, not told to the client


def test_settings_are_checked_where_they_are_built():
    with pytest.raises(pipelines.InvalidRequestError, match="allowed_methods must name methods"):
        WebSettings(allowed_methods=("fast", "picasso"))
    with pytest.raises(pipelines.InvalidRequestError, match="default_method 'artfusion' is not in allowed_methods"):
        WebSettings(default_method="artfusion")
    assert WebSettings(token="").token is None


# ---- for real: the fast engine through the default studio call ----------------------------------------------------


def test_a_real_fast_picture_through_the_default_stylize(content_path):
    web = TestClient(create_web_app(WebSettings(max_side=128)))
    response = web.post("/stylize", **form(content=content_path.read_bytes(), preset="scream", strength=0.9))
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    meta = pipelines.read_metadata(response.content)
    assert image.size == (128, 85) and meta.size == (128, 85)
    assert (meta.method, meta.strength, meta.device, meta.backend) == ("fast", 0.9, "cpu", "local")
    assert meta.style_digest == pipelines.image_digest(
        pipelines.load_image(ASSETS / "style" / "munch-the-scream.jpg", max_side=128)
    )


# ---- on Modal: the endpoint and the Gradio app, built here without Modal --------------------------------------------


@pytest.fixture(scope="module")
def modal_app():
    import modal_app

    return modal_app


def webhook_type(function) -> str:
    from modal._utils.async_utils import synchronizer
    from modal_proto import api_pb2

    return api_pb2.WebhookType.Name(synchronizer._translate_in(function)._webhook_config.type)


def test_the_endpoint_and_the_gradio_app_are_registered_as_asgi_apps(modal_app):
    assert webhook_type(modal_app.web) == webhook_type(modal_app.ui) == "WEBHOOK_TYPE_ASGI_APP"
    assert not modal_app.download._is_web_endpoint()


def test_the_endpoint_builds_from_the_secret_and_refuses_without_it(modal_app, monkeypatch):
    monkeypatch.setenv("STYLE_STUDIO_WEB_TOKEN", TOKEN)
    web = TestClient(modal_app.web.local())
    assert web.get("/health").json()["methods"] == ["fast", "artfusion", "styleid", "instantstyle"]
    assert web.get("/presets").status_code == 401 and web.get("/presets", headers=AUTH).json()["presets"] == PRESETS
    with pytest.raises(RuntimeError, match="STYLE_STUDIO_WEB_TOKEN is empty"):
        modal_app.web_settings({"STYLE_STUDIO_WEB_AUTH": "token"})
    assert modal_app.web_settings({"STYLE_STUDIO_WEB_AUTH": "proxy"}).token is None
    assert modal_app.web_settings({}).token is None  # proxy auth by default: Modal guards it


def test_the_gradio_factory_mounts_the_whole_app(modal_app):
    app = modal_app.ui.local()
    with TestClient(app) as ui:
        assert ui.get("/").headers["content-type"].startswith("text/html")
        endpoints = ui.get("/gradio_api/info").json()["named_endpoints"]
        assert {"/stylize", "/apply_style", "/styles"} <= set(endpoints)
    assert pipelines.default_context().backend == "modal"  # its work goes to the GPU class


def test_the_gradio_app_on_modal_asks_for_a_login_when_users_are_set(modal_app):
    with TestClient(modal_app.gradio_app(pipelines.default_context(), ["alice:s3cret"])) as ui:
        assert ui.get("/gradio_api/info").status_code == 401  # nothing without logging in
        assert ui.post("/login", data={"username": "alice", "password": "wrong"}).status_code == 400
        assert ui.post("/login", data={"username": "alice", "password": "s3cret"}).status_code == 200
        assert ui.get("/gradio_api/info").status_code == 200


def test_web_stylize_runs_fast_here_and_the_rest_on_the_gpu_class(modal_app, monkeypatch):
    calls = []

    class Remote:
        def remote(self, content, style, parameters):
            calls.append((content, style, parameters))
            if parameters["steps"] == 99:
                raise modal.exception.FunctionTimeoutError("timed out")
            result = FakeStudio()(pipelines.StyleRequest(content=image, style=image, **parameters))
            return result.png_bytes(), result.metadata.to_dict()

    class Studio:
        stylize = Remote()

    monkeypatch.setattr(modal_app, "Studio", Studio)
    context = pipelines.default_context()
    image = gradient_image(64, 48)
    fast = modal_app.web_stylize(pipelines.StyleRequest(content=image, style=image, method="fast"), context)
    assert fast.metadata.backend == "local" and fast.metadata.device == "cpu" and not calls
    remote = modal_app.web_stylize(pipelines.StyleRequest(content=image, style=image, method="artfusion"), context)
    (content, style, parameters) = calls[0]
    assert Image.open(io.BytesIO(content)).tobytes() == image.tobytes() and parameters["method"] == "artfusion"
    assert remote.image.tobytes() == ImageOps.invert(image).tobytes() and remote.metadata.method == "artfusion"
    with pytest.raises(pipelines.RemoteBackendError, match="FunctionTimeoutError"):
        modal_app.web_stylize(pipelines.StyleRequest(content=image, style=image, method="artfusion", steps=99), context)


def test_proxy_auth_is_a_deploy_time_choice(tmp_path):
    script = (
        "import modal_app; from modal._utils.async_utils import synchronizer as s;"
        "print(s._translate_in(modal_app.web)._webhook_config.requires_proxy_auth, len(modal_app.WEB_SECRETS))"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # the default: proxy auth, no secret to create
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["True", "0"], run.stderr
    env["STYLE_STUDIO_WEB_AUTH"] = "token"
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["False", "1"], run.stderr
    env["STYLE_STUDIO_WEB_AUTH"] = "maybe"
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "STYLE_STUDIO_WEB_AUTH must be one of token, proxy, none; got 'maybe'" in run.stderr
