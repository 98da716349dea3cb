"""StyleIDPipeline beyond parity (general mode, the inversion memo, callbacks, outputs, loading) and the studio's
``styleid`` method, on the fixture's tiny SD 1.x model (../shared/fixtures/styleid/tiny_sd15_diffusers)."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import gradient_image, shared_fixtures
from PIL import Image

import pipelines
from pipelines.core import method as method_module
from pipelines.styleid import StyleIDMethod, StyleIDPipeline, injection_schedule

STEPS = 4


@pytest.fixture(scope="module")
def model_folder():
    return shared_fixtures("styleid") / "tiny_sd15_diffusers"


@pytest.fixture(scope="module")
def pipe(model_folder):
    pipe = StyleIDPipeline.from_pretrained(model_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def counted(pipe):
    """Counts the UNet's calls while the test runs."""
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    yield calls
    handle.remove()


def general(pipe, content, style, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "num_inversion_steps": STEPS, "start_step": STEPS - 1, **kwargs}
    return pipe(content, style, mode="general", generator=torch.Generator().manual_seed(0), **kwargs)


# ---- loading ---------------------------------------------------------------------------------------------


def test_a_full_sd_layout_loads_without_its_safety_checker(model_folder, tmp_path):
    """SD 1.5 lists a safety checker and feature extractor and ships a PNDM scheduler: neither is loaded (the
    safety checker's folder is not even there), and the scheduler becomes the reference's DDIM."""
    folder = tmp_path / "sd15"
    shutil.copytree(model_folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.update(
        safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
        feature_extractor=["transformers", "CLIPImageProcessor"],
        scheduler=["diffusers", "PNDMScheduler"],
        requires_safety_checker=True,
    )
    (folder / "model_index.json").write_text(json.dumps(index))
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler.update(_class_name="PNDMScheduler", skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    pipe = StyleIDPipeline.from_pretrained(folder)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    config = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert (config.set_alpha_to_one, config.steps_offset, config.timestep_spacing) == (False, 1, "leading")
    assert set(pipe.components) >= {"vae", "text_encoder", "tokenizer", "unet", "scheduler"}


# ---- general mode ----------------------------------------------------------------------------------------


def test_general_mode_keeps_any_aspect_ratio_and_the_contents_size(pipe):
    content, style = gradient_image(150, 80, seed=1), gradient_image(70, 110, seed=2)
    output = general(pipe, content, style, return_intermediates=True)
    assert output.images[0].size == (150, 80)
    assert output.intermediates["content_image"].size == (128, 64)  # multiples of 64 (VAE 8 × UNet 8)
    style_size = output.intermediates["style_image"].size
    assert style_size[0] < style_size[1]  # the style keeps its own (portrait) shape, about the content's area
    with pytest.raises(ValueError, match="mode must be"):
        pipe(content, style, mode="nonsense")  # a clear error, not a crash deep inside
    original = pipe(content, style, num_inference_steps=2, num_inversion_steps=2, start_step=1, height=64, width=128)
    assert original.images[0].size == (128, 64)  # original mode: the centre crop, at the size asked


def test_general_mode_injects_at_any_step_count_unlike_the_original(pipe):
    content, style = gradient_image(128, 64, seed=1), gradient_image(128, 64, seed=2)
    schedule = pipe.make_schedule(20, 20, 19, "general")
    assert len(schedule.sampling_positions) == 19 and all(schedule.injected)
    assert not any(pipe.make_schedule(20, 20, 19, "original").injected)  # feat_merge's hard-coded 50
    steps = {"num_inference_steps": 20, "num_inversion_steps": 20, "start_step": 19, "output_type": "pt"}
    injected = general(pipe, content, style, **steps).images
    plain = general(pipe, content, style, attention_injection=False, **steps).images
    assert (injected - plain).abs().max() > 0.05
    # the general schedule at the reference's own settings is the reference's
    assert pipe.make_schedule(50, 50, 49, "general") == pipe.make_schedule(50, 50, 49, "original")


def test_general_mode_inverts_through_both_grids(pipe):
    """Different step counts: the inversion visits both grids, so every sampling step has its features (the
    original cannot run this)."""
    schedule = pipe.make_schedule(20, 50, 19, "general")
    saved = {schedule.feature_timesteps[i] for i in schedule.feature_index.values()}
    assert saved == set(schedule.feature_timesteps) and all(schedule.injected)
    assert set(schedule.inversion_timesteps) >= {1 + 20 * i for i in range(48)}
    with pytest.raises(ValueError, match="original fails"):
        pipe.make_schedule(20, 50, 19, "original")


def test_injection_fraction_keeps_the_noisiest_steps(pipe):
    schedule = pipe.make_schedule(10, 10, 9, "general", injection_fraction=0.5)
    assert schedule.injected == (True,) * 4 + (False,) * 5 or schedule.injected == (True,) * 5 + (False,) * 4
    assert not any(pipe.make_schedule(10, 10, 9, "general", injection_fraction=0.0).injected)


# ---- the inversion memo ----------------------------------------------------------------------------------


def test_a_known_style_is_not_inverted_again_and_the_result_is_bit_identical(pipe, counted):
    style = gradient_image(128, 64, seed=2)
    first, second = gradient_image(128, 64, seed=1), gradient_image(128, 64, seed=3)
    pipe.inversion_memo.clear()
    general(pipe, first, style, output_type="pt")
    assert len(counted) == 2 * STEPS + (STEPS - 1)  # two inversions, then the sampling
    counted.clear()
    hits = pipe.inversion_memo.hits
    remembered = general(pipe, second, style, output_type="pt", return_intermediates=True)
    assert len(counted) == STEPS + (STEPS - 1)  # only the new photo is inverted
    assert pipe.inversion_memo.hits == hits + 1
    assert remembered.intermediates["style_memo_hit"] and not remembered.intermediates["content_memo_hit"]
    pipe.inversion_memo.clear()
    fresh = general(pipe, second, style, output_type="pt")
    assert torch.equal(remembered.images, fresh.images)
    counted.clear()
    general(pipe, second, style, output_type="pt", gamma=0.3)  # other knobs: both inversions remembered
    assert len(counted) == STEPS - 1


# ---- callbacks, interrupt, outputs -----------------------------------------------------------------------


def test_callback_on_step_end_and_interrupt_stop_the_loop(pipe, counted):
    content, style = gradient_image(128, 64, seed=1), gradient_image(128, 64, seed=2)
    seen = []

    def stop_after_two(pipe, index, timestep, tensors):
        seen.append((index, int(timestep), tuple(tensors)))
        if index == 1:
            pipe._interrupt = True
        return tensors

    counted.clear()
    output = general(
        pipe,
        content,
        style,
        num_inference_steps=10,
        num_inversion_steps=10,
        start_step=9,
        callback_on_step_end=stop_after_two,
        callback_on_step_end_tensor_inputs=["latents", "noise_pred"],
    )
    assert [index for index, _, _ in seen] == [0, 1] and seen[0][1:] == (801, ("latents", "noise_pred"))
    assert len(counted) == 2 * 10 + 2 and output.images[0].size == (128, 64)
    assert pipe.interrupt  # the flag stays until the next call resets it
    general(pipe, content, style)
    assert not pipe.interrupt

    def stop_inverting(pipe, role, index, total):
        pipe._interrupt = True

    before = len(pipe.inversion_memo)
    stopped = general(pipe, gradient_image(128, 64, seed=9), style, callback_on_inversion_step=stop_inverting)
    assert len(pipe.inversion_memo) == before  # nothing half-done is remembered
    assert stopped.images[0].size == (128, 64)
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        general(pipe, content, style, callback_on_step_end_tensor_inputs=["nonsense"])


def test_output_types_and_the_originals_truncation(pipe):
    content, style = gradient_image(128, 64, seed=1), gradient_image(128, 64, seed=2)
    as_np = general(pipe, content, style, output_type="np").images
    as_pt = general(pipe, content, style, output_type="pt").images
    as_pil = general(pipe, content, style).images
    latent = general(pipe, content, style, output_type="latent").images
    assert as_np.shape == (1, 64, 128, 3) and as_pt.shape == (1, 3, 64, 128) and latent.shape == (1, 4, 8, 16)
    assert np.allclose(as_np, as_pt.permute(0, 2, 3, 1).numpy()) and as_np.min() >= 0 and as_np.max() <= 1
    assert isinstance(as_pil[0], Image.Image) and as_pil[0].mode == "RGB"
    assert np.abs(np.asarray(as_pil[0]).astype(int) - (as_np[0] * 255).round()).max() <= 0  # general: rounded
    original = {"num_inference_steps": 2, "num_inversion_steps": 2, "start_step": 1, "height": 64, "width": 128}
    floats = pipe(content, style, output_type="np", generator=torch.Generator().manual_seed(0), **original).images
    png = pipe(content, style, generator=torch.Generator().manual_seed(0), **original).images[0]
    assert np.array_equal(np.asarray(png), (floats[0] * 255.0).astype(np.uint8))  # original: truncated
    (tuple_output,) = general(pipe, content, style, return_dict=False)
    assert tuple_output[0].tobytes() == as_pil[0].tobytes()
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}  # restored


# ---- the studio method -----------------------------------------------------------------------------------


def test_strength_mapping_is_monotone_with_the_paper_at_the_default_strength():
    strengths = np.linspace(0, 1, 41)
    gammas, temperatures, fractions = zip(*(injection_schedule(s) for s in strengths), strict=True)
    assert all(a > b for a, b in zip(gammas, gammas[1:], strict=False))  # less content query
    assert all(a < b for a, b in zip(temperatures, temperatures[1:], strict=False))  # sharper style attention
    assert all(a <= b for a, b in zip(fractions, fractions[1:], strict=False))  # more steps injected
    assert injection_schedule(0.7) == pytest.approx((0.75, 1.5, 1.0))  # the paper, at the studio's default
    assert injection_schedule(0.0) == pytest.approx((1.0, 1.0, 0.0))
    assert injection_schedule(1.0) == pytest.approx((0.5, 2.0, 1.0))
    assert pipelines.StyleRequest(content="x", style="y").strength == 0.7


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(method_module, "_REGISTRY", dict(method_module._REGISTRY))
    return pipelines.register_method(StyleIDMethod())


def test_studio_request_with_memo_options_and_progress(registered, model_folder):
    content, other, style = gradient_image(100, 70, seed=3), gradient_image(120, 60, seed=5), gradient_image(seed=4)
    seen = []
    first = pipelines.stylize(
        content,
        style,
        method="styleid",
        weights=str(model_folder),
        strength=0.8,
        steps=STEPS,
        device="cpu",
        progress=lambda *a: seen.append(a),
    )
    meta = first.metadata
    assert first.image.size == (100, 70) and meta["method"] == "styleid" and meta["steps"] == STEPS
    assert meta["seed"] is None  # deterministic: DDIM η = 0 and the VAE noise from a fixed seed
    assert meta["derived"]["gamma"] == pytest.approx(injection_schedule(0.8).gamma, abs=1e-3)
    assert meta["derived"]["mode"] == "general" and meta["derived"]["injected_steps"] == f"{STEPS - 1}/{STEPS - 1}"
    assert [s[0] for s in seen if s[2].startswith("Denoising")] == list(range(1, STEPS))
    assert any(s[2].startswith("Inverting the style") for s in seen)
    again = pipelines.stylize(other, style, method="styleid", weights=str(model_folder), steps=STEPS, device="cpu")
    assert again.metadata["derived"]["style_cache_hit"] is True
    assert again.metadata["derived"]["content_cache_hit"] is False
    manual = pipelines.stylize(
        content,
        style,
        method="styleid",
        weights=str(model_folder),
        steps=STEPS,
        device="cpu",
        options={"gamma": 0.5, "temperature": "2", "layers": "9-11", "adain": "off"},
    )
    assert manual.metadata["derived"]["gamma"] == 0.5 and manual.metadata["options"]["temperature"] == 2.0
    with pytest.raises(pipelines.InvalidRequestError, match="gamma must be from 0.0 to 1.0"):
        pipelines.stylize(content, style, method="styleid", weights=str(model_folder), options={"gamma": 3})
    zero = pipelines.stylize(content, style, method="styleid", weights=str(model_folder), strength=0.0)
    assert zero.image.tobytes() == content.tobytes()


def test_studio_cancel_during_the_inversion(registered, model_folder):
    import threading

    cancel = threading.Event()
    with pytest.raises(pipelines.GenerationCancelled):
        pipelines.stylize(
            gradient_image(seed=11),
            gradient_image(seed=12),
            method="styleid",
            weights=str(model_folder),
            steps=STEPS,
            device="cpu",
            progress=lambda done, total, text: cancel.set() if text.startswith("Inverting") else None,
            cancel=cancel,
        )


def test_studio_method_facts_and_missing_weights(registered, tmp_path):
    method = pipelines.get_method("styleid")
    assert method.dtype_for("cuda") == "bfloat16" and method.dtype_for("cpu") == "float32"
    assert method.prefers("cuda") and not method.prefers("cpu") and method.fade_in_below == 0.1
    assert pipelines.default_method_name("cpu") != "styleid"
    with pytest.raises(pipelines.MethodUnavailableError, match="stable-diffusion-v1-5"):
        pipelines.stylize(gradient_image(), gradient_image(), method="styleid", device="cpu", steps=2)
    with pytest.raises(pipelines.MethodUnavailableError, match="was not found"):
        pipelines.stylize(
            gradient_image(), gradient_image(), method="styleid", weights=str(tmp_path / "nowhere"), device="cpu"
        )


def test_the_studio_can_tell_whether_styleid_weights_are_here(tmp_path):
    from conftest import shared_fixtures

    import pipelines

    method = pipelines.get_method("styleid")
    assert method.weights_reachable(str(shared_fixtures("styleid") / "tiny_sd15_diffusers"))
    assert not method.weights_reachable(str(tmp_path))  # an empty folder
    assert not method.weights_reachable("nobody/no-sd")  # offline here, not cached
