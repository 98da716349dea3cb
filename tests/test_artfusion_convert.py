"""The checkpoint converter and weight loading: full-size key coverage, strictness, safety, clear errors."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, relative_error, shared_fixtures

from pipelines import MethodUnavailableError
from pipelines.artfusion import ArtFusionPipeline
from pipelines.artfusion import weights as weights_module
from pipelines.artfusion.convert import KL16_CONTENT12, build_components, map_state_dict
from pipelines.core.checkpoints import UnsafeCheckpointError, load_checkpoint


@pytest.fixture(scope="module")
def fixture_dir():
    return shared_fixtures("artfusion")


@pytest.fixture(scope="module")
def tiny_state_dict(fixture_dir):
    return load_checkpoint(fixture_dir / "tiny_artfusion.ckpt")["state_dict"]


def test_every_key_of_the_full_size_checkpoint_is_mapped_with_the_right_shape(fixture_dir):
    listing = json.loads((fixture_dir / "full_keys.json").read_text())
    assert len(listing["keys"]) == 797
    state_dict = {k["key"]: torch.empty(k["shape"], device="meta") for k in listing["keys"]}
    with torch.device("meta"):
        unet, vae, style_encoder, _ = build_components(KL16_CONTENT12)  # the released architecture
    unet_sd, vae_sd, vgg_sd, ignored = map_state_dict(state_dict, unet, vae, style_encoder)

    for model, converted in ((unet, unet_sd), (vae, vae_sd), (style_encoder, vgg_sd)):
        expected = model.state_dict()
        assert set(converted) == set(expected)
        assert all(converted[k].shape == expected[k].shape for k in expected)
    assert sum(t.numel() for k, t in unet_sd.items() if k != "null_style") == 181_016_104
    assert sum(t.numel() for t in vae_sd.values()) == 69_610_963
    assert sum(v.numel() for k, v in vgg_sd.items() if k.startswith("features.")) == 14_714_688

    # nothing silently dropped: each checkpoint key is used or listed with its reason
    used = len(state_dict) - len(ignored)
    assert used == 205 - 2 + 1 + 342 + 26 + 2 + 2  # EMA UNet, null style, VAE, VGG, scaling layer, scale/shift
    by_reason = {}
    for key, reason in ignored.items():
        by_reason.setdefault(reason, []).append(key)
    assert len([k for k in ignored if k.startswith("model.diffusion_model.")]) == 203
    assert {"model_ema.decay", "model_ema.num_updates", "null_style_vector.weight", "betas", "logvar"} <= set(ignored)
    assert all(reason.strip() for reason in by_reason)


def test_unknown_missing_and_misshapen_keys_are_errors(tiny_state_dict, fixture_dir):
    config = fixture_dir / "tiny_artfusion_config.json"

    def convert(state_dict):
        from pipelines.artfusion.convert import convert_checkpoint

        return convert_checkpoint(state_dict, config)

    with pytest.raises(MethodUnavailableError, match="does not know"):
        convert({**tiny_state_dict, "some_new_head.weight": torch.zeros(3)})
    missing = dict(tiny_state_dict)
    del missing["model_ema.diffusion_modeloutconvweight"]
    with pytest.raises(MethodUnavailableError, match="model_ema.diffusion_modeloutconvweight"):
        convert(missing)
    with pytest.raises(MethodUnavailableError, match="shape"):
        convert({**tiny_state_dict, "null_style_vector_ema.weight": torch.zeros(1, 100)})
    with pytest.raises(MethodUnavailableError, match="shape"):  # a full-size config for a tiny checkpoint
        from pipelines.artfusion.convert import convert_checkpoint

        convert_checkpoint(tiny_state_dict, None)


def test_scale_and_shift_buffers_in_either_shape_win_over_the_config(tiny_state_dict, fixture_dir):
    from pipelines.artfusion.convert import convert_checkpoint

    config = fixture_dir / "tiny_artfusion_config.json"
    scale = torch.linspace(0.2, 0.4, 16).reshape(1, 16)
    converted = convert_checkpoint({**tiny_state_dict, "scale_factors": scale, "shift_values": torch.zeros(16)}, config)
    assert list(converted.vae.config.latents_mean) == [0.0] * 16
    assert torch.allclose(
        torch.tensor(converted.vae.config.latents_std, dtype=torch.float64), 1 / scale.reshape(-1).double(), atol=1e-5
    )


def test_yaml_config_gives_the_same_model_as_json(tmp_path, fixture_dir):
    yaml = pytest.importorskip("yaml")
    config = json.loads((fixture_dir / "tiny_artfusion_config.json").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": config["model"]}))
    from_json = ArtFusionPipeline.from_single_file(
        fixture_dir / "tiny_artfusion.ckpt", fixture_dir / "tiny_artfusion_config.json"
    )
    from_yaml = ArtFusionPipeline.from_single_file(fixture_dir / "tiny_artfusion.ckpt", tmp_path / "config.yaml")
    for key, tensor in from_json.unet.state_dict().items():
        assert torch.equal(tensor, from_yaml.unet.state_dict()[key])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b""), "cannot be read"),
        (lambda p: p.write_bytes(b"PK\x03\x04 truncated zip"), "truncated or not a PyTorch checkpoint"),
        (
            lambda p: torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, p),
            "does not look like an ArtFusion checkpoint",
        ),
        (lambda p: torch.save([1, 2, 3], p), "not a checkpoint dict"),
    ],
)
def test_bad_checkpoint_files_give_a_clear_error(tmp_path, make, message):
    path = tmp_path / "weights.ckpt"
    make(path)
    with pytest.raises(MethodUnavailableError, match=message):
        ArtFusionPipeline.from_single_file(path)


def test_a_truncated_real_checkpoint_is_reported_with_its_size(tmp_path, fixture_dir):
    data = (fixture_dir / "tiny_artfusion.ckpt").read_bytes()
    path = tmp_path / "half.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MethodUnavailableError, match=r"half.ckpt \(\d+\.\d MB\) cannot be read: it is truncated"):
        ArtFusionPipeline.from_single_file(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/style-studio-pwned",))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _RunsCode()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused and nothing in it was executed"):
        ArtFusionPipeline.from_single_file(path)
    assert not os.path.exists("/tmp/style-studio-pwned")


def test_unknown_harmless_classes_in_lightning_extras_are_stood_in_for(tmp_path, tiny_state_dict):
    import types

    module = types.ModuleType("fake_lightning_callbacks")
    sys.modules[module.__name__] = module

    class ModelCheckpoint:
        def __init__(self):
            self.best_model_score = torch.tensor(0.5)

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    path = tmp_path / "lightning.ckpt"
    try:
        torch.save({"state_dict": {"a": torch.ones(2)}, "callbacks": {"cb": ModelCheckpoint()}}, path)
    finally:
        del sys.modules[module.__name__]
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["a"], torch.ones(2))
    assert "inert stand-in for fake_lightning_callbacks.ModelCheckpoint" in repr(loaded["callbacks"]["cb"])


def test_local_checkpoint_is_converted_once_into_the_cache(tmp_path, fixture_dir, monkeypatch, studio_context):
    checkpoint = tmp_path / "tiny.ckpt"
    checkpoint.write_bytes((fixture_dir / "tiny_artfusion.ckpt").read_bytes())
    config = json.loads((fixture_dir / "tiny_artfusion_config.json").read_text())
    real_from_single_file = ArtFusionPipeline.from_single_file.__func__
    calls = []

    def counting(cls, path, original_config=None, dtype=None):
        calls.append(path)
        return real_from_single_file(cls, path, config, dtype)

    monkeypatch.setattr(ArtFusionPipeline, "from_single_file", classmethod(counting))
    first = weights_module.resolve_weights(str(checkpoint), studio_context.cache_dir)
    second = weights_module.resolve_weights(str(checkpoint), studio_context.cache_dir)
    assert first == second and len(calls) == 1
    assert first == weights_module.converted_folder(checkpoint, studio_context.cache_dir)
    assert first.is_relative_to(studio_context.cache_dir / "artfusion")  # the context's cache, never ~/.cache
    assert (first / "model_index.json").is_file() and (first / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging folders left


def test_an_interrupted_conversion_leaves_no_half_written_cache(tmp_path, fixture_dir, monkeypatch, studio_context):
    checkpoint = tmp_path / "tiny.ckpt"
    checkpoint.write_bytes((fixture_dir / "tiny_artfusion.ckpt").read_bytes())
    monkeypatch.setattr(
        ArtFusionPipeline,
        "from_single_file",
        classmethod(lambda cls, path, oc=None, dtype=None: ArtFusionPipeline.__new__(cls)),
    )

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(ArtFusionPipeline, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        weights_module.resolve_weights(str(checkpoint), studio_context.cache_dir)
    root = studio_context.cache_dir / "artfusion"
    assert not root.exists() or not list(root.iterdir())  # neither a half folder nor a staging folder


def test_missing_weights_name_what_was_tried_and_how_to_fix(tmp_path, studio_context):
    cache = studio_context.cache_dir
    own_copy = r'To use your own copy: weights=\{"artfusion": "/path/to/artfusion_r12_step=317673\.ckpt"\}'
    with pytest.raises(MethodUnavailableError, match=rf"lagerbaer/artfusion.*HF_TOKEN.*{own_copy}") as missing:
        weights_module.resolve_weights("lagerbaer/artfusion", cache)  # HF_HUB_OFFLINE=1: not cached, cannot fetch
    # each front end spells the fix with its own flag
    assert missing.value.fix.method == "artfusion"
    assert "To use your own copy: --weights /path/to/artfusion_r12_step=317673.ckpt" in missing.value.for_front_end(
        "cli"
    )
    assert "--weights artfusion=/path/to/" in missing.value.for_front_end("app")
    assert "STYLE_STUDIO_WEIGHTS" in missing.value.for_front_end("modal")
    with pytest.raises(MethodUnavailableError, match=f"not found.*{own_copy}"):
        weights_module.resolve_weights(str(tmp_path / "nowhere.ckpt"), cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MethodUnavailableError, match="no model_index.json"):
        weights_module.resolve_weights(str(tmp_path / "empty"), cache)
    with pytest.raises(MethodUnavailableError, match="neither a local path nor a Hub repo"):
        weights_module.resolve_weights("just-a-word", cache)
    assert not cache.exists()  # nothing was written for weights that could not be had


def test_cli_converts_to_a_folder_that_loads_with_from_pretrained(tmp_path, fixture_dir):
    out = tmp_path / "converted"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "convert-artfusion",
            str(fixture_dir / "tiny_artfusion.ckpt"),
            str(out),
            "--original-config",
            str(fixture_dir / "tiny_artfusion_config.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    reloaded = ArtFusionPipeline.from_pretrained(out)
    original = ArtFusionPipeline.from_single_file(
        fixture_dir / "tiny_artfusion.ckpt", fixture_dir / "tiny_artfusion_config.json"
    )
    x = torch.randn(1, 16, 4, 6, generator=torch.Generator().manual_seed(0))
    content, style = torch.randn(1, 16, 4, 6), torch.randn(1, 2944)
    with torch.no_grad():
        assert (
            relative_error(reloaded.unet(x, 10, content, style).sample, original.unet(x, 10, content, style).sample)
            == 0
        )
    assert json.loads((out / "model_index.json").read_text())["unet"] == ["pipelines.artfusion.unet", "ArtFusionUNet"]
