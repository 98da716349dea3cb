"""Original ArtFusion checkpoint (Lightning ``.ckpt``) → our diffusers components.

What is taken from the checkpoint (EMA weights only, as the original notebook samples inside ``ema_scope``):
- the denoiser from ``model_ema.*`` (keys are ``"model_ema." + "diffusion_model.<path>".replace(".", "")``);
- the learned null style from ``null_style_vector_ema.weight``;
- the KL-f16 VAE from ``first_stage_model.*`` (LDM names → diffusers ``AutoencoderKL`` names);
- VGG16 from ``vgg.slice*.*`` and its input scaling from ``vgg_scaling_layer.*``;
- per-channel latent normalisation from ``scale_factors``/``shift_values`` when present, else the config.

Everything else is listed in ``ConvertedCheckpoint.ignored`` with the reason (see ``IGNORED``); a key that is
neither used nor known is an error, so nothing is ever dropped silently.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler

from pipelines.artfusion.style_encoder import VGGStyleEncoder
from pipelines.artfusion.unet import ArtFusionUNet
from pipelines.core.errors import MethodUnavailableError

# The released model's architecture (configs/kl16_content12.yaml of the original repository), in the
# original vocabulary so that a user's own yaml/json has the same shape.
KL16_CONTENT12: dict[str, Any] = {
    "style_dim": 2944,
    "linear_start": 0.0015,
    "linear_end": 0.0195,
    "timesteps": 1000,
    "channels": 16,
    "scale_factors": [
        0.3335,
        0.1840,
        0.3386,
        0.3695,
        0.3052,
        0.3254,
        0.3262,
        0.2794,
        0.3670,
        0.3812,
        0.2283,
        0.3122,
        0.3555,
        0.3291,
        0.3485,
        0.3699,
    ],
    "shift_values": [
        -0.7449,
        -0.4035,
        0.4347,
        -0.2002,
        -0.4501,
        0.4839,
        -1.0560,
        1.5971,
        0.4377,
        -1.4263,
        -0.3681,
        -1.1490,
        0.1817,
        -0.2732,
        -1.2297,
        -0.3025,
    ],
    "unet_config": {
        "params": {
            "in_channels": 16,
            "out_channels": 16,
            "content_in_dim": 16,
            "content_refined_dim": 12,
            "model_channels": 384,
            "attention_resolutions": [1, 2],
            "num_res_blocks": 2,
            "channel_mult": [1, 2],
            "context_dim": 2944,
            "num_head_channels": 64,
        }
    },
    "first_stage_config": {
        "params": {
            "embed_dim": 16,
            "ddconfig": {
                "double_z": True,
                "z_channels": 16,
                "resolution": 256,
                "in_channels": 3,
                "out_ch": 3,
                "ch": 128,
                "ch_mult": [1, 1, 2, 2, 4],
                "num_res_blocks": 2,
                "attn_resolutions": [16],
                "dropout": 0.0,
            },
        }
    },
}

IGNORED: list[tuple[str, str]] = [
    (r"^model\.diffusion_model\.", "raw (non-EMA) training weights; inference uses the EMA copy model_ema.*"),
    (r"^model_ema\.(decay|num_updates)$", "EMA bookkeeping, not a weight"),
    (r"^null_style_vector\.weight$", "raw null style; inference uses null_style_vector_ema.weight"),
    (r"^null_style_vector_ema\.(decay|num_updates)$", "EMA bookkeeping, not a weight"),
    (
        r"^(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|"
        r"log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|posterior_variance|"
        r"posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2|logvar|lvlb_weights)$",
        "noise-schedule buffer; DDIMScheduler recomputes it from linear_start/linear_end (alphas_cumprod is checked)",
    ),
    (r"^scale_factor$", "scalar scale of old checkpoints; the per-channel scale_factors of the config are used"),
]


@dataclass
class ConvertedCheckpoint:
    unet: ArtFusionUNet
    vae: AutoencoderKL
    style_encoder: VGGStyleEncoder
    scheduler: DDIMScheduler
    ignored: dict[str, str] = field(default_factory=dict)  # checkpoint key → why it is not used


# ---- configuration -----------------------------------------------------------------------------------


def read_original_config(original_config: str | os.PathLike[str] | dict | None) -> dict[str, Any]:
    """The ``model.params`` level of an original config: a yaml or json file, a dict, or None (released model)."""
    if original_config is None:
        return KL16_CONTENT12
    if isinstance(original_config, dict):
        data = original_config
    else:
        text = Path(original_config).read_text()
        if str(original_config).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    if "model" in data:
        data = data["model"]
    return data.get("params", data)


def build_components(params: dict[str, Any]) -> tuple[ArtFusionUNet, AutoencoderKL, VGGStyleEncoder, DDIMScheduler]:
    """Empty (randomly initialised) components with the architecture ``params`` describes."""
    unet_params = params["unet_config"]["params"]
    unet = ArtFusionUNet(
        in_channels=unet_params["in_channels"],
        out_channels=unet_params["out_channels"],
        content_in_dim=unet_params["content_in_dim"],
        content_refined_dim=unet_params["content_refined_dim"],
        model_channels=unet_params["model_channels"],
        channel_mult=tuple(unet_params["channel_mult"]),
        num_res_blocks=unet_params["num_res_blocks"],
        attention_resolutions=tuple(unet_params["attention_resolutions"]),
        num_head_channels=unet_params["num_head_channels"],
        style_dim=unet_params.get("context_dim", params.get("style_dim", 2944)),
        hidden_time_embed_dim=unet_params.get("hidden_time_embed_dim", 512),
        time_embed_dim=unet_params.get("time_embed_dim", 1024),
        num_norm_groups=unet_params.get("num_norm_groups", 32),
    )

    first_stage = params["first_stage_config"]["params"]
    dd = first_stage["ddconfig"]
    dd = dd.get("params", dd)
    if first_stage["embed_dim"] != dd["z_channels"]:
        raise MethodUnavailableError("Unsupported VAE: embed_dim must equal z_channels for diffusers' AutoencoderKL.")
    resolutions = [dd["resolution"] // 2**level for level in range(len(dd["ch_mult"]))]
    has_attention = [resolution in dd["attn_resolutions"] for resolution in resolutions]
    vae = AutoencoderKL(
        in_channels=dd["in_channels"],
        out_channels=dd["out_ch"],
        down_block_types=tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in has_attention),
        up_block_types=tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(has_attention)),
        block_out_channels=tuple(dd["ch"] * m for m in dd["ch_mult"]),
        layers_per_block=dd["num_res_blocks"],
        latent_channels=dd["z_channels"],
        norm_num_groups=32,
        sample_size=dd["resolution"],
        scaling_factor=1.0,
        # ArtFusion normalises latents per channel: z' = (z − shift)·scale = (z − latents_mean) / latents_std
        latents_mean=tuple(float(v) for v in params["shift_values"]),
        latents_std=tuple(1.0 / float(v) for v in params["scale_factors"]),
        force_upcast=False,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=params.get("timesteps", 1000),
        beta_start=params.get("linear_start", 0.0015),
        beta_end=params.get("linear_end", 0.0195),
        beta_schedule="scaled_linear",  # LDM's "linear" is linear in sqrt(beta): diffusers calls it scaled_linear
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    return unet, vae, VGGStyleEncoder(), scheduler


# ---- key mapping -------------------------------------------------------------------------------------

# our UNet key → original ``diffusion_model.`` path, applied in order
_UNET_RENAMES = [
    (r"^time_embedding\.linear_1\.", "time_embed.mlp.0."),
    (r"^time_embedding\.linear_2\.", "time_embed.mlp.2."),
    (r"^style_embedding\.linear_1\.", "context_emb.0."),
    (r"^style_embedding\.linear_2\.", "context_emb.2."),
    (r"^content_modulation\.", "content_adaLN_modulation."),
    (r"^content_refiner\.", "content_in."),
    (r"^out\.norm\.", "out.norm_final."),
    (r"^out\.modulation\.", "out.adaLN_modulation.1."),
    (r"\.norm_in\.", ".in_layers.0."),
    (r"\.conv_in\.", ".in_layers.2."),
    (r"\.conv_out\.", ".out_layers.3."),
    (r"\.skip\.", ".skip_connection."),
    (r"\.modulation\.", ".adaLN_modulation.1."),
    (r"\.attention\.to_out\.0\.", ".proj_out."),
    (r"\.attention\.to_[qkv]\.", ".qkv."),
    (r"^(input_blocks\.\d+\.0)\.conv\.", r"\1.op."),  # the downsampling conv was called ``op``
]


def original_unet_key(key: str) -> str:
    for pattern, replacement in _UNET_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def _ema_key(original: str) -> str:
    return "model_ema." + ("diffusion_model." + original).replace(".", "")


def _unet_state_dict(unet: ArtFusionUNet, checkpoint: dict[str, torch.Tensor], used: set[str]) -> dict:
    head_dim = unet.config.num_head_channels
    converted = {}
    for key, target in unet.state_dict().items():
        if key == "null_style":
            source_key = "null_style_vector_ema.weight"
            converted[key] = _fit(_take(checkpoint, source_key, used), target, source_key)
            continue
        source_key = _ema_key(original_unet_key(key))
        tensor = _take(checkpoint, source_key, used)
        part = re.search(r"\.attention\.to_([qkv])\.", key)
        if part:  # legacy layout: rows grouped per head as [q_h; k_h; v_h]
            channels = tensor.shape[0] // 3
            heads = channels // head_dim
            grouped = tensor.reshape(heads, 3, head_dim, *tensor.shape[1:])
            tensor = grouped[:, "qkv".index(part.group(1))].reshape(channels, *tensor.shape[1:])
        converted[key] = _fit(tensor, target, source_key)  # squeezes the 1×1 Conv1d kernels of qkv/proj_out
    return converted


# original LDM VAE path → diffusers AutoencoderKL path
def diffusers_vae_key(key: str, num_levels: int) -> str:
    key = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", key)
    key = re.sub(r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m.group(1)) - 1}.", key)
    key = key.replace(".mid.attn_1.", ".mid_block.attentions.0.")
    key = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.attn\.", r"encoder.down_blocks.\1.attentions.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", key)

    def up(match: re.Match) -> str:
        return f"decoder.up_blocks.{num_levels - 1 - int(match.group(1))}.{match.group(2)}"

    key = re.sub(r"^decoder\.up\.(\d+)\.(block|attn|upsample)", up, key)
    key = re.sub(r"(up_blocks\.\d+)\.block\.", r"\1.resnets.", key)
    key = re.sub(r"(up_blocks\.\d+)\.attn\.", r"\1.attentions.", key)
    key = re.sub(r"(up_blocks\.\d+)\.upsample\.", r"\1.upsamplers.0.", key)
    key = key.replace(".nin_shortcut.", ".conv_shortcut.")
    if ".attentions." in key:
        key = re.sub(r"\.norm\.(weight|bias)$", r".group_norm.\1", key)
        key = re.sub(r"\.([qkv])\.(weight|bias)$", r".to_\1.\2", key)
        key = re.sub(r"\.proj_out\.(weight|bias)$", r".to_out.0.\1", key)
    return key


def _vae_state_dict(vae: AutoencoderKL, checkpoint: dict[str, torch.Tensor], used: set[str]) -> dict:
    levels = len(vae.config.block_out_channels)
    targets = vae.state_dict()
    converted = {}
    for source_key in [k for k in checkpoint if k.startswith("first_stage_model.")]:
        key = diffusers_vae_key(source_key.removeprefix("first_stage_model."), levels)
        if key not in targets:
            raise MethodUnavailableError(f"Checkpoint key {source_key} has no place in the VAE (as {key}).")
        converted[key] = _fit(_take(checkpoint, source_key, used), targets[key], source_key)
    _require_complete("VAE (first_stage_model.*)", targets, converted)
    return converted


def _vgg_state_dict(encoder: VGGStyleEncoder, checkpoint: dict[str, torch.Tensor], used: set[str]) -> dict:
    converted = {}
    for source_key in [k for k in checkpoint if k.startswith("vgg.")]:
        match = re.match(r"^vgg\.slice\d\.(\d+)\.(weight|bias)$", source_key)
        if not match:
            raise MethodUnavailableError(f"Unexpected VGG key {source_key} in the checkpoint.")
        key = f"features.{match.group(1)}.{match.group(2)}"
        converted[key] = _fit(_take(checkpoint, source_key, used), encoder.state_dict()[key], source_key)
    targets = encoder.state_dict()
    for ours, theirs in (("input_shift", "vgg_scaling_layer.shift"), ("input_scale", "vgg_scaling_layer.scale")):
        if theirs in checkpoint:
            converted[ours] = _fit(_take(checkpoint, theirs, used), targets[ours], theirs)
        else:  # the LPIPS constants, as the original hard-codes them
            converted[ours] = targets[ours]
    _require_complete("VGG16 style encoder (vgg.*)", targets, converted)
    return converted


def _fit(tensor: torch.Tensor, target: torch.Tensor, key: str) -> torch.Tensor:
    """``tensor`` in ``target``'s shape; only size-1 dimensions may differ (1×1 Conv1d kernels → Linear)."""
    if [d for d in tensor.shape if d != 1] != [d for d in target.shape if d != 1]:
        raise MethodUnavailableError(
            f"Checkpoint tensor {key} has shape {tuple(tensor.shape)}, the model needs {tuple(target.shape)}: "
            "the checkpoint does not match the architecture in the config."
        )
    return tensor.reshape(target.shape)


def _take(checkpoint: dict[str, torch.Tensor], key: str, used: set[str]) -> torch.Tensor:
    if key not in checkpoint:
        raise MethodUnavailableError(
            f"This does not look like an ArtFusion checkpoint: key {key!r} is missing. "
            "Use the released artfusion_r12_step=317673.ckpt (or pass the training config that matches your file)."
        )
    used.add(key)
    return checkpoint[key].float()  # stored dtypes vary (the tiny fixture is part fp16); build in fp32


def _require_complete(what: str, targets: dict, converted: dict) -> None:
    missing = sorted(set(targets) - set(converted))
    if missing:
        raise MethodUnavailableError(f"The checkpoint lacks {len(missing)} {what} weights, e.g. {missing[:3]}.")


# ---- the whole conversion ----------------------------------------------------------------------------


def unwrap_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A Lightning checkpoint keeps the weights under ``"state_dict"``; a bare state dict is accepted too."""
    state_dict = checkpoint.get("state_dict", checkpoint)
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise MethodUnavailableError("The file holds no tensors: it is not an ArtFusion checkpoint.")
    return tensors


def map_state_dict(
    state_dict: dict[str, torch.Tensor], unet: ArtFusionUNet, vae: AutoencoderKL, style_encoder: VGGStyleEncoder
) -> tuple[dict, dict, dict, dict[str, str]]:
    """Map an original state dict onto our three models' state dicts (checked key by key and shape by shape).

    Returns ``(unet, vae, style_encoder, ignored)``; raises if a needed key is missing or an unknown one is present.
    """
    used: set[str] = {name for name in ("scale_factors", "shift_values") if name in state_dict}
    unet_sd = _unet_state_dict(unet, state_dict, used)
    vae_sd = _vae_state_dict(vae, state_dict, used)
    vgg_sd = _vgg_state_dict(style_encoder, state_dict, used)
    ignored, unknown = {}, []
    for key in state_dict:
        if key in used:
            continue
        reason = next((why for pattern, why in IGNORED if re.search(pattern, key)), None)
        if reason is None:
            unknown.append(key)
        else:
            ignored[key] = reason
    if unknown:
        raise MethodUnavailableError(
            f"The checkpoint has {len(unknown)} keys this converter does not know, e.g. {unknown[:3]}: "
            "it is not the ArtFusion architecture given by the config."
        )
    return unet_sd, vae_sd, vgg_sd, ignored


def convert_checkpoint(
    state_dict: dict[str, torch.Tensor], original_config: str | os.PathLike[str] | dict | None = None
) -> ConvertedCheckpoint:
    """Build our components from an original state dict. Strict: every key is used or ignored for a reason."""
    params = dict(read_original_config(original_config))
    for name in ("scale_factors", "shift_values"):  # buffers in newer checkpoints win over the config
        if name in state_dict:
            params[name] = state_dict[name].reshape(-1).double().tolist()
    unet, vae, style_encoder, scheduler = build_components(params)
    unet_sd, vae_sd, vgg_sd, ignored = map_state_dict(state_dict, unet, vae, style_encoder)
    unet.load_state_dict(unet_sd, strict=True)
    vae.load_state_dict(vae_sd, strict=True)
    style_encoder.load_state_dict(vgg_sd, strict=True)

    if "alphas_cumprod" in state_dict:  # the config's schedule must be the one the model was trained with
        trained = state_dict["alphas_cumprod"].double()
        ours = scheduler.alphas_cumprod.double()
        if trained.shape != ours.shape or (trained - ours).abs().max() > 1e-5:
            raise MethodUnavailableError(
                "The checkpoint's noise schedule differs from the config's linear_start/linear_end/timesteps."
            )
    return ConvertedCheckpoint(unet.eval(), vae.eval(), style_encoder.eval(), scheduler, ignored)
