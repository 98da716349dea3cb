"""Per-result quality scores: the classical ones on real pictures and the `fast` method, the learned ones with
tiny random models saved by ``save_pretrained`` (and their absence, which must never raise)."""

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ASSETS, gradient_image
from PIL import Image

import pipelines
from pipelines import InvalidRequestError
from pipelines.scores import (
    CLASSICAL_SCORES,
    LEARNED_SCORES,
    SCORES,
    Scorers,
    ScoreValue,
    better,
    classical,
    describe_scores,
    score_picture,
    scoring,
)
from pipelines.scores.csd import CSDStyleHead, convert_csd
from pipelines.scores.lpips import LPIPSNetwork, convert_lpips, torchvision_conv_indices
from pipelines.scores.pictures import ScoredPictures

SIDE = 256  # working size: the trends below were measured here (and hold at 384 too)
PAIRS = [
    ("chelsea", "van-gogh-starry-night"),
    ("rocket", "munch-the-scream"),
    ("coffee", "turner-shipwreck"),
]


def picture(kind: str, name: str) -> Image.Image:
    return pipelines.load_image(ASSETS / kind / f"{name}.jpg", max_side=SIDE)


def values(scores: dict[str, ScoreValue]) -> dict[str, float | None]:
    return {name: score.value for name, score in scores.items()}


# --- the registry ---------------------------------------------------------------------------------------------


def test_every_score_is_documented_with_its_direction_kind_and_range():
    assert set(SCORES) == {
        "style_distance",
        "style_color_distance",
        "style_csd",
        "content_ssim",
        "content_edge_f1",
        "content_lpips",
        "content_dino",
    }
    assert set(LEARNED_SCORES) == {"style_csd", "content_lpips", "content_dino"}
    for name, spec in SCORES.items():
        assert spec.name == name and name.startswith(spec.kind + "_")
        assert spec.better in ("higher", "lower") and better(name) == spec.better
        assert spec.description and spec.range and spec.label
    assert [better(n) for n in ("content_ssim", "content_lpips", "style_distance", "style_csd")] == [
        "higher",
        "lower",
        "lower",
        "higher",
    ]
    table = describe_scores()
    assert all(f"`{name}`" in table for name in SCORES)
    with pytest.raises(InvalidRequestError, match="content_ssim"):
        better("ssim")
    with pytest.raises(InvalidRequestError, match="Unknown score"):
        score_picture(gradient_image(), gradient_image(), gradient_image(), names=["sharpness"])


# --- classical scores ------------------------------------------------------------------------------------------


def test_a_picture_compared_with_itself_scores_perfectly():
    photo = picture("content", "chelsea")
    scores = score_picture(photo, photo, photo, names=CLASSICAL_SCORES)
    assert list(scores) == list(CLASSICAL_SCORES)  # the registry's order
    for name, score in scores.items():
        assert score.reason is None
        assert score.value == pytest.approx(SCORES[name].perfect, abs=1e-9), name


def test_ssim_and_edges_follow_their_definitions():
    rng = np.random.default_rng(0)
    grey = rng.uniform(0, 255, (64, 80))
    assert classical.ssim(grey, grey) == pytest.approx(1.0)
    assert classical.ssim(grey, 255 - grey) < 0  # inverted structure correlates negatively
    assert classical.ssim(grey, np.full_like(grey, grey.mean())) < 0.05  # structure gone
    # a bright square: its outline is the edge map; shifted by 1 px it is still matched, by 8 px it is not
    square = np.zeros((64, 64))
    square[16:48, 16:48] = 255
    edges = classical.edge_map(square)
    assert edges.sum() > 100
    assert classical.edge_f1(edges, classical.edge_map(np.roll(square, 1, axis=1))) == pytest.approx(1.0)
    assert classical.edge_f1(edges, classical.edge_map(np.roll(square, 8, axis=1))) < 0.7
    assert classical.edge_f1(edges, np.zeros_like(edges)) == 0.0
    # colour: the same histogram is 0 away, disjoint palettes are 1 away
    red, blue = Image.new("RGB", (40, 40), (250, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 250))
    assert classical.hellinger_distance(classical.color_histogram(red), classical.color_histogram(red)) == 0.0
    assert classical.hellinger_distance(classical.color_histogram(red), classical.color_histogram(blue)) == 1.0


def test_content_is_compared_at_the_result_size():
    photo = picture("content", "coffee")
    smaller = photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.LANCZOS)
    scores = score_picture(smaller, photo, photo, names=["content_ssim", "content_edge_f1"])
    assert scores["content_ssim"].value > 0.95  # the same picture, resized: nearly perfect
    assert scores["content_edge_f1"].value > 0.8


def test_strength_zero_of_fast_keeps_the_content_and_is_furthest_from_the_style():
    content, style = picture("content", "chelsea"), picture("style", "van-gogh-starry-night")
    runs = {s: pipelines.stylize(content, style, method="fast", strength=s) for s in (0.0, 0.5, 1.0)}
    scores = {s: values(score_picture(r, content, style, names=CLASSICAL_SCORES)) for s, r in runs.items()}
    assert scores[0.0]["content_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert scores[0.0]["content_edge_f1"] == pytest.approx(1.0)
    assert scores[0.0]["style_distance"] == max(v["style_distance"] for v in scores.values())


def test_scores_follow_the_strength_of_fast_on_the_bundled_pictures():
    """Measured over every content × style pair at 256 and 384 px (20 pairs): the Magenta style distance and
    the content SSIM fall at each step of 0 → 0.5 → 1 for every pair (smallest steps 0.50 and 0.028); the colour
    distance falls on every pair, the edge F1 on average."""
    table = []
    for content_name, style_name in PAIRS:
        content, style = picture("content", content_name), picture("style", style_name)
        row = []
        for strength in (0.0, 0.5, 1.0):
            result = pipelines.stylize(content, style, method="fast", strength=strength)
            row.append(values(score_picture(result, content, style, names=CLASSICAL_SCORES)))
        table.append(row)
        distances = [cell["style_distance"] for cell in row]
        assert distances[0] - distances[1] > 0.3 and distances[1] - distances[2] > 0.3, (content_name, distances)
        ssims = [cell["content_ssim"] for cell in row]
        assert ssims[0] > ssims[1] > ssims[2], (content_name, ssims)

    def mean(name: str, step: int) -> float:
        return float(np.mean([row[step][name] for row in table]))

    assert mean("content_ssim", 0) - mean("content_ssim", 1) > 0.15
    assert mean("content_ssim", 1) - mean("content_ssim", 2) > 0.03
    assert mean("style_color_distance", 0) > mean("style_color_distance", 1) > mean("style_color_distance", 2)
    assert mean("content_edge_f1", 0) > mean("content_edge_f1", 2) + 0.2


def test_style_scores_say_why_when_there_is_no_style_picture():
    photo = gradient_image(64, 48)
    scores = score_picture(photo, photo, None, names=CLASSICAL_SCORES)
    assert scores["style_distance"].value is None and "no style picture" in scores["style_distance"].reason
    assert scores["content_ssim"].value == pytest.approx(1.0)


def test_inputs_may_be_paths_and_results(tmp_path):
    content_path = ASSETS / "content" / "rocket.jpg"
    style_path = ASSETS / "style" / "munch-the-scream.jpg"
    result = pipelines.stylize(content_path, style_path, method="fast", strength=0.6, max_side=SIDE)
    saved = result.save(tmp_path / "out.png")
    from_result = score_picture(result, content_path, style_path, names=CLASSICAL_SCORES)
    from_paths = score_picture(saved, str(content_path), str(style_path), names=CLASSICAL_SCORES)
    # the content path decodes at full size and is resized to the result's: the same numbers either way
    assert values(from_paths) == pytest.approx(values(from_result))


def test_the_studio_engine_and_the_style_memo_are_reused(monkeypatch, studio_context):
    engine, _ = pipelines.core.studio.loaded_model("fast", studio_context)
    assert scoring.magenta_engine(studio_context) is engine
    content, style = picture("content", "astronaut"), picture("style", "marc-large-blue-horses")
    first = pipelines.stylize(content, style, method="fast", strength=0.5)
    second = pipelines.stylize(content, style, method="fast", strength=0.9)

    def no_default_models(*args, **kwargs):
        raise AssertionError("classical scores must not load learned models")

    monkeypatch.setattr("pipelines.scores.learned.default_scorers", no_default_models)
    histogram_misses = scoring._style_histograms.misses
    predictor_misses, predictor_hits = engine.vectors.misses, engine.vectors.hits
    score_picture(first, content, style, names=CLASSICAL_SCORES)
    score_picture(second, content, style, names=CLASSICAL_SCORES)
    assert scoring._style_histograms.misses - histogram_misses <= 1  # the style's histogram: once at most
    assert engine.vectors.misses - predictor_misses == 2  # the two results; the style's vector was remembered
    assert engine.vectors.hits - predictor_hits == 2  # (by stylize, and found twice here)


# --- learned scores with tiny random models ---------------------------------------------------------------------


def tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=8,
        image_size=32,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    model = CLIPVisionModel(config).eval()
    with torch.no_grad():  # random layer norms too, so that every weight the converter maps shows in the output
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Folders in the documented layouts, written by ``save_pretrained``: DINOv2, CSD (vision + style head), LPIPS."""
    from transformers import Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("score-models")
    torch.manual_seed(0)
    dino = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2))
    dino.save_pretrained(root / "dino")
    tiny_clip().save_pretrained(root / "csd" / "vision")
    CSDStyleHead(in_features=32, out_features=16).save_pretrained(root / "csd" / "style_head")
    LPIPSNetwork(channels=(4, 8, 8, 8, 8)).save_pretrained(root / "lpips")
    return {"content_dino": str(root / "dino"), "style_csd": str(root / "csd"), "content_lpips": str(root / "lpips")}


@pytest.fixture(scope="module")
def tiny_scorers(tiny_models):
    return Scorers.load(tiny_models, offline=True)


def test_learned_scorers_load_from_save_pretrained_folders(tiny_scorers, tiny_models):
    assert tiny_scorers.loaded == LEARNED_SCORES
    assert tiny_scorers.reasons == {}
    assert tiny_scorers.locations == tiny_models
    assert all(name in tiny_scorers.summary() for name in LEARNED_SCORES)


def test_learned_scores_of_a_picture_against_itself_are_perfect(tiny_scorers):
    photo, painting = picture("content", "coffee"), picture("style", "monet-charing-cross-bridge")
    # content scores look at the content only, style scores at the style only
    as_content = score_picture(photo, photo, painting, names=LEARNED_SCORES, scorers=tiny_scorers)
    assert as_content["content_dino"].value == pytest.approx(1.0, abs=1e-6)
    assert as_content["content_lpips"].value == 0.0
    assert as_content["style_csd"].value < 0.9999
    as_style = score_picture(painting, photo, painting, names=LEARNED_SCORES, scorers=tiny_scorers)
    assert as_style["style_csd"].value == pytest.approx(1.0, abs=1e-6)
    assert as_style["content_dino"].value < 0.9999 and as_style["content_lpips"].value > 0.0


def test_learned_scores_give_numbers_for_a_stylized_picture(tiny_scorers):
    content, style = picture("content", "rocket"), picture("style", "munch-the-scream")
    result = pipelines.stylize(content, style, method="fast", strength=1.0)
    scores = score_picture(result, content, style, scorers=tiny_scorers)
    assert all(score.reason is None for score in scores.values()), scores
    assert -1.0 <= scores["content_dino"].value < 1.0 - 1e-6
    assert -1.0 <= scores["style_csd"].value < 1.0 - 1e-6
    assert scores["content_lpips"].value > 0.0 and math.isfinite(scores["content_lpips"].value)


def test_missing_weights_give_a_reason_not_an_exception(tmp_path):
    scorers = Scorers.load({"dino": str(tmp_path / "absent"), "lpips": "off"}, offline=True, cache_dir=tmp_path)
    assert scorers.loaded == ()
    assert "no folder" in scorers.reason("content_dino") and str(tmp_path / "absent") in scorers.reason("content_dino")
    assert "turned off" in scorers.reason("content_lpips")
    # the default CSD folder in this cache does not exist: the reason says how to make it
    assert "convert_csd" in scorers.reason("style_csd") and str(tmp_path) in scorers.reason("style_csd")
    photo = gradient_image()
    scores = score_picture(photo, photo, photo, scorers=scorers)
    for name in LEARNED_SCORES:
        assert scores[name].value is None and scores[name].reason == scorers.reason(name)
    assert scores["content_ssim"].value == pytest.approx(1.0)  # the classical scores are unaffected


def test_an_unreachable_hub_gives_a_reason_at_once():
    scorers = Scorers.load({"dino": "facebook/dinov2-small"}, names=["content_dino"], offline=True)
    assert scorers.loaded == ()
    assert "facebook/dinov2-small" in scorers.reason("content_dino")
    assert "local" in scorers.reason("content_dino")  # offline_reason: not in the local cache
    assert scorers.reason("style_csd").startswith("style_csd was not loaded")  # not asked for


def test_bad_locations_give_a_clear_error_or_reason(tmp_path):
    with pytest.raises(InvalidRequestError, match="Unknown learned score 'clip'"):
        Scorers.load({"clip": "openai/clip-vit-base-patch32"}, offline=True)
    with pytest.raises(InvalidRequestError, match="content_dino must be a folder or a Hub repo id"):
        Scorers.load({"content_dino": ""}, offline=True)
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    scorers = Scorers.load({"dino": "not a repo!", "csd": str(a_file), "lpips": str(tmp_path)}, offline=True)
    assert "neither an existing folder nor a Hub repo id" in scorers.reason("content_dino")
    assert "is a file" in scorers.reason("style_csd")
    assert "could not be loaded" in scorers.reason("content_lpips")  # a folder, but no model in it


def test_without_scorers_learned_scores_come_from_the_default_locations(studio_context):
    from pipelines.scores.learned import default_scorers, forget_default_scorers

    forget_default_scorers()
    photo = gradient_image()
    scores = score_picture(photo, photo, photo, names=["content_dino", "content_lpips"], context=studio_context)
    assert scores["content_dino"].value is None and "dinov2-small" in scores["content_dino"].reason
    assert str(studio_context.cache_dir / "scores" / "lpips") in scores["content_lpips"].reason
    assert default_scorers(studio_context) is default_scorers(studio_context)  # loaded (or tried) once


# --- converters from the official weights -----------------------------------------------------------------------


def test_convert_lpips_maps_torchvision_and_lin_weights(tmp_path):
    torch.manual_seed(0)
    widths = (4, 8, 8, 8, 8)
    per_stage = (2, 2, 3, 3, 3)
    vgg, previous, n = {}, 3, 0
    indices = torchvision_conv_indices()
    assert indices == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's vgg16().features
    for width, count in zip(widths, per_stage, strict=True):
        for _ in range(count):
            vgg[f"features.{indices[n]}.weight"] = torch.randn(width, previous, 3, 3)
            vgg[f"features.{indices[n]}.bias"] = torch.randn(width)
            previous, n = width, n + 1
    vgg["classifier.0.weight"] = torch.randn(2, 2)  # the classifier is ignored
    lins = {f"lin{k}.model.1.weight": torch.rand(1, width, 1, 1) for k, width in enumerate(widths)}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lins, tmp_path / "vgg.pth")
    folder = convert_lpips(tmp_path / "vgg16.pth", tmp_path / "vgg.pth", tmp_path / "lpips")
    network = LPIPSNetwork.from_pretrained(folder)
    assert list(network.config.channels) == list(widths)
    assert torch.equal(network.convs[2].weight, vgg["features.5.weight"])
    assert torch.equal(network.convs[12].bias, vgg["features.28.bias"])
    assert torch.equal(network.lins[3].weight, lins["lin3.model.1.weight"])
    scorers = Scorers.load({"lpips": str(folder)}, names=["content_lpips"], offline=True)
    photo = picture("content", "chelsea")
    assert scorers.score("content_lpips", ScoredPictures.read(photo, photo, None)).value == 0.0


def openai_clip_state(model) -> dict[str, torch.Tensor]:
    """A transformers CLIP vision tower's weights under OpenAI CLIP's names (what CSD's checkpoint holds)."""
    state = {key.removeprefix("vision_model."): value for key, value in model.state_dict().items()}
    out = {
        "conv1.weight": state["embeddings.patch_embedding.weight"],
        "class_embedding": state["embeddings.class_embedding"],
        "positional_embedding": state["embeddings.position_embedding.weight"],
        "proj": torch.randn(32, 16),  # CLIP's own projection: CSD drops it
    }
    for theirs, ours in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"{theirs}.weight"], out[f"{theirs}.bias"] = state[f"{ours}.weight"], state[f"{ours}.bias"]
    for layer in range(model.config.num_hidden_layers):
        ours, theirs = f"encoder.layers.{layer}", f"transformer.resblocks.{layer}"
        for part in ("weight", "bias"):
            qkv = [state[f"{ours}.self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")]
            out[f"{theirs}.attn.in_proj_{part}"] = torch.cat(qkv)
            out[f"{theirs}.attn.out_proj.{part}"] = state[f"{ours}.self_attn.out_proj.{part}"]
            out[f"{theirs}.ln_1.{part}"] = state[f"{ours}.layer_norm1.{part}"]
            out[f"{theirs}.ln_2.{part}"] = state[f"{ours}.layer_norm2.{part}"]
            out[f"{theirs}.mlp.c_fc.{part}"] = state[f"{ours}.mlp.fc1.{part}"]
            out[f"{theirs}.mlp.c_proj.{part}"] = state[f"{ours}.mlp.fc2.{part}"]
    return out


def test_convert_csd_reads_the_training_checkpoint_layout(tmp_path):
    original = tiny_clip()
    style_matrix = torch.randn(32, 16)
    backbone = {f"module.backbone.{key}": value for key, value in openai_clip_state(original).items()}
    checkpoint = {
        "model_state_dict": {
            **backbone,
            "module.last_layer_style": style_matrix,
            "module.last_layer_content": -style_matrix,
        },
        "args": argparse.Namespace(arch="vit_tiny", lr=0.1),  # pickled training arguments, as in the original
        "epoch": 3,
    }
    torch.save(checkpoint, tmp_path / "pytorch_model.bin")
    folder = convert_csd(tmp_path / "pytorch_model.bin", tmp_path / "csd", heads=2)
    assert (Path(folder) / "vision" / "config.json").is_file() and (Path(folder) / "style_head").is_dir()

    scorers = Scorers.load({"csd": str(folder)}, names=["style_csd"], offline=True)
    content, style = picture("content", "astronaut"), picture("style", "turner-shipwreck")
    converted = scorers.score("style_csd", ScoredPictures.read(content, content, style)).value

    # the same similarity computed by hand from the original tower and the checkpoint's style matrix
    from pipelines.scores.csd import CLIP_MEAN, CLIP_STD
    from pipelines.scores.learned import centre_crop_tensor

    with torch.no_grad():
        embeds = [
            torch.nn.functional.normalize(
                original(pixel_values=centre_crop_tensor(image, 32, 32, CLIP_MEAN, CLIP_STD)).pooler_output
                @ style_matrix,
                dim=-1,
            )
            for image in (content, style)
        ]
    assert converted == pytest.approx(float((embeds[0] * embeds[1]).sum()), abs=1e-5)
    assert converted < 0.9999  # two different pictures: the check above compares something


def test_the_contexts_score_weights_choose_where_the_learned_models_come_from(tmp_path):
    from pipelines.scores.learned import default_scorers, forget_default_scorers

    forget_default_scorers()
    context = pipelines.StudioContext.from_environment(
        {"STYLE_STUDIO_SCORE_WEIGHTS": f"dino={tmp_path / 'nowhere'}"}, cache_dir=tmp_path, score_weights={"csd": "off"}
    )
    assert context.score_weights == {"dino": str(tmp_path / "nowhere"), "csd": "off"}
    scorers = default_scorers(context, ["content_dino", "style_csd"])
    assert scorers.locations["content_dino"] == str(tmp_path / "nowhere")
    assert "turned off" in scorers.reason("style_csd")
    with pytest.raises(pipelines.InvalidRequestError, match="MODEL=PATH_OR_REPO with MODEL one of csd, lpips, dino"):
        pipelines.parse_score_weights(["clip=/x"], "--score-weights")
    forget_default_scorers()
