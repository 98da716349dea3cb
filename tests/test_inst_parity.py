"""Parity with the original InST implementation (../shared/fixtures/inst): official embeddings import, the
mapper, CLIP input modes, text conditioning, stochastic inversion and every DDIM step, with the recorded random
draws regenerated bit-exactly from the same seeds."""

import json

import numpy as np
import pytest
import torch
from conftest import relative_error, shared_fixtures
from PIL import Image
from safetensors.torch import load_file

from pipelines.core.checkpoints import UnsafeCheckpointError
from pipelines.core.errors import MethodUnavailableError
from pipelines.inst import InSTPipeline, StyleMapper, load_official_embeddings
from pipelines.inst.pipeline_inst import clip_input, image_to_pixels

EXACT, CLIP_TEXT, SINGLE_PASS, SAMPLED = 0.0, 1e-5, 1e-4, 3e-4


@pytest.fixture(scope="module")
def folder():
    return shared_fixtures("inst")


@pytest.fixture(scope="module")
def ref(folder):
    return load_file(folder / "tiny_reference.safetensors")


@pytest.fixture(scope="module")
def cases(folder):
    return json.loads((folder / "tiny_reference.json").read_text())["cases"]


@pytest.fixture(scope="module")
def pipe(folder):
    pipe = InSTPipeline.from_parts(str(folder / "tiny_sd_diffusers"), str(folder / "tiny_clip_vision"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def mapper(folder):
    return load_official_embeddings(folder / "tiny_embeddings_official_format.pt").mapper


@pytest.fixture(scope="module")
def images(folder):
    return Image.open(folder / "content.png"), Image.open(folder / "style.png")


@pytest.mark.parametrize(
    ("pt", "safetensors"),
    [
        ("embeddings_official_format.pt", "mapper_state_dict.safetensors"),
        ("tiny_embeddings_official_format.pt", "tiny_mapper.safetensors"),
    ],
)
def test_official_embeddings_import_with_the_restricted_unpickler(folder, pt, safetensors):
    official = load_official_embeddings(folder / pt)
    expected = load_file(folder / safetensors)
    state = official.mapper.state_dict()
    assert set(state) == set(expected) and all(torch.equal(state[k], expected[k]) for k in expected)
    assert official.placeholder == "*" and official.placeholder_id == 265
    assert official.saved_in_training_mode  # as official training saves it; we always apply in eval mode


def test_full_size_mapper_reproduces_the_reference_outputs(folder):
    mapper = load_official_embeddings(folder / "embeddings_official_format.pt").mapper
    assert (
        sum(p.numel() for p in mapper.parameters()) == 3_737_856 == sum(p.numel() for p in StyleMapper().parameters())
    )
    ref = load_file(folder / "mapper_reference.safetensors")
    with torch.no_grad():
        for name in ("x0_randn", "x1_l2_normalised", "x2_zeros"):
            out = mapper(ref[f"{name}/x"])
            assert relative_error(out, ref[f"{name}/out"].reshape(out.shape)) < CLIP_TEXT, name


def test_a_pickle_that_runs_code_is_refused_and_says_so(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch /tmp/inst-pwned",))

    path = tmp_path / "embeddings.pt"
    torch.save({"string_to_token": {"*": torch.tensor(265)}, "attention": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="could run code.*refused and nothing in it was executed"):
        load_official_embeddings(path)
    assert not os.path.exists("/tmp/inst-pwned")


def test_an_unexpected_class_is_refused_even_if_harmless(tmp_path):
    path = tmp_path / "embeddings.pt"
    torch.save({"string_to_token": {"*": torch.tensor(265)}, "attention": torch.nn.Conv2d(1, 1, 1)}, path)
    with pytest.raises(UnsafeCheckpointError, match="Conv2d, which such a file never contains"):
        load_official_embeddings(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(MethodUnavailableError, match="not an InST embeddings file"):
        load_official_embeddings(path)


def test_inputs_clip_modes_and_text_conditioning(pipe, mapper, ref, images):
    content, style = images
    assert torch.equal(image_to_pixels(content), ref["inputs/content_image"])
    assert torch.equal(image_to_pixels(style), ref["inputs/style_image"])
    with torch.no_grad():
        for mode in ("code", "paper"):
            assert np.array_equal(clip_input(style, mode), ref[f"clip/{mode}/input_uint8"].numpy())
            pixel_values = pipe.feature_extractor(images=clip_input(style, mode), return_tensors="pt").pixel_values
            assert relative_error(pixel_values, ref[f"clip/{mode}/pixel_values"]) < CLIP_TEXT
            embeds = pipe.clip_image_embeds(style, mode)
            assert relative_error(embeds, ref[f"clip/{mode}/image_embeds"]) < CLIP_TEXT
            token = mapper.eval()(embeds)
            assert relative_error(token, ref[f"mapper/{mode}/token_embedding"]) < CLIP_TEXT
            assert relative_error(pipe.encode_prompt("*", token), ref[f"text/{mode}/cond"]) < CLIP_TEXT
        assert torch.equal(pipe.token_ids("*").cpu(), ref["text/input_ids_cond"])
        assert torch.equal(pipe.token_ids("").cpu(), ref["text/input_ids_uncond"])
        assert relative_error(pipe.encode_prompt("", None), ref["text/uncond"]) < CLIP_TEXT
        # negative control: without the substitution "*" encodes to something else
        assert relative_error(pipe.encode_prompt("*", None), ref["text/code/cond"]) > 0.1
        assert relative_error(pipe.encode_prompt("*", None), ref["text/cond_without_replacement"]) < CLIP_TEXT


def test_timesteps_for_strength_07_and_50_steps(pipe):
    noise_index, timesteps = pipe.inversion_timesteps(0.7, 50)
    assert noise_index == 700 and timesteps.tolist() == list(range(681, 0, -20))


CASES = ["code_s070_n10", "code_s050_n8", "paper_s070_n10", "paper_s050_n8", "code_s070_n10_adain", "code_s070_n50"]


@pytest.mark.parametrize("name", CASES)
def test_inference_matches_every_stage(pipe, mapper, ref, cases, images, name):
    case, prefix = cases[name], f"case/{name}/"
    content, style = images
    style_cond = pipe.encode_style(style, mapper, case["clip_mode"])

    # the random draws, in the original's order, regenerate bit-exactly from the seed
    generator = torch.Generator().manual_seed(case["seed"])
    for noise in ("noise_style_posterior", "noise_content_posterior", "noise_q_sample"):
        assert torch.equal(torch.randn(ref[prefix + noise].shape, generator=generator), ref[prefix + noise])

    # stochastic inversion, stage by stage
    scaling = pipe.vae.config.scaling_factor
    posterior = pipe.vae.encode(image_to_pixels(content)).latent_dist
    content_latent = scaling * (posterior.mean + posterior.std * ref[prefix + "noise_content_posterior"])
    style_latent = scaling * (style_cond.latent_mean + style_cond.latent_std * ref[prefix + "noise_style_posterior"])
    assert relative_error(content_latent, ref[prefix + "content_latent"]) < SINGLE_PASS
    assert relative_error(style_latent, ref[prefix + "style_latent"]) < SINGLE_PASS
    noise_index, timesteps = pipe.inversion_timesteps(case["strength"], case["ddim_steps"])
    assert noise_index == case["T_noise"] and timesteps.tolist() == ref[prefix + "timesteps"].tolist()

    recorded = []
    output = pipe(
        content,
        style_cond,
        strength=case["strength"],
        num_inference_steps=case["ddim_steps"],
        use_adain=case["adain"],
        generator=torch.Generator().manual_seed(case["seed"]),
        output_type="pt",
        callback_on_step_end=lambda p, i, t, kw: recorded.append({k: v.clone() for k, v in kw.items()}) or kw,
        callback_on_step_end_tensor_inputs=["latents", "noise_pred"],
    )
    steps = ref.get(prefix + "step_output_latent", ref.get(prefix + "step_output_latent_first3"))
    for index, expected in enumerate(steps):
        assert relative_error(recorded[index]["latents"], expected) < SAMPLED, index
    if prefix + "step_eps_cond" in ref:
        for index in range(len(recorded)):
            e_u, e_c = ref[prefix + "step_eps_uncond"][index], ref[prefix + "step_eps_cond"][index]
            assert relative_error(recorded[index]["noise_pred"], e_u + 10.0 * (e_c - e_u)) < SAMPLED, index
    assert relative_error(recorded[-1]["latents"], ref[prefix + "final_latent"]) < SAMPLED
    assert relative_error(output.images, ((ref[prefix + "decoded"] + 1) / 2).clamp(0, 1)) < SAMPLED
    as_uint8 = (output.images[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # the notebook truncates
    assert np.abs(as_uint8.astype(int) - ref[prefix + "image_uint8"].numpy().astype(int)).max() <= 1


def test_z_enc_is_the_clean_latent_renoised_with_the_predicted_noise(pipe, mapper, ref, images):
    prefix = "case/code_s070_n10/"
    content, style = images
    cond = pipe.encode_prompt("*", mapper(pipe.clip_image_embeds(style, "code")))
    alpha = pipe.scheduler.alphas_cumprod[700]
    init = ref[prefix + "content_latent"]
    x_noisy = alpha.sqrt() * init + (1 - alpha).sqrt() * ref[prefix + "noise_q_sample"]
    assert relative_error(x_noisy, ref[prefix + "x_noisy"]) < SINGLE_PASS
    with torch.no_grad():
        eps_hat = pipe.unet(x_noisy, torch.tensor([700]), encoder_hidden_states=cond).sample
    assert relative_error(eps_hat, ref[prefix + "eps_hat"]) < SINGLE_PASS
    assert relative_error(alpha.sqrt() * init + (1 - alpha).sqrt() * eps_hat, ref[prefix + "z_enc"]) < SINGLE_PASS
