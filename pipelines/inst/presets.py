"""Style-learning presets, without torch (front ends read the step counts to show them).

- ``paper``: the official recipe: 6100 steps, one timestep per step, the style image re-encoded (VAE and
  CLIP) at every step.
- ``fast``: the style's VAE posterior and CLIP embedding computed once, four timesteps batched per step on the
  same latent (see ``training``), so fewer steps at a higher learning rate reach the same loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipelines.core.errors import InvalidRequestError

DEFAULT_RESOLUTION = 512  # the original trains and applies at 512×512 (aspect ignored)


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = 6100
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    timesteps_per_step: int = 1  # timesteps (each with its own noise) batched on the same latent
    precompute: bool = False  # encode the style (VAE, CLIP; plain and flipped) once instead of every step
    resolution: int = 512
    clip_mode: str = "paper"  # "paper" or "code" (see pipeline_inst.clip_input)
    gradient_checkpointing: bool = False
    mixed_precision: bool = True  # bf16 autocast for the frozen models on CUDA (the mapper stays fp32)
    checkpoint_every: int = 500
    seed: int = 23  # the original main.py's default


PRESETS = {
    "paper": TrainingConfig(),
    "fast": TrainingConfig(steps=800, learning_rate=3e-4, timesteps_per_step=4, precompute=True),
}


def config_for(preset: str, steps: int | None = None, **overrides: object) -> TrainingConfig:
    """The preset's configuration with ``steps`` and other fields overridden."""
    if preset not in PRESETS:
        raise InvalidRequestError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}.")
    config = PRESETS[preset]
    if steps is not None:
        overrides["steps"] = steps
    return replace(config, **overrides)
