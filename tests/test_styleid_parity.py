"""Parity with the original StyleID implementation on the fixture's tiny model (../shared/fixtures/styleid).

Tolerance rule of the fixture README §5: max|port − ref| ≤ TOL · max(1, rms(ref)) per tensor (per step for
trajectories): inputs, token ids, timesteps and injection flags exactly; the text embedding 1e-5; the VAE 3e-4;
single UNet passes fed the stored inputs 1e-4; everything downstream of the inversion 1e-3; the PNG ±1 level.
Every stage runs through the pipeline's own helpers (``preprocess_image``, ``encode_image``, ``invert``,
``style_attention``, ``__call__`` with ``return_intermediates``), in mode "original".
"""

import json

import numpy as np
import pytest
import torch
from conftest import SHARED, relative_error, shared_fixtures
from PIL import Image
from safetensors.torch import load_file

from pipelines.styleid import StyleIDPipeline
from pipelines.styleid.pipeline_styleid import IMAGE_PROCESSOR

TEXT, VAE, SINGLE_PASS, TRAJECTORY = 1e-5, 3e-4, 1e-4, 1e-3
DIFFUSERS_TABLE = 1e-6  # diffusers cumulates ᾱ in float32: within 4.8e-7 of the original's table (README §5)


def _case_names() -> list[str]:
    """The fixture's cases (read at collection, so another fixture set brings its own)."""
    meta = SHARED / "fixtures" / "styleid" / "tiny_reference.json"
    if not meta.is_file():
        return ["default"]  # the tests skip (or fail on CI) through shared_fixtures
    return list(json.loads(meta.read_text())["cases"])


CASES = _case_names()


def port_arguments(case: dict) -> dict:
    """The original CLI's effective arguments as StyleIDPipeline arguments."""
    args = case["effective_args"]
    return {
        "num_inference_steps": args["save_feat_steps"],
        "num_inversion_steps": args["ddim_inv_steps"],
        "start_step": args["start_step"],
        "gamma": args["gamma"],
        "temperature": args["T"],
        "injection_layers": tuple(int(layer) for layer in str(args["attn_layer"]).split(",")),
        "adain_init": not args["without_init_adain"],
        "attention_injection": not args["without_attn_injection"],
        "eta": args["ddim_eta"],
        "height": case["size"],
        "width": case["size"],
    }


@pytest.fixture(scope="module")
def folder():
    return shared_fixtures("styleid")


@pytest.fixture(scope="module")
def ref(folder):
    return load_file(folder / "tiny_reference.safetensors")


@pytest.fixture(scope="module")
def meta(folder):
    return json.loads((folder / "tiny_reference.json").read_text())


@pytest.fixture(scope="module")
def pipe(folder):
    torch.backends.cuda.matmul.allow_tf32 = False  # the tolerances assume exact float32
    pipe = StyleIDPipeline.from_pretrained(folder / "tiny_sd15_diffusers")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def images(folder):
    return Image.open(folder / "content.png"), Image.open(folder / "style.png")


@pytest.fixture(scope="module")
def size(meta):
    width, height = meta["images"]["target"]
    return width, height


@pytest.fixture(scope="module")
def pixels(pipe, images, size):
    width, height = size
    return [IMAGE_PROCESSOR.preprocess(pipe.preprocess_image(image, "original", height, width)) for image in images]


@pytest.fixture(scope="module")
def inversion50(pipe, ref, pixels):
    """Both 50-step inversions with every q, k and v of output blocks 6–11 kept (for the feature checks)."""
    schedule = pipe.make_schedule(50, 50, 49, "original")
    return schedule, {
        role: pipe.invert(pipe.encode_image(pixel, ref[f"vae/{role}_noise"]), schedule, range(6, 12))
        for role, pixel in zip(("content", "style"), pixels, strict=True)
    }


@pytest.fixture(scope="module")
def runs(pipe, ref, meta, images):
    """Each case once through ``__call__`` (original mode, the stored VAE noise), with its step latents and ε."""
    results = {}

    def run(name):
        if name not in results:
            steps = []

            def record(pipe, index, timestep, tensors):
                steps.append({key: value.clone() for key, value in tensors.items()})
                return tensors

            output = pipe(
                *images,
                **port_arguments(meta["cases"][name]),
                mode="original",
                content_noise=ref["vae/content_noise"],
                style_noise=ref["vae/style_noise"],
                callback_on_step_end=record,
                callback_on_step_end_tensor_inputs=["latents", "noise_pred"],
                return_intermediates=True,
            )
            results[name] = output, steps
        return results[name]

    return run


# ---- preprocessing, text, schedule, VAE -----------------------------------------------------------------


def test_preprocessing_crops_and_resizes_like_load_img(pipe, ref, images, size, folder):
    width, height = size
    for role, image in zip(("content", "style"), images, strict=True):
        picture = pipe.preprocess_image(image, "original", height, width)
        assert np.array_equal(np.asarray(picture), ref[f"inputs/{role}_uint8"].numpy())
        uint8 = ref[f"inputs/{role}_uint8"].numpy()
        expected = torch.from_numpy(2.0 * (uint8.astype(np.float32) / 255.0) - 1.0).permute(2, 0, 1)[None]
        assert torch.equal(IMAGE_PROCESSOR.preprocess(picture), expected)  # bitwise the original's tensor
    # the real hard-coded 512 path, with the round-half-to-even crop offset of 12 on a 93×70 picture
    probe = pipe.preprocess_image(Image.open(folder / "preprocess_probe.png"), "original")
    assert np.array_equal(np.asarray(probe), np.asarray(Image.open(folder / "preprocess_probe_expected_512.png")))


def test_the_only_conditioning_is_the_empty_prompt(pipe, ref):
    assert torch.equal(pipe.prompt_token_ids(""), ref["text/uncond_input_ids"])
    assert relative_error(pipe.encode_prompt(""), ref["text/uncond"]) <= TEXT


def test_scheduler_is_the_reference_ddim(pipe, ref):
    config = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert (config.set_alpha_to_one, config.steps_offset, config.timestep_spacing) == (False, 1, "leading")
    assert (pipe.scheduler.alphas_cumprod - ref["schedule/alphas_cumprod"]).abs().max() <= DIFFUSERS_TABLE


def test_vae_posterior_sample_with_the_injected_noise(pipe, ref, pixels):
    for role, pixel in zip(("content", "style"), pixels, strict=True):
        posterior = pipe.vae.encode(pixel).latent_dist
        assert relative_error(posterior.mean, ref[f"vae/{role}_posterior_mean"]) <= VAE
        assert relative_error(posterior.logvar, ref[f"vae/{role}_posterior_logvar"]) <= VAE
        latent = pipe.encode_image(pixel, ref[f"vae/{role}_noise"])
        assert relative_error(latent, ref[f"vae/{role}_latent"]) <= VAE


# ---- inversion and saved features -----------------------------------------------------------------------


def test_inversion50_step_by_step(inversion50, ref):
    schedule, inversions = inversion50
    assert list(schedule.inversion_timesteps) == ref["inv50/timesteps"].tolist()  # 1, 21, …, 981
    assert list(schedule.inversion_targets) == ref["inv50/timesteps_next"].tolist()  # 21, …, 981, 999
    for role, inversion in inversions.items():
        reference = ref[f"inv50/{role}/latents"]
        assert len(inversion.latents) == len(reference)
        for step, (ours, theirs) in enumerate(zip(inversion.latents, reference, strict=True)):
            assert relative_error(ours, theirs) <= TRAJECTORY, (role, step)
        for step, (ours, theirs) in enumerate(zip(inversion.noise_preds, ref[f"inv50/{role}/eps"], strict=True)):
            assert relative_error(ours, theirs) <= TRAJECTORY, (role, step)
        assert torch.equal(inversion.start_latent, inversion.latents[-1])  # the t = 999 latent


def test_saved_features_at_their_timesteps(inversion50, ref):
    schedule, inversions = inversion50
    assert list(schedule.feature_timesteps) == ref["inv50/features/timesteps"].tolist()
    checked = 0
    for name, reference in ref.items():
        parts = name.split("/")  # inv50/features/t961/content_q/ob6
        if parts[:2] != ["inv50", "features"] or not parts[2][1:].isdigit():
            continue
        index = schedule.feature_timesteps.index(int(parts[2][1:]))
        role, kind = parts[3].split("_")
        ours = inversions[role].features[index][int(parts[4][2:])][kind]
        assert relative_error(ours, reference) <= TRAJECTORY, name
        checked += 1
    assert checked >= 9


def test_feature_summaries_over_every_saved_step(inversion50, ref):
    _, inversions = inversion50
    for role in ("content", "style"):
        for kind in "qkv":
            reference = ref[f"inv50/features/summary/{role}_{kind}"]
            for index in range(reference.shape[0]):
                tensors = [inversions[role].features[index][layer][kind].double() for layer in range(6, 12)]
                ours = torch.stack(
                    [torch.stack([t.mean(), t.pow(2).mean().sqrt(), t.abs().max(), t.min(), t.max()]) for t in tensors]
                )
                assert relative_error(ours, reference[index]) <= TRAJECTORY, (role, kind, index)


def test_inversion25_step_by_step(pipe, ref, pixels):
    if "inv25/timesteps" not in ref:
        pytest.skip("no 25-step inversion in this fixture set")
    schedule = pipe.make_schedule(25, 25, 24, "original")
    assert list(schedule.inversion_timesteps) == ref["inv25/timesteps"].tolist()
    assert list(schedule.inversion_targets) == ref["inv25/timesteps_next"].tolist()
    for role, pixel in zip(("content", "style"), pixels, strict=True):
        inversion = pipe.invert(pipe.encode_image(pixel, ref[f"vae/{role}_noise"]), schedule, keep=())
        for step, (ours, theirs) in enumerate(zip(inversion.latents, ref[f"inv25/{role}/latents"], strict=True)):
            assert relative_error(ours, theirs) <= TRAJECTORY, (role, step)


def test_start_latent_is_adain_of_the_t999_latents(pipe, inversion50, ref, meta):
    _, inversions = inversion50
    for name, case in meta["cases"].items():
        if port_arguments(case)["num_inversion_steps"] != 50:
            continue
        x_t = pipe.prepare_start_latent(inversions["content"], inversions["style"], port_arguments(case)["adain_init"])
        assert relative_error(x_t, ref[f"case/{name}/x_T"]) <= TRAJECTORY, name


# ---- single UNet passes with injection, fed the stored inputs -------------------------------------------


def single_passes(ref):
    """The single-pass groups, ``case/<name>/unet_t<t>``."""
    return sorted({"/".join(name.split("/")[:3]) for name in ref if name.startswith("case/") and "/unet_t" in name})


@torch.no_grad()
def test_single_passes_fed_the_stored_inputs(pipe, ref, meta, inversion50):
    schedule, inversions = inversion50
    prefixes = single_passes(ref)
    assert prefixes
    for prefix in prefixes:  # case/<name>/unet_t961
        case = port_arguments(meta["cases"][prefix.split("/")[1]])
        t = int(ref[f"{prefix}/t"].item())
        layers = case["injection_layers"]
        stored = f"inv50/features/t{t}"
        features = {}
        for layer in layers:
            if f"{stored}/content_q/ob{layer}" in ref:  # the stored features; else this port's own (1e-4 away)
                features[layer] = tuple(
                    ref[f"{stored}/{name}/ob{layer}"] for name in ("content_q", "style_k", "style_v")
                )
            else:
                features[layer] = pipe.injected_features(
                    inversions["content"], inversions["style"], schedule.feature_timesteps.index(t), [layer]
                )[layer]
        with pipe.style_attention(range(6, 12)) as attention:  # capture every block; inject only ``layers``
            attention.gamma, attention.temperature = case["gamma"], case["temperature"]
            attention.inject, attention.capture = features, {}
            eps = pipe.unet(ref[f"{prefix}/x"], ref[f"{prefix}/t"], encoder_hidden_states=ref["text/uncond"]).sample
            captured = attention.capture
            attention.inject, attention.capture = None, None
            plain = pipe.unet(ref[f"{prefix}/x"], ref[f"{prefix}/t"], encoder_hidden_states=ref["text/uncond"]).sample
        assert relative_error(eps, ref[f"{prefix}/eps"]) <= SINGLE_PASS, prefix
        compared = 0
        for name, reference in ref.items():
            if name.startswith(prefix + "/ob"):
                layer, what = name[len(prefix) + 3 :].split("/")
                assert relative_error(captured[int(layer)][what], reference) <= SINGLE_PASS, name
                compared += 1
        assert compared >= len(layers)
        control = ref.get(f"{prefix}/eps_negative_control_no_injection")
        if control is not None:
            assert relative_error(eps, control) > 100 * SINGLE_PASS  # the injection is really there (0.53)
            assert relative_error(plain, control) <= SINGLE_PASS  # and without it, the plain UNet
    assert type(next(iter(pipe.unet.attn_processors.values()))).__name__ == "AttnProcessor2_0"  # restored


# ---- whole runs, every case ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_case_schedule(pipe, ref, meta, case):
    args = port_arguments(meta["cases"][case])
    schedule = pipe.make_schedule(
        args["num_inference_steps"],
        args["num_inversion_steps"],
        args["start_step"],
        "original",
        args["attention_injection"],
    )
    prefix = f"case/{case}/"
    assert list(schedule.sampling_timesteps) == ref[prefix + "timesteps"].tolist()
    assert [int(flag) for flag in schedule.injected] == ref[prefix + "injected"].tolist()
    alphas = pipe.scheduler.alphas_cumprod.double()
    alphas_t = alphas[list(schedule.sampling_timesteps)]
    alphas_prev = torch.cat([alphas_t[1:], pipe.scheduler.final_alpha_cumprod.double().reshape(1)])
    assert (alphas_t - ref[prefix + "alphas_t"]).abs().max() <= DIFFUSERS_TABLE
    assert (alphas_prev - ref[prefix + "alphas_prev"]).abs().max() <= DIFFUSERS_TABLE


@pytest.mark.parametrize("case", CASES)
def test_case_trajectory_decode_and_png(runs, ref, case):
    output, steps = runs(case)
    prefix = f"case/{case}/"
    intermediates = output.intermediates
    assert relative_error(intermediates["x_T"], ref[prefix + "x_T"]) <= TRAJECTORY
    reference = ref[prefix + "latents"]
    assert len(steps) == len(reference) - 1
    for index, (step, theirs) in enumerate(zip(steps, reference[1:], strict=True)):
        assert relative_error(step["latents"], theirs) <= TRAJECTORY, index
    if prefix + "eps" in ref:
        for index, (step, theirs) in enumerate(zip(steps, ref[prefix + "eps"], strict=True)):
            assert relative_error(step["noise_pred"], theirs) <= TRAJECTORY, index
    assert relative_error(intermediates["final_latent"], ref[prefix + "final_latent"]) <= TRAJECTORY
    decoded = intermediates["decoded"]
    assert relative_error(decoded, ref[prefix + "decoded"]) <= TRAJECTORY
    image = ((decoded + 1) / 2).clamp(0, 1)
    assert relative_error(image, ((ref[prefix + "decoded"] + 1) / 2).clamp(0, 1)) <= TRAJECTORY
    png = np.asarray(output.images[0]).astype(int)
    assert np.abs(png - ref[prefix + "image_uint8"].numpy().astype(int)).max() <= 1


def test_steps25_quirk_injects_nothing_like_the_original(runs, meta):
    if "steps25_quirk" not in meta["cases"]:
        pytest.skip("no steps25_quirk case in this fixture set")
    output, _ = runs("steps25_quirk")
    schedule = output.intermediates["schedule"]
    assert len(schedule.sampling_positions) == 24 and not any(schedule.injected)  # feat_merge's hard-coded 50


def test_the_originals_crashes_are_clear_errors(pipe):
    with pytest.raises(ValueError, match="z_enc"):  # start_step 0: the inversion stops after 2 steps
        pipe.make_schedule(50, 50, 0, "original")
    with pytest.raises(ValueError, match="KeyError"):  # 10 inversion steps with start_step 49: KeyError -40
        pipe.make_schedule(50, 10, 49, "original")
