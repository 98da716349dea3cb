"""Shared test setup. The environment is fixed before anything imports gradio or huggingface_hub:
no test may touch the network."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["GRADIO_CACHE_EXAMPLES"] = "false"

import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def content_path() -> Path:
    return ASSETS / "content" / "chelsea.jpg"


@pytest.fixture(scope="session")
def style_path() -> Path:
    return ASSETS / "style" / "van-gogh-starry-night.jpg"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def gradient_image(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A small, deterministic, colourful RGB picture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    noise = rng.integers(0, 24, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_context(app_models, **overrides):
    """The context the in-process app runs with: CPU, the tiny models' weights, the session's style library."""
    import pipelines

    settings = {
        "device": "cpu",
        "weights": {"artfusion": str(app_models["artfusion"]), "inst": app_models["inst"]},
        "library_dir": app_models["library"],
        "cache_dir": app_models["library"].parent / "studio-cache",
    }
    return pipelines.StudioContext(**{**settings, **overrides})


@pytest.fixture(scope="session")
def running_app(app_models):
    """The real app, launched on 127.0.0.1 once for every server test (tiny ArtFusion and InST weights, a
    session style library); yields its URL."""
    import demo

    app = demo.build_demo(app_context(app_models))
    _, url, _ = app.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=free_port(),
        quiet=True,
        max_file_size=demo.MAX_UPLOAD,
        allowed_paths=[str(demo.RESULTS_DIR.parent)],
    )
    yield url
    app.close()


@pytest.fixture(scope="session")
def app_models(tmp_path_factory):
    """Tiny models saved once per session, and the session's style library (for the in-process app)."""
    from artfusion_tiny import tiny_pipeline
    from inst_tiny import save_tiny_models

    scratch = tmp_path_factory.mktemp("app-models")
    tiny_pipeline().save_pretrained(scratch / "artfusion")
    base, clip = save_tiny_models(scratch / "inst")
    return {
        "artfusion": scratch / "artfusion",
        "inst": f"{base}::{clip}",
        "base": base,
        "clip": clip,
        "library": scratch / "styles",
    }


SHARED = Path(os.environ.get("STYLE_STUDIO_SHARED", ROOT.parent / "shared"))


def shared_fixtures(name: str) -> Path:
    """A folder of ../shared/fixtures (reference data from the original implementations).

    CI always has it (a copy of shared/ lies beside the checkout), so there a missing folder is a failure.
    """
    folder = SHARED / "fixtures" / name
    if not folder.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"missing {folder}: set STYLE_STUDIO_SHARED to the shared/ folder")
        pytest.skip(f"{folder} is not here (set STYLE_STUDIO_SHARED)")
    return folder


def relative_error(actual, reference) -> float:
    """max|actual − reference| / max(1, rms(reference)): the fixtures' tolerance rule."""
    actual, reference = actual.double(), reference.double()
    return ((actual - reference).abs().max() / max(1.0, reference.pow(2).mean().sqrt().item())).item()


@pytest.fixture(autouse=True)
def studio_context(tmp_path):
    """The default context for this test: converted weights and learned styles in the test's temporary folder
    (never ~/.cache), eager PyTorch, this process; it shares the session's pipeline cache."""
    import pipelines

    base = pipelines.default_context()
    context = pipelines.set_default_context(
        base.with_overrides(
            cache_dir=tmp_path / "studio-cache", library_dir=tmp_path / "styles", compile="off", backend="local"
        )
    )
    yield context
    pipelines.set_default_context(base)
