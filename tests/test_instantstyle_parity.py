"""Parity with the original InstantStyle (``IPAdapterXL`` of instantX-research/InstantStyle @ 6b40588e) on the
fixture's tiny models (../shared/fixtures/instantstyle).

Every case is called with the original's own arguments (``cases.<case>.original_call`` in the fixture's JSON), and
every stored tensor is checked against the tolerance class the fixture gives it: max|port − ref| ≤
TOL · max(1, rms(ref)), with TOL 0 (exact), 1e-5, 3e-5 or 1e-4, and ±1 level for uint8 pictures.
"""

import json

import numpy as np
import pytest
import torch
from conftest import relative_error, shared_fixtures
from PIL import Image
from safetensors.torch import load_file

from pipelines.instantstyle import InstantStylePipeline
from pipelines.instantstyle.pipeline_instantstyle import (
    ip_processor_names,
    resolve_target_blocks,
    target_scales,
)

# The original's generate() arguments → this pipeline's (pil_image, seed and image are handled apart).
ARGUMENTS = {
    "target_blocks": "target_blocks",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "scale": "style_scale",
    "guidance_scale": "guidance_scale",
    "num_inference_steps": "num_inference_steps",
    "height": "height",
    "width": "width",
    "controlnet_conditioning_scale": "controlnet_conditioning_scale",
    "neg_content_prompt": "neg_content_prompt",
    "neg_content_scale": "neg_content_scale",
}
CASES = ["a_style", "b_style_layout", "c_scale06_negprompt", "d_controlnet", "e_neg_content", "f_control_scale0"]


@pytest.fixture(scope="module")
def folder():
    return shared_fixtures("instantstyle")


@pytest.fixture(scope="module")
def ref(folder):
    return load_file(folder / "instyle_reference.safetensors")


@pytest.fixture(scope="module")
def spec(folder):
    return json.loads((folder / "instyle_reference.json").read_text())


@pytest.fixture(scope="module")
def pipe(folder):
    torch.backends.cuda.matmul.allow_tf32 = False  # the tolerances assume exact float32
    pipe = InstantStylePipeline.from_pretrained(
        folder / "tiny_sdxl",
        ip_adapter=folder / "tiny_ip_adapter" / "ip-adapter_sdxl.bin",  # the original's checkpoint format
        image_encoder=folder / "tiny_image_encoder",
        controlnet=folder / "tiny_controlnet",
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call_arguments(spec, folder, case):
    """The pipeline's keyword arguments for a case, translated from the original's call; plus the seed."""
    original = dict(spec["cases"][case]["original_call"])
    assert original.pop("num_samples") == 1 and original.pop("pil_image") == "style.png"
    seed = original.pop("seed")
    if original.pop("image", None) is not None:
        original["content_image"] = Image.open(folder / spec["cases"][case]["control_image"])
    kwargs = {ARGUMENTS.get(name, name): value for name, value in original.items()}
    kwargs["style_image"] = Image.open(folder / spec["cases"][case]["style_image"])
    return kwargs, seed


def conditioning_for(pipe, spec, folder, case):
    """``prepare_conditioning`` for a case (it also sets the case's IP-Adapter scales on the UNet)."""
    kwargs, _ = call_arguments(spec, folder, case)
    kwargs.pop("num_inference_steps")
    return pipe.prepare_conditioning(**kwargs)


def check(actual, ref, spec, key):
    """Assert ``actual`` matches ``ref[key]`` in the fixture's tolerance class for that tensor; returns the error."""
    reference, tol = ref[key], spec["tensors"][key]["tol"]
    assert tuple(actual.shape) == tuple(reference.shape), key
    if tol == "exact":
        assert torch.equal(actual.to(reference.dtype), reference), key
        return 0.0
    if tol == "uint8_pm1":
        error = (actual.int() - reference.int()).abs().max().item()
        assert error <= 1, f"{key}: {error} levels"
        return error
    error = relative_error(actual, reference)
    assert error <= float(tol), f"{key}: {error:.3g} > {tol}"
    return error


@pytest.fixture(scope="module")
def runs(pipe, spec, folder):
    """Whole runs, once per case: per-step latents, the decoded picture in [0, 1] and the PIL output."""
    done = {}

    def run(case):
        if case not in done:
            kwargs, seed = call_arguments(spec, folder, case)
            steps = []

            def record(pipe, index, timestep, tensors):
                steps.append(tensors["latents"].clone())
                return tensors

            output = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=record)
            latents = torch.stack(steps)
            done[case] = {
                "step_latents": latents,
                "final_latent": latents[-1],
                "image": pipe.decode_latents(latents[-1]),
                "image_uint8": torch.from_numpy(np.array(output.images[0])),
            }
        return done[case]

    return run


def test_style_pixels_are_the_originals_exactly(pipe, ref, spec, folder):
    pixels = pipe.style_pixel_values(Image.open(folder / "inputs" / "style.png"))
    check(pixels, ref, spec, "inputs/style/clip_pixel_values")


@pytest.mark.parametrize("case", CASES)
def test_schedule_start_noise_and_time_ids_are_exact(pipe, ref, spec, folder, case):
    conditioning = conditioning_for(pipe, spec, folder, case)
    _, seed = call_arguments(spec, folder, case)
    pipe.scheduler.set_timesteps(spec["cases"][case]["original_call"]["num_inference_steps"])
    check(pipe.scheduler.timesteps, ref, spec, f"case/{case}/timesteps")
    if f"case/{case}/sigmas" in ref:
        check(pipe.scheduler.sigmas, ref, spec, f"case/{case}/sigmas")
        check(pipe.scheduler.timesteps[:1], ref, spec, f"case/{case}/unet_step0_timestep")
        time_ids = conditioning.batch(conditioning.add_time_ids, conditioning.add_time_ids)
        check(time_ids, ref, spec, f"case/{case}/add_time_ids")
    latents = pipe.prepare_latents(conditioning, torch.Generator("cpu").manual_seed(seed))
    assert torch.equal(latents, ref[f"case/{case}/init_noise"] * pipe.scheduler.init_noise_sigma)


@pytest.mark.parametrize("case", CASES)
def test_text_and_image_embeddings(pipe, ref, spec, folder, case):
    conditioning = conditioning_for(pipe, spec, folder, case)
    prompt, style = conditioning.prompt, conditioning.style
    values = {
        "prompt_embeds": prompt.prompt_embeds,
        "negative_prompt_embeds": prompt.negative_prompt_embeds,
        "pooled_prompt_embeds": prompt.pooled_prompt_embeds,
        "negative_pooled_prompt_embeds": prompt.negative_pooled_prompt_embeds,
        "image_embeds": style.image_embeds,
        "image_embeds_cond": style.cond,
        "image_embeds_uncond": style.uncond,
        "neg_content_pooled": style.neg_content_pooled,
        "ip_tokens_cond": pipe.image_tokens(style.cond),
        "ip_tokens_uncond": pipe.image_tokens(style.uncond),
    }
    checked = [name for name in values if f"case/{case}/{name}" in ref]
    for name in checked:
        check(values[name], ref, spec, f"case/{case}/{name}")
    assert "prompt_embeds" in checked
    assert (style.neg_content_pooled is not None) == (case == "e_neg_content")


@pytest.mark.parametrize("case", CASES)
def test_the_layers_that_get_the_image_prompt(pipe, spec, folder, case):
    derived = spec["cases"][case]["derived"]
    blocks = resolve_target_blocks(spec["cases"][case]["original_call"]["target_blocks"])
    selected = target_scales(ip_processor_names(pipe.unet), blocks, 1.0)
    assert {name for name, scale in selected.items() if scale} == set(derived["active_ip_processors"])
    conditioning = conditioning_for(pipe, spec, folder, case)
    scales = {name: [scale] for name, scale in conditioning.ip_scales.items() if scale}
    assert scales == derived["native_ip_scales_nonzero"]


@pytest.mark.parametrize("case", CASES)
def test_the_first_denoiser_call(pipe, ref, spec, folder, case):
    conditioning = conditioning_for(pipe, spec, folder, case)
    _, seed = call_arguments(spec, folder, case)
    pipe.scheduler.set_timesteps(spec["cases"][case]["original_call"]["num_inference_steps"])
    t = pipe.scheduler.timesteps[0]
    latents = pipe.prepare_latents(conditioning, torch.Generator("cpu").manual_seed(seed))
    model_input = pipe.scale_model_input(latents, t, conditioning)
    if f"case/{case}/unet_step0_input" in ref:
        check(model_input, ref, spec, f"case/{case}/unet_step0_input")
        model_input = ref[f"case/{case}/unet_step0_input"]  # each stage from the reference's own input

    down, mid = pipe.control_residuals(model_input, t, conditioning)
    if case == "d_controlnet":
        check(torch.from_numpy(conditioning.control_map), ref, spec, f"case/{case}/control_image_uint8")
        check(mid, ref, spec, f"case/{case}/controlnet_step0_mid_res")
        assert len(down) == 9
        for index, residual in enumerate(down):
            check(residual, ref, spec, f"case/{case}/controlnet_step0_down_res_{index}")
    else:
        assert down is None and mid is None and conditioning.control_map is None
    check(pipe.predict_noise(model_input, t, conditioning), ref, spec, f"case/{case}/unet_step0_output")


@pytest.mark.parametrize("case", CASES)
def test_the_whole_run(runs, ref, spec, case):
    result = runs(case)
    for name in ("step_latents", "final_latent", "image", "image_uint8"):
        if f"case/{case}/{name}" in ref:
            check(result[name], ref, spec, f"case/{case}/{name}")


def test_style_scale_zero_is_plain_sdxl(runs, ref, spec):
    result = runs("f_control_scale0")
    check(result["step_latents"], ref, spec, "case/f_control_scale0/plain_sdxl_step_latents")
    check(result["final_latent"], ref, spec, "case/f_control_scale0/plain_sdxl_final_latent")
    check(result["image_uint8"], ref, spec, "case/f_control_scale0/plain_sdxl_image_uint8")


def test_safetensors_and_bin_weights_load_the_same(pipe, folder):
    other = InstantStylePipeline.from_pretrained(
        folder / "tiny_sdxl",
        ip_adapter=folder / "tiny_ip_adapter",  # the folder: its .safetensors is found
        image_encoder=folder / "tiny_image_encoder",
        controlnet=None,
    )
    ours, theirs = pipe.unet.state_dict(), other.unet.state_dict()
    assert ours.keys() == theirs.keys()
    assert any("to_k_ip" in key for key in ours) and any("encoder_hid_proj" in key for key in ours)
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
