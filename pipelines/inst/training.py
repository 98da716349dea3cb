"""Learning an InST style from one image: train the mapper, everything else frozen.

Objective (spec §2): z = 0.18215 · VAE posterior sample of the (randomly flipped) style image, t ~ U[0, 1000),
ε ~ N(0, I), loss = MSE(ε_θ(√ᾱ_t z + √(1−ᾱ_t) ε, t, text("*" with the mapped token)), ε); AdamW on the
mapper only (lr 1e-4, weight decay 0.01), batch 1, constant learning rate.

Presets:
- ``paper``: the official recipe: 6100 steps, one timestep per step, the style image re-encoded (VAE and
  CLIP) at every step.
- ``fast``: the style image never changes, so its VAE posterior and CLIP embedding, plain and flipped, are
  computed once (each step then only draws a posterior sample: the same distribution as re-encoding); and
  ``timesteps_per_step`` timesteps are batched on the same latent, which averages away most of the gradient
  noise of a batch-1 run, so far fewer steps and a higher learning rate reach the same loss.
Progress and loss go to a callback every step; checkpoints every N steps let an interrupted run resume; a
``threading.Event`` cancels.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F

from pipelines.inst.mapper import StyleMapper
from pipelines.inst.pipeline_inst import ClipInputMode, InSTPipeline, StyleConditioning, image_to_pixels
from pipelines.inst.presets import PRESETS, TrainingConfig, config_for  # noqa: F401 (callers import them here)

logger = logging.getLogger(__name__)

#: ``on_step(step, total_steps, loss)``, called after every optimisation step
StepCallback = Callable[[int, int, float], None]


class TrainingCancelled(Exception):
    """The run was cancelled; its last checkpoint (if any) can be resumed."""


@dataclass
class TrainingResult:
    conditioning: StyleConditioning
    losses: list[float]
    steps: int
    seconds: float
    config: TrainingConfig

    @property
    def final_loss(self) -> float:
        tail = self.losses[-min(50, len(self.losses)) :]
        return sum(tail) / len(tail)


def freeze(pipe: InSTPipeline) -> None:
    for module in (pipe.vae, pipe.text_encoder, pipe.unet, pipe.image_encoder):
        module.requires_grad_(False)
        module.eval()


def learn_style(
    pipe: InSTPipeline,
    style_image: PIL.Image.Image,
    config: TrainingConfig,
    *,
    on_step: StepCallback | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    cancel: threading.Event | None = None,
) -> TrainingResult:
    """Train a mapper for ``style_image`` (already at ``config.resolution``²). Resumes from ``checkpoint_dir``."""
    device = pipe._execution_device
    freeze(pipe)
    if config.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    width = pipe.text_encoder.get_input_embeddings().embedding_dim
    torch.manual_seed(config.seed)
    mapper = StyleMapper(dim=width).to(device)
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    losses: list[float] = []
    start_step = 0
    checkpoint = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if checkpoint is not None and (checkpoint / "state.json").is_file():
        start_step, losses = _resume(checkpoint, mapper, optimizer, generator)
        logger.info("resuming style training at step %d", start_step)

    views = [style_image, PIL.ImageOps.mirror(style_image)]  # the only augmentation: a horizontal flip
    encoded = [_encode_view(pipe, view, config.clip_mode) for view in views] if config.precompute else None
    alphas = pipe.scheduler.alphas_cumprod.to(device)
    scaling = pipe.vae.config.scaling_factor
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.mixed_precision and device.type == "cuda")
    began = time.perf_counter()
    mapper.train()  # dropout 0.05 is part of the method
    for step in range(start_step, config.steps):
        if cancel is not None and cancel.is_set():
            if checkpoint is not None:
                _save(checkpoint, step, mapper, optimizer, generator, losses, config)
            raise TrainingCancelled(f"cancelled at step {step} of {config.steps}")
        flip = int(torch.randint(0, 2, (1,), generator=generator))
        if encoded is not None:
            embeds, mean, std = encoded[flip]
        else:
            embeds, mean, std = _encode_view(pipe, views[flip], config.clip_mode)
        k = config.timesteps_per_step
        latent = scaling * (mean + std * torch.randn(mean.shape, generator=generator).to(device))
        timesteps = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (k,), generator=generator).to(device)
        noise = torch.randn((k, *latent.shape[1:]), generator=generator).to(device)
        a = alphas[timesteps].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latent + (1 - a).sqrt() * noise
        with autocast:
            token = mapper(embeds)
            context = pipe.encode_prompt("*", token).expand(k, -1, -1)
            prediction = pipe.unet(
                noisy.to(pipe.unet.dtype), timesteps, encoder_hidden_states=context.to(pipe.unet.dtype)
            ).sample
        loss = F.mse_loss(prediction.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss became {losses[-1]} at step {step + 1}; try a lower learning rate")
        if on_step is not None:
            on_step(step + 1, config.steps, losses[-1])
        if checkpoint is not None and (step + 1) % config.checkpoint_every == 0:
            _save(checkpoint, step + 1, mapper, optimizer, generator, losses, config)

    mapper.eval()
    embeds, mean, std = _encode_view(pipe, style_image, config.clip_mode)
    conditioning = StyleConditioning(mapper, embeds, mean, std, config.clip_mode)
    return TrainingResult(conditioning, losses, config.steps, time.perf_counter() - began, config)


@torch.no_grad()
def _encode_view(pipe: InSTPipeline, image: PIL.Image.Image, mode: ClipInputMode) -> tuple[torch.Tensor, ...]:
    pixels = image_to_pixels(image).to(pipe.vae.device, pipe.vae.dtype)
    posterior = pipe.vae.encode(pixels).latent_dist
    return pipe.clip_image_embeds(image, mode), posterior.mean.float(), posterior.std.float()


# ---- checkpoints: an interrupted run resumes where it stopped ------------------------------------------


def _save(
    folder: Path,
    step: int,
    mapper: StyleMapper,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    losses: list[float],
    config: TrainingConfig,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "mapper": mapper.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": generator.get_state(),
        "torch_rng": torch.get_rng_state(),  # dropout draws from the global generator
    }
    tmp = folder / ".state.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / "state.pt")
    meta = folder / ".state.json.tmp"
    meta.write_text(json.dumps({"step": step, "losses": losses, "config": asdict(config)}))
    os.replace(meta, folder / "state.json")  # last: a checkpoint is complete once this exists


def _resume(
    folder: Path, mapper: StyleMapper, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, list[float]]:
    meta = json.loads((folder / "state.json").read_text())
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    mapper.load_state_dict(state["mapper"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(meta["step"]), list(meta["losses"])
