"""InstantStyle beyond parity: the block rule, the pipeline's contract (outputs, callbacks, sizes), memory placement,
the studio method (strength mapping, weights, the whole studio path) on the fixture's tiny models."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from conftest import ROOT, gradient_image, shared_fixtures
from PIL import Image

import pipelines
from pipelines.core import method as method_module
from pipelines.instantstyle import InstantStylePipeline
from pipelines.instantstyle.method import (
    PUBLISHED_STRENGTH,
    SIZE_MULTIPLE,
    InstantStyleMethod,
    cuda_dtype,
    generation_size,
    strength_knobs,
)
from pipelines.instantstyle.pipeline_instantstyle import (
    GIB,
    ORIGINAL_NEGATIVE_PROMPT,
    ORIGINAL_PROMPT,
    canny_map,
    estimate_memory_bytes,
    ip_adapter_scale_config,
    ip_processor_names,
    needs_cpu_offload,
    target_scales,
)
from pipelines.instantstyle.weights import DEFAULT_CONTROLNET, DEFAULT_SDXL, split_weights, weights_spec

STEPS = 2


@pytest.fixture(scope="module")
def folder():
    return shared_fixtures("instantstyle")


@pytest.fixture(scope="module")
def pipe(folder):
    pipe = InstantStylePipeline.from_pretrained(
        folder / "tiny_sdxl",
        ip_adapter=folder / "tiny_ip_adapter",
        image_encoder=folder / "tiny_image_encoder",
        controlnet=folder / "tiny_controlnet",
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def style(folder):
    return Image.open(folder / "inputs" / "style.png")


@pytest.fixture(scope="module")
def tiny_weights(folder):
    return weights_spec(
        str(folder / "tiny_sdxl"),
        str(folder / "tiny_ip_adapter" / "ip-adapter_sdxl.safetensors"),
        str(folder / "tiny_image_encoder"),
        str(folder / "tiny_controlnet"),
    )


def sdxl_processor_names():
    """The 70 cross-attention processor names of the real SDXL UNet (layers_per_block 2, transformer depths
    1 / 2 / 10; the first down and last up blocks have no attention), in diffusers' order (mid block last)."""
    layout = [("down_blocks.1", 2, 2), ("down_blocks.2", 2, 10), ("up_blocks.0", 3, 10), ("up_blocks.1", 3, 2)]
    layout.append(("mid_block", 1, 10))
    return [
        f"{prefix}.attentions.{attention}.transformer_blocks.{block}.attn2.processor"
        for prefix, attentions, depth in layout
        for attention in range(attentions)
        for block in range(depth)
    ]


# ---- the package ---------------------------------------------------------------------------------------------


def test_importing_the_package_and_its_method_loads_no_torch():
    code = (
        "import sys, pipelines, pipelines.instantstyle, pipelines.instantstyle.method\n"
        "assert not {'torch', 'diffusers', 'cv2'} & set(sys.modules), 'heavy import'\n"
        "from pipelines.instantstyle import InstantStylePipeline, InstantStyleMethod\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# ---- target blocks → IP-Adapter scales (SPEC §3) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target_blocks", "expected", "count"),
    [
        (["up_blocks.0.attentions.1"], {"up": {"block_0": [0.0, 0.8, 0.0]}}, 10),
        (
            ["up_blocks.0.attentions.1", "down_blocks.2.attentions.1"],
            {"down": {"block_2": [0.0, 0.8]}, "up": {"block_0": [0.0, 0.8, 0.0]}},
            20,
        ),
        (["block"], 0.8, 70),
        (["blocks"], 0.8, 70),  # "transformer_blocks" is in every name: the mid block too
        (["attn2"], 0.8, 70),
        (["mid_block"], {"mid": 0.8}, 10),
        (["up_blocks.0"], {"up": {"block_0": [0.8, 0.8, 0.8]}}, 30),
        (["up_blocks.0.attentions.1.transformer_blocks.0"], None, 1),  # inside one attention: no dict spells it
        (["no such layer"], 0.0, 0),
    ],
)
def test_the_substring_rule_becomes_diffusers_per_attention_scales(target_blocks, expected, count):
    names = sdxl_processor_names()
    assert len(names) == 70
    selected = target_scales(names, target_blocks, 0.8)
    assert sum(scale == 0.8 for scale in selected.values()) == count
    assert ip_adapter_scale_config(names, target_blocks, 0.8) == expected


def test_style_blocks_are_set_on_the_unet_by_the_substring_rule(pipe):
    names = ip_processor_names(pipe.unet)
    assert len(names) == 28

    def scales():
        return {name: pipe.unet.attn_processors[name].scale for name in names}

    single = "up_blocks.0.attentions.1.transformer_blocks.1"
    assert pipe.set_style_blocks([single], 0.5) == {name: 0.5 if single in name else 0.0 for name in names}
    assert {name for name, scale in scales().items() if scale != [0.0]} == {f"{single}.attn2.processor"}
    pipe.set_style_blocks("all", 0.7)  # the preset: ["blocks"], every layer
    assert set(map(tuple, scales().values())) == {(0.7,)}
    layout = pipe.set_style_blocks("style+layout", 1.0)
    assert sorted(name.split(".transformer")[0] for name, scale in layout.items() if scale) == sorted(
        ["down_blocks.2.attentions.1"] * 3 + ["up_blocks.0.attentions.1"] * 3
    )


# ---- the pipeline's contract ------------------------------------------------------------------------------------


def test_the_output_types_agree(pipe, style):
    def run(output_type):
        return pipe(style, "a cat", num_inference_steps=STEPS, height=64, width=96, output_type=output_type,
                    generator=torch.Generator().manual_seed(3)).images  # fmt: skip

    latent, pt, array, pil = run("latent"), run("pt"), run("np"), run("pil")
    assert latent.shape == (1, 4, 8, 12)
    assert pt.shape == (1, 3, 64, 96) and pt.dtype == torch.float32 and pt.min() >= 0 and pt.max() <= 1
    assert array.shape == (1, 64, 96, 3) and np.allclose(array[0], pt[0].permute(1, 2, 0).numpy())
    assert torch.equal(pipe.decode_latents(latent), pt)
    assert isinstance(pil, list) and pil[0].size == (96, 64) and pil[0].mode == "RGB"
    assert np.array_equal(np.asarray(pil[0]), (array[0] * 255).round().astype(np.uint8))
    assert pipe(style, num_inference_steps=1, height=64, width=64, return_dict=False)[0][0].size == (64, 64)


def test_the_callback_sees_each_step_can_replace_latents_and_can_interrupt(pipe, style):
    seen = []

    def replace_last(pipe, index, timestep, tensors):
        seen.append((index, sorted(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])} if index == 2 else tensors

    names = ["latents", "noise_pred"]
    out = pipe(style, num_inference_steps=3, height=64, width=64, output_type="latent",
               callback_on_step_end=replace_last, callback_on_step_end_tensor_inputs=names).images  # fmt: skip
    assert seen == [(i, ["latents", "noise_pred"]) for i in range(3)] and not out.any()

    calls = []

    def stop_after_first(pipe, index, timestep, tensors):
        calls.append(index)
        pipe._interrupt = True
        return tensors

    image = pipe(style, num_inference_steps=5, height=64, width=64, callback_on_step_end=stop_after_first).images[0]
    assert calls == [0] and image.size == (64, 64)  # stopped, and what it had is still decoded
    calls.clear()
    pipe(
        style, num_inference_steps=2, height=64, width=64, callback_on_step_end=lambda p, i, t, d: calls.append(i) or d
    )
    assert calls == [0, 1]  # the next call starts uninterrupted
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(style, num_inference_steps=1, callback_on_step_end_tensor_inputs=["prompt_embeds"])


def test_bad_arguments_are_refused_before_any_work(pipe, style):
    for kwargs in ({"num_inference_steps": 0}, {"style_scale": -1.0}, {"guidance_scale": float("nan")}):
        with pytest.raises(ValueError):
            pipe(style, **kwargs)
    with pytest.raises(ValueError, match="output_type"):
        pipe(style, output_type="jpeg")
    with pytest.raises(ValueError, match="multiples of 8"):
        pipe(style, height=60, width=64)
    with pytest.raises(ValueError, match="latents must have shape"):
        pipe(style, height=64, width=64, latents=torch.zeros(1, 4, 16, 16))


@pytest.mark.parametrize(("size", "expected"), [((100, 37), (96, 32)), ((37, 100), (32, 96)), ((72, 72), (72, 72))])
def test_any_content_aspect_ratio_sets_the_output_size(pipe, style, size, expected):
    content = gradient_image(*size)
    image = pipe(style, content_image=content, num_inference_steps=STEPS).images[0]
    assert image.size == expected
    conditioning = pipe.prepare_conditioning(style, content_image=content, height=48, width=64)
    assert conditioning.control_map.shape == (48, 64, 3)  # the content resized first, then its edges
    assert conditioning.control_image.shape == (1, 3, 48, 64)


def test_the_canny_map_is_opencvs_on_the_bgr_picture(folder, tmp_path):
    import cv2

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # channel order matters here
    Image.fromarray(noise).save(tmp_path / "noise.png")
    for path in (folder / "inputs" / "content.png", tmp_path / "noise.png"):
        edges = canny_map(Image.open(path))
        expected = cv2.Canny(cv2.imread(str(path)), 50, 200)  # what the original computes
        assert edges.dtype == np.uint8 and edges.shape == (*expected.shape, 3)
        assert all(np.array_equal(edges[:, :, channel], expected) for channel in range(3))
        assert set(np.unique(edges)) <= {0, 255} and edges.any()
        assert np.array_equal(canny_map(np.asarray(Image.open(path).convert("RGB"))), edges)  # arrays too


def test_a_content_image_needs_a_controlnet(pipe, style):
    text_only = InstantStylePipeline(**{**pipe.components, "controlnet": None})
    with pytest.raises(ValueError, match="ControlNet"):
        text_only(style, content_image=gradient_image(64, 64), num_inference_steps=1)


def test_the_originals_default_prompts_stand_in_for_none(pipe):
    embeddings = pipe.encode_prompts(None, None)
    assert torch.equal(embeddings.prompt_embeds, pipe.encode_text(ORIGINAL_PROMPT)[0])
    assert torch.equal(embeddings.negative_prompt_embeds, pipe.encode_text(ORIGINAL_NEGATIVE_PROMPT)[0])
    assert not torch.equal(pipe.encode_prompts("", "").negative_prompt_embeds, embeddings.negative_prompt_embeds)


# ---- memory: where the models live ------------------------------------------------------------------------------


def real_parameter_count():
    """Parameters of the real models (SDXL base, ip-adapter_sdxl with its ViT-bigG encoder, the Canny SDXL
    ControlNet), from their configs on the meta device (nothing is allocated)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=128,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            cross_attention_dim=2048,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        models = [
            unet,
            ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)),
            AutoencoderKL(
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512),
                layers_per_block=2,
            ),
            CLIPVisionModelWithProjection(
                CLIPVisionConfig(
                    hidden_size=1664,
                    intermediate_size=8192,
                    num_attention_heads=16,
                    num_hidden_layers=48,
                    patch_size=14,
                    projection_dim=1280,
                    hidden_act="gelu",
                )  # fmt: skip
            ),
            CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12)),
            CLIPTextModelWithProjection(
                CLIPTextConfig(
                    hidden_size=1280,
                    intermediate_size=5120,
                    num_attention_heads=20,
                    num_hidden_layers=32,
                    projection_dim=1280,
                    hidden_act="gelu",
                )  # fmt: skip
            ),
        ]
    hidden = [module.to_q.out_features for name, module in unet.named_modules() if name.endswith("attn2")]
    ip_adapter = 1280 * 4 * 2048 + 4 * 2048 + 2 * 2048 + sum(2 * size * 2048 for size in hidden)
    assert len(hidden) == 70 and sum(p.numel() for p in unet.parameters()) == 2_567_463_684
    return sum(p.numel() for model in models for p in model.parameters()) + ip_adapter


def test_a_24_gb_card_holds_everything_at_1024_px_and_smaller_cards_offload():
    weights = 2 * real_parameter_count()  # bytes in bfloat16
    needed = estimate_memory_bytes(weights, 1024, 1024, dtype_bytes=2)
    assert 12.5 * GIB < weights < 13.5 * GIB
    assert not needs_cpu_offload(int(23.5 * GIB), needed)  # free memory of an idle 24 GB card (RTX 4090, A5000)
    assert needs_cpu_offload(int(15.5 * GIB), needed)  # a 16 GB card
    fp16_upcast = estimate_memory_bytes(weights, 1024, 1024, dtype_bytes=2, upcast_vae=True)
    assert needed < fp16_upcast and not needs_cpu_offload(int(23.5 * GIB), fp16_upcast)


def test_the_offload_decision_is_a_threshold_on_free_memory():
    needed = 10 * GIB
    assert needs_cpu_offload(needed, needed) and needs_cpu_offload(0, needed)
    assert not needs_cpu_offload(needed + 2 * GIB, needed)
    decisions = [needs_cpu_offload(free * GIB, needed) for free in range(0, 40)]
    assert decisions == sorted(decisions, reverse=True)  # more free memory never brings offload back
    assert needs_cpu_offload(needed + GIB, needed, reserve_bytes=2 * GIB)
    sizes = [estimate_memory_bytes(0, side, side) for side in (256, 512, 1024, 2048)]
    assert sizes == sorted(sizes) and estimate_memory_bytes(GIB, 512, 512) - estimate_memory_bytes(0, 512, 512) == GIB


def test_placement_follows_the_decision(pipe, monkeypatch):
    shared = InstantStylePipeline(**pipe.components)
    assert shared.place("cpu") == "device" and shared.memory_mode == "device"
    moves = []
    monkeypatch.setattr(shared, "to", lambda device: moves.append(("to", str(device))))
    monkeypatch.setattr(shared, "enable_model_cpu_offload", lambda device: moves.append(("offload", str(device))))
    needed = shared.memory_needed(1024, 1024)
    for free, mode in ((needed // 2, "model_cpu_offload"), (needed + 4 * GIB, "device")):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 2 * free))
        assert shared.place("cuda:0") == mode and shared.memory_mode == mode
    assert shared.place("cuda:0", offload="always") == "model_cpu_offload"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (0, 0))
    assert shared.place("cuda:0", offload="never") == "device"
    assert moves == [("offload", "cuda:0"), ("to", "cuda:0"), ("offload", "cuda:0"), ("to", "cuda:0")]


# ---- the studio method -------------------------------------------------------------------------------------------


def test_the_strength_mapping_is_monotone_and_pinned_to_the_original_at_its_default():
    grid = [strength_knobs(i / 100) for i in range(101)]
    assert all(a.style_scale <= b.style_scale for a, b in zip(grid, grid[1:], strict=False))
    assert all(a.controlnet_scale >= b.controlnet_scale for a, b in zip(grid, grid[1:], strict=False))
    assert grid[0] == (0.0, 1.0) and grid[-1] == pytest.approx((1.2, 0.4))
    assert strength_knobs(PUBLISHED_STRENGTH) == pytest.approx((1.0, 0.6))  # the original's scale and ControlNet
    assert pipelines.StyleRequest(content="x", style="y").strength == PUBLISHED_STRENGTH  # ... at the studio's default
    assert strength_knobs(-1.0) == strength_knobs(0.0) and strength_knobs(2.0) == strength_knobs(1.0)


@pytest.mark.parametrize("size", [(1024, 768), (768, 1024), (640, 640), (4000, 300), (97, 1013)])
def test_sdxl_draws_near_its_native_area_in_the_contents_aspect_ratio(size):
    width, height = generation_size(*size)
    assert width % SIZE_MULTIPLE == 0 and height % SIZE_MULTIPLE == 0
    assert 0.8 < width * height / 1024**2 < 1.2
    aspect = size[0] / size[1]
    if 0.25 <= aspect <= 4:
        assert abs(width / height - aspect) / aspect < 0.06
    else:
        assert max(width / height, height / width) == pytest.approx(4, rel=0.1)  # capped at SDXL's range
    small = generation_size(*size, 512)
    assert 0.75 < small[0] * small[1] / 512**2 < 1.25


def test_the_weights_string():
    assert split_weights("") == split_weights(weights_spec())
    sdxl, ip_adapter, encoder, controlnet = split_weights("/my/sdxl")
    assert (sdxl, controlnet) == ("/my/sdxl", DEFAULT_CONTROLNET) and ip_adapter.endswith("ip-adapter_sdxl.safetensors")
    assert split_weights("::::::none")[3] is None and split_weights("::::::none")[0] == DEFAULT_SDXL
    assert split_weights(weights_spec("a", "b/c/d", "e", "f")) == ("a", "b/c/d", "e", "f")
    with pytest.raises(pipelines.MethodUnavailableError, match="at most four parts"):
        split_weights("a::b::c::d::e")
    method = InstantStyleMethod()
    method.check_weights(weights_spec())  # Hub ids: checked when loaded
    with pytest.raises(pipelines.MethodUnavailableError, match="not found"):
        method.check_weights(weights_spec("/no/such/sdxl"))


def test_reachability_and_prefetch_need_no_network_for_local_weights(tiny_weights, studio_context):
    method = InstantStyleMethod()
    assert method.weights_reachable(tiny_weights)
    method.prefetch(tiny_weights, studio_context)  # every part is local: nothing to download
    assert not method.weights_reachable(weights_spec("nobody/no-sdxl", *split_weights(tiny_weights)[1:]))
    assert not method.weights_reachable(weights_spec(ip_adapter="nobody/no-adapter"))
    with pytest.raises(pipelines.MethodUnavailableError, match="nobody/no-sdxl"):
        method.prefetch(weights_spec("nobody/no-sdxl", *split_weights(tiny_weights)[1:]), studio_context)


def test_the_method_declares_itself():
    method = InstantStyleMethod()
    assert method.name == "instantstyle" and method.label == "InstantStyle (SDXL, any style, no training)"
    assert (method.steps.default, method.steps.minimum, method.steps.maximum) == (30, 1, 100)
    assert method.fade_in_below == 0.1 and method.uses_style_image and method.uses_seed
    assert method.prefers("cuda") and method.prefers("cuda:1") and not method.prefers("cpu")
    assert method.dtype_for("cpu") == "float32"
    assert cuda_dtype(True) == "bfloat16" and cuda_dtype(False) == "float16"
    options = {option.name: option for option in method.options}
    assert {"prompt", "negative_prompt", "blocks", "controlnet_scale", "guidance_scale"} <= set(options)
    assert options["blocks"].choices[:2] == ("style", "style+layout") and options["guidance_scale"].default is None
    assert method.check_options({"blocks": "style+layout", "guidance_scale": ""}) == {"blocks": "style+layout"}


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(method_module, "_REGISTRY", dict(method_module._REGISTRY))
    return pipelines.register_method(InstantStyleMethod())


def test_the_studio_path(registered, tiny_weights, folder, style):
    content = Image.open(folder / "inputs" / "content.png")
    reported = []
    options = {"resolution": 64, "prompt": "a man", "blocks": "style+layout", "controlnet_scale": 0.9}
    result = pipelines.stylize(content, style, method="instantstyle", weights=tiny_weights, steps=STEPS, seed=7,
                               device="cpu", options=options, progress=lambda *step: reported.append(step))  # fmt: skip
    assert result.image.size == content.size and result.image.mode == "RGB"
    derived = result.metadata.derived
    assert derived["style_scale"] == 1.0 and derived["controlnet_scale"] == 0.9  # strength 0.7; the option wins
    assert derived["generation_size"] == "64x64" and derived["memory"] == "device"
    assert [step[:2] for step in reported if step[2].startswith("Denoising")] == [(1, STEPS), (2, STEPS)]
    again = pipelines.stylize(content, style, method="instantstyle", weights=tiny_weights, steps=STEPS, seed=7,
                              device="cpu", options=options)  # fmt: skip
    assert again.image.tobytes() == result.image.tobytes()  # the seed decides


def test_the_studio_path_with_a_sliver_of_a_content_and_a_cancel(registered, tiny_weights, style):
    content = gradient_image(150, 40)
    result = pipelines.stylize(content, style, method="instantstyle", weights=tiny_weights, steps=1, device="cpu",
                               strength=1.0, options={"resolution": 64})  # fmt: skip
    assert result.image.size == (150, 40) and result.metadata.derived["generation_size"] == "128x32"
    cancel, steps = threading.Event(), []

    def progress(done, total, text):
        if text.startswith("Denoising"):
            steps.append(done)
            cancel.set()

    with pytest.raises(pipelines.GenerationCancelled):
        pipelines.stylize(content, style, method="instantstyle", weights=tiny_weights, steps=5, device="cpu",
                          options={"resolution": 64}, progress=progress, cancel=cancel)  # fmt: skip
    assert steps == [1]


def test_missing_weights_fail_fast_with_a_fix(registered):
    with pytest.raises(pipelines.MethodUnavailableError, match="InstantStyle needs SDXL") as failure:
        pipelines.stylize(gradient_image(), gradient_image(seed=1), method="instantstyle", weights="nobody/no-sdxl",
                          device="cpu", steps=1)  # fmt: skip
    assert "HF_HUB_OFFLINE" in str(failure.value) and "instantstyle" in str(failure.value)


def test_out_of_memory_advice_names_the_sdxl_resolution_not_the_max_side(monkeypatch):
    """SDXL draws at its resolution option whatever the working size, so that is what the advice must lower."""
    from pipelines.core import method as method_module
    from pipelines.instantstyle.method import InstantStyleMethod

    class RunsOutOfMemory(InstantStyleMethod):
        def weights_reachable(self, weights):
            return True

        def check_weights(self, weights):
            return None

        def load(self, weights, device, dtype, context):
            return object()

        def generate(self, model, inputs, context):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(method_module, "_REGISTRY", dict(method_module._REGISTRY))
    pipelines.register_method(RunsOutOfMemory())
    with pytest.raises(pipelines.OutOfMemoryError, match=r"SDXL resolution option \(e\.g\. 768 instead of 1024"):
        pipelines.stylize(gradient_image(), gradient_image(seed=1), method="instantstyle", device="cpu",
                          context=pipelines.StudioContext(device="cpu"))  # fmt: skip
