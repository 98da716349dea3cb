"""ArtFusionPipeline and the studio's artfusion method on tiny random models built here, saved with
save_pretrained and loaded back through from_pretrained (the path users take)."""

import numpy as np
import pytest
import torch
from artfusion_tiny import tiny_pipeline
from conftest import gradient_image

import pipelines
from pipelines.artfusion import ArtFusionPipeline
from pipelines.artfusion.method import guidance_scales


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-artfusion")
    tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(saved):
    pipe = ArtFusionPipeline.from_pretrained(saved)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, content, style, seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 3)
    return pipe(content, style, generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images


def test_round_trip_through_save_and_load_gives_identical_outputs(pipe):
    original = tiny_pipeline()  # same seed, same weights
    original.set_progress_bar_config(disable=True)
    content, style = gradient_image(64, 64), gradient_image(64, 96, seed=1)
    assert np.array_equal(run(pipe, content, style), run(original, content, style))


def test_same_seed_same_picture_other_seed_other_picture(pipe):
    content, style = gradient_image(64, 64), gradient_image(64, 64, seed=1)
    first, again, other = run(pipe, content, style, 7), run(pipe, content, style, 7), run(pipe, content, style, 8)
    assert np.array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


@pytest.mark.parametrize(("size", "network"), [((96, 64), (96, 64)), ((100, 70), (96, 64)), ((40, 130), (32, 128))])
def test_non_square_content_keeps_its_size_and_aspect(pipe, size, network):
    assert pipe.network_size(*size) == network
    out = pipe(gradient_image(*size), gradient_image(50, 50, seed=2), num_inference_steps=2, output_type="pil").images[
        0
    ]
    assert out.size == size
    latent = pipe(
        gradient_image(*size), gradient_image(50, 50, seed=2), num_inference_steps=1, output_type="latent"
    ).images
    assert latent.shape == (1, 16, network[1] // 16, network[0] // 16)


def test_valid_pil_content_is_not_resized(pipe, monkeypatch):
    seen = []
    real = pipe.encode_content
    monkeypatch.setattr(pipe, "encode_content", lambda pixels: seen.append(pixels.shape) or real(pixels))
    pipe(gradient_image(128, 64), gradient_image(40, 40), num_inference_steps=1)
    assert seen == [torch.Size([1, 3, 64, 128])]


def test_guidance_scales_of_one_reduce_to_the_plain_conditional_prediction(pipe):
    content, style = gradient_image(64, 64), gradient_image(64, 64, seed=1)
    batches, recorded = [], []
    hook = pipe.unet.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))
    try:
        pipe(
            content,
            style,
            num_inference_steps=2,
            content_guidance_scale=1.0,
            style_guidance_scale=1.0,
            generator=torch.Generator().manual_seed(0),
            callback_on_step_end=lambda p, i, t, kw: recorded.append((t, kw["noise_pred"])) or kw,
            callback_on_step_end_tensor_inputs=["noise_pred"],
        )
    finally:
        hook.remove()
    assert batches == [1, 1]  # a single branch per step: no guidance batch at all
    pixels = pipe._to_pixels(content, (64, 64))
    c, s = pipe.encode_content(pixels), pipe.encode_style(pipe.prepare_style(style, 256))
    latents = torch.randn((1, 16, 4, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = pipe.unet(latents, recorded[0][0], c, s).sample
    assert torch.allclose(recorded[0][1], plain, atol=1e-6)


def test_guidance_is_one_batched_call_per_step(pipe):
    batches = []
    hook = pipe.unet.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))
    try:
        pipe(
            gradient_image(64, 64),
            gradient_image(64, 64),
            num_inference_steps=3,
            content_guidance_scale=0.5,
            style_guidance_scale=1.0,
        )
        pipe(gradient_image(64, 64), gradient_image(64, 64), num_inference_steps=3)
    finally:
        hook.remove()
    assert batches == [2, 2, 2, 3, 3, 3]


def test_style_vector_cache_is_hit_on_repeat(pipe):
    style = gradient_image(80, 60, seed=9)
    pipe.style_memo.clear()
    calls = []
    hook = pipe.style_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        run(pipe, gradient_image(64, 64), style)
        run(pipe, gradient_image(64, 64, seed=4), style)  # another content, the same style
    finally:
        hook.remove()
    assert len(calls) == 1 and pipe.style_memo.hits >= 1


def test_content_latent_is_remembered_and_changes_nothing(pipe):
    content, style = gradient_image(64, 96, seed=3), gradient_image(64, 64, seed=5)
    pipe.content_memo.clear()
    calls = []
    hook = pipe.vae.encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        first = run(pipe, content, style)
        again = run(pipe, content, style)  # the same photo again (another strength or seed in the studio)
        pipe.content_memo.clear()
        fresh = run(pipe, content, style)
    finally:
        hook.remove()
    assert len(calls) == 2
    assert np.array_equal(first, again) and np.array_equal(first, fresh)


def test_progress_callback_fires_once_per_step_and_can_replace_latents(pipe):
    steps = []

    def callback(p, index, timestep, tensors):
        steps.append(index)
        return {"latents": torch.zeros_like(tensors["latents"])}

    pipe(gradient_image(64, 64), gradient_image(64, 64), num_inference_steps=4, callback_on_step_end=callback)
    assert steps == [0, 1, 2, 3]


def test_bad_arguments_are_refused(pipe):
    with pytest.raises(ValueError, match="latents must have shape"):
        pipe(gradient_image(64, 64), gradient_image(64, 64), latents=torch.zeros(1, 16, 3, 3))
    with pytest.raises(ValueError, match="eta"):
        pipe(gradient_image(64, 64), gradient_image(64, 64), eta=2.0)
    with pytest.raises(ValueError, match="init_noise"):
        pipe(gradient_image(64, 64), gradient_image(64, 64), init_noise="perlin")
    with pytest.raises(ValueError, match="style_image or style_features"):
        pipe(gradient_image(64, 64))


def test_output_types(pipe):
    content, style = gradient_image(64, 32), gradient_image(32, 32)
    as_np = run(pipe, content, style)
    as_pt = pipe(
        content, style, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    assert as_np.shape == (1, 32, 64, 3) and as_pt.shape == (1, 3, 32, 64)
    assert np.allclose(as_np, as_pt.permute(0, 2, 3, 1).numpy())
    assert as_np.min() >= 0.0 and as_np.max() <= 1.0


# ---- the studio method ---------------------------------------------------------------------------------


def test_strength_mapping_is_monotone_and_documented_endpoints():
    strengths = np.linspace(0, 1, 21)
    content_scales, style_scales = zip(*(guidance_scales(s) for s in strengths), strict=True)
    assert all(a > b for a, b in zip(content_scales, content_scales[1:], strict=False))
    assert all(a < b for a, b in zip(style_scales, style_scales[1:], strict=False))
    assert guidance_scales(0.0) == pytest.approx((2.0, 0.5)) and guidance_scales(1.0) == pytest.approx((0.25, 5.0))
    assert guidance_scales(0.7) == (0.5, 2.0)  # the original notebook's pair, exactly (the README's anchor)


def test_studio_request_through_the_cache_with_style_cache_and_options(saved):
    content, style = gradient_image(100, 70, seed=3), gradient_image(64, 64, seed=4)
    seen = []
    first = pipelines.stylize(
        content,
        style,
        method="artfusion",
        weights=str(saved),
        strength=0.8,
        steps=3,
        seed=5,
        device="cpu",
        progress=lambda *a: seen.append(a),
    )
    meta = first.metadata
    assert first.image.size == (100, 70) and meta["method"] == "artfusion" and meta["steps"] == 3
    assert meta["derived"]["content_scale"] == pytest.approx(guidance_scales(0.8)[0], abs=1e-3)
    assert [s[0] for s in seen if s[2].startswith("Denoising")] == [1, 2, 3]
    again = pipelines.stylize(
        content, style, method="artfusion", weights=str(saved), strength=0.8, steps=3, seed=5, device="cpu"
    )
    assert again.image.tobytes() == first.image.tobytes()
    assert again.metadata["derived"]["style_cache_hit"] is True and again.metadata["timings"]["load_s"] == 0.0
    manual = pipelines.stylize(
        content,
        style,
        method="artfusion",
        weights=str(saved),
        steps=2,
        seed=5,
        device="cpu",
        options={"content_scale": 1.5, "style_scale": "3", "eta": 0.5, "init_noise": "uniform"},
    )
    assert manual.metadata["derived"]["content_scale"] == 1.5 and manual.metadata["options"]["style_scale"] == 3.0


def test_studio_strength_zero_is_the_content_and_bad_options_are_clear(saved):
    content = gradient_image(64, 64, seed=3)
    result = pipelines.stylize(
        content, gradient_image(), method="artfusion", weights=str(saved), strength=0.0, steps=2, device="cpu"
    )
    assert result.image.tobytes() == content.tobytes()
    with pytest.raises(pipelines.InvalidRequestError, match="no option nonsense"):
        pipelines.stylize(content, content, method="artfusion", weights=str(saved), options={"nonsense": 1})
    with pytest.raises(pipelines.InvalidRequestError, match="eta must be from 0.0 to 1.0"):
        pipelines.stylize(content, content, method="artfusion", weights=str(saved), options={"eta": 3})
    with pytest.raises(pipelines.InvalidRequestError, match="steps for artfusion must be from 1 to 250"):
        pipelines.stylize(content, content, method="artfusion", weights=str(saved), steps=400)


def test_artfusion_is_the_default_only_where_cuda_is():
    assert pipelines.default_method_name("cuda") == "artfusion"
    assert pipelines.default_method_name("cpu") == "fast"


@pytest.mark.parametrize("native", [True, False])
def test_artfusion_runs_bfloat16_on_cuda_and_on_cpus_that_compute_it_natively(monkeypatch, native):
    from pipelines.core import device as device_module

    monkeypatch.setattr(device_module, "cpu_has_native_bfloat16", lambda: native)
    method = pipelines.get_method("artfusion")
    assert method.dtype_for("cuda") == "bfloat16"
    assert method.dtype_for("cpu") == ("bfloat16" if native else "float32")
    assert method.dtype_for("mps") == "float32"
    assert method.dtype_for("cpu", "float32") == "float32"  # the user's exact choice wins
    assert method.dtype_for("cuda", "float32") == "float32"
    # only ArtFusion measured bfloat16 worth it on a CPU (bench.artfusion); the others stay exact there
    assert pipelines.get_method("styleid").dtype_for("cpu") == "float32"


def test_precision_setting_reaches_the_loaded_pipeline_and_the_metadata(saved):
    content = gradient_image()
    context = pipelines.StudioContext(device="cpu", precision="bfloat16", weights={"artfusion": str(saved)})
    exact = pipelines.StudioContext(device="cpu", precision="float32", weights={"artfusion": str(saved)})
    fast = pipelines.stylize(content, content, method="artfusion", steps=2, seed=1, context=context)
    reference = pipelines.stylize(content, content, method="artfusion", steps=2, seed=1, context=exact)
    assert fast.metadata.dtype == "bfloat16" and reference.metadata.dtype == "float32"
    difference = np.abs(np.asarray(fast.image, float) - np.asarray(reference.image, float))
    assert 0 < difference.mean() < 8  # bfloat16 changes the numbers a little, not the picture
    with pytest.raises(pipelines.InvalidRequestError, match="Unknown precision 'half'"):
        pipelines.StudioContext(precision="half")
    assert pipelines.StudioContext.from_environment({"STYLE_STUDIO_PRECISION": "float32"}).precision == "float32"


def test_missing_default_weights_give_the_clear_error_through_the_studio():
    with pytest.raises(pipelines.MethodUnavailableError, match="lagerbaer/artfusion"):
        pipelines.stylize(gradient_image(), gradient_image(), method="artfusion", device="cpu", steps=1)


def test_attention_uses_pytorch_sdpa(pipe):
    processors = {type(m.attention.processor).__name__ for m in pipe.unet.modules() if hasattr(m, "attention")}
    assert processors == {"AttnProcessor2_0"}  # torch.nn.functional.scaled_dot_product_attention


def test_cli_stylize_with_artfusion_weights_and_options(saved, tmp_path, content_path, style_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "artfusion.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "stylize",
            "--method",
            "artfusion",
            "--weights",
            str(saved),
            "--content",
            str(content_path),
            "--style",
            str(style_path),
            "-o",
            str(out),
            "--steps",
            "2",
            "--max-side",
            "96",
            "--seed",
            "4",
            "--option",
            "style_scale=2.5",
            "--option",
            "init_noise=uniform",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    meta = pipelines.read_png_metadata(out)
    assert meta["method"] == "artfusion" and meta["options"] == {"style_scale": 2.5, "init_noise": "uniform"}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "stylize",
            "--method",
            "artfusion",
            "--weights",
            str(tmp_path / "no.ckpt"),
            "--content",
            str(content_path),
            "--style",
            str(style_path),
            "-o",
            str(tmp_path / "x.png"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "not found" in bad.stderr


def test_unbatched_guidance_gives_the_same_picture_and_large_pictures_decode_in_tiles(pipe):
    content, style = gradient_image(64, 64), gradient_image(64, 64, seed=1)
    batched = run(pipe, content, style, seed=3)
    one_by_one = pipe(
        content,
        style,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
        batch_guidance=False,
    ).images
    assert np.allclose(batched, one_by_one, atol=1e-5)
    assert not pipe.vae.use_tiling
    # the tiny VAE's default tile (32 px) is too small for its GroupNorms; use the real model's 256 px tiles
    pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 256, 16
    wide = pipe(gradient_image(1056, 64), style, num_inference_steps=1).images[0]
    assert wide.size == (1056, 64) and pipe.vae.use_tiling  # automatic above 1024 px


def test_the_studio_uses_sdpa_attention_on_every_device(saved, studio_context):
    method = pipelines.get_method("artfusion")
    pipe = method.load(str(saved), "cpu", "float32", studio_context)
    kinds = {type(m.attention.processor).__name__ for m in pipe.unet.modules() if hasattr(m, "attention")}
    assert kinds == {"AttnProcessor2_0"}  # the benchmark's choice on CPU too; never materialises the scores


def test_the_original_ddim_grid_runs_one_more_step_where_steps_do_not_divide_1000(pipe):
    from pipelines.artfusion.pipeline_artfusion import original_timesteps

    assert original_timesteps(6, pipe.scheduler.config).tolist() == [997, 831, 665, 499, 333, 167, 1]
    assert original_timesteps(10, pipe.scheduler.config).tolist() == list(range(901, 0, -100))
    assert original_timesteps(3, pipe.scheduler.config).tolist() == [667, 334, 1]  # 1000 is past the schedule
    content, style = gradient_image(64, 64), gradient_image(64, 64, seed=1)
    seen = {}
    for spacing in ("original", "leading"):
        calls = []
        pipe(content, style, num_inference_steps=6, timestep_spacing=spacing, output_type="latent",
             generator=torch.Generator().manual_seed(0),
             callback_on_step_end=lambda p, i, t, kw, calls=calls: calls.append(int(t)) or kw)  # fmt: skip
        seen[spacing] = calls
    assert seen["original"] == [997, 831, 665, 499, 333, 167, 1] and len(seen["leading"]) == 6
