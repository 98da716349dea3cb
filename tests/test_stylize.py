"""The one-call Python API, ``from pipelines import stylize``, end to end."""

import pytest
from conftest import gradient_image

import pipelines
from pipelines import ImageInputError, StyleRequest, read_png_metadata, request_from_metadata, stylize


def test_paths_and_pil_images_give_the_same_picture(content_path, style_path):
    from_paths = stylize(content_path, style_path, method="fast", strength=0.7, seed=0, max_side=256)
    from_pil = stylize(
        pipelines.load_image(content_path), pipelines.load_image(style_path), "fast", 0.7, seed=0, max_side=256
    )
    assert from_paths.image.tobytes() == from_pil.image.tobytes()
    assert from_paths.content.size == from_paths.image.size
    assert max(from_paths.image.size) == 256


def test_metadata_records_everything_needed(content_path, style_path):
    result = stylize(content_path, style_path, method="fast", strength=0.4, max_side=256, preserve_color=True)
    meta = result.metadata
    for key in (
        "method",
        "strength",
        "steps",
        "seed",
        "max_side",
        "preserve_color",
        "options",
        "derived",
        "weights",
        "device",
        "dtype",
        "content_digest",
        "style_digest",
        "size",
        "timings",
        "version",
        "backend",
    ):
        assert key in meta, key
    assert meta["seed"] is None  # the fast engine is deterministic: no seed is drawn or recorded
    assert meta.summary().startswith("fast · strength 0.40 · ") and "seed" not in meta.summary()
    assert meta["strength"] == 0.4 and meta["preserve_color"] is True and meta["backend"] == "local"
    assert set(meta["timings"]) == {"prepare_s", "load_s", "run_s", "total_s"}


def test_a_saved_result_reproduces_from_its_file(tmp_path, content_path, style_path):
    original = stylize(content_path, style_path, method="fast", strength=0.55, max_side=256)
    path = original.save(tmp_path / "out.png")
    metadata = read_png_metadata(path)
    assert metadata == original.metadata.to_dict()
    assert pipelines.read_metadata(path) == original.metadata
    again = pipelines.run(request_from_metadata(metadata, content_path, style_path))
    assert again.image.tobytes() == original.image.tobytes()
    assert again.metadata["seed"] == original.metadata["seed"]
    assert again.metadata["content_digest"] == metadata["content_digest"]


def test_progress_is_reported(content_path, style_path):
    seen = []
    stylize(content_path, style_path, method="fast", seed=1, max_side=128, progress=lambda *a: seen.append(a))
    assert seen[0][2] == "Reading images" and seen[-1][:2] == (1, 1)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    result = stylize(gradient_image(), gradient_image(seed=2), method="fast", seed=0)
    result.save(tmp_path / "a" / "b.png")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.png"]


def test_default_method_is_used_when_none_is_named():
    result = pipelines.run(StyleRequest(gradient_image(), gradient_image(seed=2), seed=0))
    assert result.metadata["method"] == pipelines.default_method_name(pipelines.resolve_device("auto"))


def test_bad_input_names_the_role(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(ImageInputError, match="style image"):
        stylize(gradient_image(), bad, method="fast")


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(pipelines.MethodUnavailableError, match="Available: .*fast"):
        stylize(gradient_image(), gradient_image(), method="picasso")
