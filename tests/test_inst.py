"""InST on tiny random models built here and loaded back through from_pretrained: learning, the library,
applying, the cross-check against diffusers' img2img pipeline, and the CLI."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import ROOT, gradient_image
from diffusers import StableDiffusionImg2ImgPipeline
from inst_tiny import save_tiny_models

import pipelines
from pipelines.core.errors import InvalidRequestError, MethodUnavailableError
from pipelines.inst import InSTPipeline
from pipelines.inst.library import StyleLibrary, slugify
from pipelines.inst.styles import load_style, save_style
from pipelines.inst.training import TrainingCancelled, config_for, learn_style

STYLE = gradient_image(40, 40, seed=7)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("tiny-inst"))


@pytest.fixture(scope="module")
def pipe(models):
    pipe = InSTPipeline.from_parts(str(models[0]), str(models[1]))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def learned(pipe):
    return learn_style(pipe, STYLE.resize((32, 32)), config_for("fast", steps=6, resolution=32))


def test_training_reduces_the_loss_on_a_fixed_batch_and_only_the_mapper_learns(pipe):
    torch.manual_seed(0)
    image = STYLE.resize((32, 32))
    from pipelines.inst.mapper import StyleMapper
    from pipelines.inst.training import _encode_view, freeze

    freeze(pipe)
    mapper = StyleMapper(dim=32)
    embeds, mean, std = _encode_view(pipe, image, "paper")
    latent = 0.18215 * mean
    t = torch.tensor([100, 400, 700, 900])
    noise = torch.randn((4, *latent.shape[1:]), generator=torch.Generator().manual_seed(1))
    a = pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latent + (1 - a).sqrt() * noise
    # A random tiny UNet barely listens to its text, so the true ε is out of the mapper's reach; as the target
    # take instead what the UNet predicts for some other token: reachable, so the loss can really fall.
    with torch.no_grad():
        other = pipe.encode_prompt("*", torch.randn(1, 32, generator=torch.Generator().manual_seed(2)) * 3)
        target = pipe.unet(noisy, t, encoder_hidden_states=other.expand(4, -1, -1)).sample

    def loss_of() -> torch.Tensor:
        context = pipe.encode_prompt("*", mapper(embeds)).expand(4, -1, -1)
        return torch.nn.functional.mse_loss(pipe.unet(noisy, t, encoder_hidden_states=context).sample, target)

    mapper.eval()  # no dropout: a deterministic loss to compare
    before = loss_of()
    before.backward()
    trainable = {n for n, p in mapper.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"attn2.to_v.weight", "attn2.to_out.0.weight", "net.1.weight"} <= trainable
    assert not any(n.startswith("attn1") for n in trainable)  # sequence length 1: attn1 gets exactly no gradient
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_encoder):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_of()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert loss_of().item() < 0.5 * before.item()
    assert losses[-1] < losses[0]


def test_presets_follow_the_paper_and_the_fast_one_precomputes():
    paper, fast = config_for("paper"), config_for("fast")
    assert (paper.steps, paper.learning_rate, paper.weight_decay, paper.timesteps_per_step) == (6100, 1e-4, 0.01, 1)
    assert not paper.precompute and fast.precompute and fast.timesteps_per_step > 1 and fast.steps < paper.steps
    with pytest.raises(InvalidRequestError, match="preset"):
        config_for("turbo")


def test_progress_every_step_and_cancel_then_resume_gives_the_same_result(pipe, tmp_path):
    image = STYLE.resize((32, 32))
    config = config_for("fast", steps=6, resolution=32, checkpoint_every=2)
    seen = []
    straight = learn_style(pipe, image, config, on_step=lambda s, n, loss: seen.append((s, n, loss)))
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5, 6] and all(n == 6 for _, n, _ in seen)

    cancel = threading.Event()

    def stop_after_three(step, total, loss):
        if step == 3:
            cancel.set()

    with pytest.raises(TrainingCancelled):
        learn_style(pipe, image, config, on_step=stop_after_three, checkpoint_dir=tmp_path, cancel=cancel)
    assert (tmp_path / "state.json").is_file()
    resumed_steps = []
    resumed = learn_style(
        pipe, image, config, checkpoint_dir=tmp_path, on_step=lambda s, n, loss: resumed_steps.append(s)
    )
    assert resumed_steps == [4, 5, 6]
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-5)
    for key, value in straight.conditioning.mapper.state_dict().items():
        assert torch.allclose(value, resumed.conditioning.mapper.state_dict()[key], atol=1e-6)


def test_library_round_trip_gives_identical_pictures_and_same_seed_same_picture(pipe, learned, tmp_path):
    library = StyleLibrary(tmp_path)
    save_style(
        library,
        "Blue Waves",
        learned.conditioning,
        STYLE,
        {"base_model": "tiny", "clip_model": "tiny", "steps": 6, "final_loss": learned.final_loss},
    )
    entry, loaded = load_style(library, "blue waves")
    assert entry.slug == "blue-waves" and entry.clip_mode == "paper" and (tmp_path / "blue-waves.png").is_file()
    content = gradient_image(48, 32, seed=3)

    def apply(conditioning, seed):
        return pipe(
            content,
            conditioning,
            strength=0.7,
            num_inference_steps=10,
            output_type="np",
            generator=torch.Generator().manual_seed(seed),
        ).images

    assert np.array_equal(apply(learned.conditioning, 1), apply(loaded, 1))
    assert np.array_equal(apply(loaded, 1), apply(loaded, 1))
    assert not np.array_equal(apply(loaded, 1), apply(loaded, 2))


def test_any_aspect_ratio_comes_back_at_the_content_size(pipe, learned):
    for size in ((50, 30), (24, 72)):
        out = pipe(gradient_image(*size), learned.conditioning, strength=0.6, num_inference_steps=5).images[0]
        assert out.size == size


def test_with_plain_noising_our_sampler_equals_diffusers_img2img(pipe, learned):
    """Mapper output fixed, stochastic inversion replaced by plain noising: the same computation as
    StableDiffusionImg2ImgPipeline with the same components, seed and strength."""
    content = gradient_image(48, 32, seed=5)
    ours = pipe(
        content,
        learned.conditioning,
        strength=0.7,
        num_inference_steps=10,
        guidance_scale=10.0,
        inversion="plain",
        generator=torch.Generator().manual_seed(11),
        output_type="np",
    ).images
    token = learned.conditioning.mapper(learned.conditioning.image_embeds)
    img2img = StableDiffusionImg2ImgPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    img2img.set_progress_bar_config(disable=True)
    with torch.no_grad():
        theirs = img2img(
            image=content,
            prompt_embeds=pipe.encode_prompt("*", token),
            negative_prompt_embeds=pipe.encode_prompt("", None),
            strength=0.7,
            num_inference_steps=10,
            guidance_scale=10.0,
            generator=torch.Generator().manual_seed(11),
            output_type="np",
        ).images
    assert np.abs(ours - theirs).max() < 1e-5


def test_library_names_are_safe_and_entries_complete(tmp_path, learned):
    library = StyleLibrary(tmp_path / "lib")
    assert slugify("../../etc/passwd") == "etc-passwd" and slugify("  Monet: Water Lilies! ") == "monet-water-lilies"
    with pytest.raises(InvalidRequestError, match="no letters or digits"):
        slugify("../..")
    entry = save_style(
        library,
        "../../evil",
        learned.conditioning,
        STYLE,
        {"base_model": "b", "clip_model": "c", "steps": 1, "final_loss": 0.5},
    )
    assert entry.slug == "evil" and sorted(p.name for p in (tmp_path / "lib").iterdir()) == [
        "evil.json",
        "evil.png",
        "evil.safetensors",
    ]  # nothing outside, no temporary files left
    with pytest.raises(InvalidRequestError, match="already exists"):
        save_style(
            library,
            "EVIL",
            learned.conditioning,
            STYLE,
            {"base_model": "b", "clip_model": "c", "steps": 1, "final_loss": 0.5},
        )
    renamed = library.rename("evil", "Kind One")
    assert renamed.slug == "kind-one" and [e.slug for e in library.list()] == ["kind-one"]
    (tmp_path / "lib" / "half.safetensors").write_bytes(b"")  # an interrupted save: no JSON, so no entry
    assert [e.slug for e in library.list()] == ["kind-one"]
    library.delete("kind-one")
    assert library.list() == []
    with pytest.raises(MethodUnavailableError, match="No learned style"):
        library.get("kind-one")


def test_studio_request_with_a_learned_style_and_no_style_image(pipe, learned, models, studio_context):
    save_style(
        StyleLibrary(studio_context.styles_dir),
        "waves",
        learned.conditioning,
        STYLE,
        {"base_model": str(models[0]), "clip_model": str(models[1]), "steps": 6, "final_loss": 1.0},
    )
    weights = f"{models[0]}::{models[1]}"
    seen = []
    result = pipelines.stylize(
        gradient_image(48, 32),
        None,
        method="inst",
        strength=0.7,
        steps=10,
        seed=3,
        weights=weights,
        device="cpu",
        options={"style_name": "waves"},
        progress=lambda *a: seen.append(a),
    )
    meta = result.metadata
    assert result.image.size == (48, 32) and meta["style_digest"] is None and meta["derived"]["style_name"] == "waves"
    assert [s[0] for s in seen if s[2].startswith("Denoising")] == list(range(1, 8))  # int(0.7·10) DDIM steps
    with pytest.raises(MethodUnavailableError, match="Choose a learned style"):
        pipelines.stylize(gradient_image(48, 32), None, method="inst", steps=4, weights=weights, device="cpu")
    with pytest.raises(MethodUnavailableError, match="No learned style 'nope'"):
        pipelines.stylize(
            gradient_image(48, 32),
            None,
            method="inst",
            steps=4,
            weights=weights,
            device="cpu",
            options={"style_name": "nope"},
        )
    with pytest.raises(InvalidRequestError, match="needs a style image"):
        pipelines.stylize(gradient_image(48, 32), None, method="fast")


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_cli_learn_list_apply_and_import(models, tmp_path, content_path, style_path):
    library = tmp_path / "styles"
    base, clip = str(models[0]), str(models[1])
    done = cli(
        "learn-style",
        "--style",
        str(style_path),
        "--name",
        "Starry",
        "--base-model",
        base,
        "--clip-model",
        clip,
        "--steps",
        "3",
        "--preset",
        "fast",
        "--resolution",
        "32",
        "--library",
        str(library),
    )
    assert done.returncode == 0, done.stderr
    assert "step 3/3" in done.stdout and "learned style 'starry'" in done.stdout
    listed = cli("styles", "--library", str(library))
    assert listed.returncode == 0 and listed.stdout.startswith("starry")
    assert cli("styles", "--library", str(library), "--rename", "starry", "Night Sky").returncode == 0
    assert cli("styles", "--library", str(library), "--rename", "night-sky", "Starry").returncode == 0
    out = tmp_path / "out.png"
    done = cli(
        "stylize",
        "--method",
        "inst",
        "--style-name",
        "starry",
        "--content",
        str(content_path),
        "-o",
        str(out),
        "--base-model",
        base,
        "--clip-model",
        clip,
        "--library",
        str(library),
        "--steps",
        "6",
        "--max-side",
        "64",
        "--seed",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert pipelines.read_png_metadata(out)["derived"]["style_name"] == "starry"
    fixtures = ROOT.parent / "shared" / "fixtures" / "inst" / "tiny_embeddings_official_format.pt"
    if fixtures.is_file():  # the fixture's tiny official file is 32-d, like these tiny models
        done = cli(
            "import-style",
            str(fixtures),
            "--style",
            str(style_path),
            "--name",
            "official",
            "--base-model",
            base,
            "--clip-model",
            clip,
            "--library",
            str(library),
            "--resolution",
            "32",
        )
        assert done.returncode == 0, done.stderr
        assert "CLIP mode code" in done.stdout
    bad = cli(
        "learn-style",
        "--style",
        str(tmp_path / "missing.png"),
        "--name",
        "x",
        "--base-model",
        base,
        "--clip-model",
        clip,
        "--library",
        str(library),
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "not found" in bad.stderr
