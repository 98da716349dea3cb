"""The studio's ``styleid`` method: maps the studio request onto ``StyleIDPipeline`` (general mode by default).

Strength mapping (``injection_schedule``, monotone: every knob moves toward more style as s grows). The studio's
default strength, 0.7, is pinned to the paper's StyleID (γ 0.75, T 1.5, every step injected), so a default run
is the method as published; from there the knobs go linearly

    s:           0 ──────────────── 0.7 ────────── 1
    γ:           1.0                0.75           0.5     query preservation: less content query
    T:           1.0                1.5            2.0     attention temperature: sharper style attention
    injected:    0 %                100 %          100 %   share of the sampling steps injected (noisiest first)

Below 0.7 only the first (noisiest) share of the sampling steps gets the style's keys and values, so the picture
moves step by step toward the plain DDIM reconstruction of the content (which keeps only the AdaIN'd colours);
above 0.7, γ and T go on to the reference's other documented setting (γ 0.5, T 2). Below ``fade_in_below`` the
core also cross-fades with the content, so 0 is the content unchanged. γ and T can be set by hand (options), which
overrides the mapping for that knob.

The VAE posterior noise (the only randomness at DDIM η = 0) is drawn per picture from a fixed seed, so the method
is deterministic (no seed) and a picture's inversion is the same in every request: ``pipe.inversion_memo``
answers a second photo in a known style, or another strength on the same pair, without inverting again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image

from pipelines.core.device import diffusion_dtype
from pipelines.core.errors import MethodUnavailableError, WeightsFix
from pipelines.core.method import MethodInputs, OptionSpec, StepsSpec, StyleMethod

DEFAULT_WEIGHTS = "stable-diffusion-v1-5/stable-diffusion-v1-5"
FADE_IN_BELOW = 0.1
PAPER_STRENGTH = 0.7  # the studio's default strength: the paper's γ and T, every step injected
PAPER_GAMMA, PAPER_TEMPERATURE = 0.75, 1.5
WEAK = (1.0, 1.0)  # (γ, T) at strength 0
STRONG = (0.5, 2.0)  # (γ, T) at strength 1: the reference's other documented setting
NOISE_SEED = 22  # the reference's seed_everything(22); the VAE noise of every picture comes from it
LAYER_CHOICES = {
    "6-11": (6, 7, 8, 9, 10, 11),  # the paper's
    "7-11": (7, 8, 9, 10, 11),  # the authors' diffusers folder's
    "9-11": (9, 10, 11),  # full latent resolution only: finer textures
    "3-11": (3, 4, 5, 6, 7, 8, 9, 10, 11),  # every output block with attention
}
FIX = WeightsFix("styleid", "/path/to/stable-diffusion-v1-5")


class InjectionSchedule(NamedTuple):
    gamma: float  # query preservation γ (lower: more style)
    temperature: float  # attention temperature T (higher: more style)
    injection_fraction: float  # share of the sampling steps that get the style's features


def injection_schedule(strength: float) -> InjectionSchedule:
    """StyleID's knobs for the studio's strength in [0, 1] (see the module docstring).

    Piecewise linear through (0: γ 1, T 1, nothing injected), (0.7: γ 0.75, T 1.5, everything injected: the paper)
    and (1: γ 0.5, T 2, everything injected). γ never rises, T and the injected share never fall.
    """
    s = min(max(float(strength), 0.0), 1.0)
    if s <= PAPER_STRENGTH:
        u = s / PAPER_STRENGTH
        (gamma0, temperature0), (gamma1, temperature1), fraction = WEAK, (PAPER_GAMMA, PAPER_TEMPERATURE), u
    else:
        u = (s - PAPER_STRENGTH) / (1.0 - PAPER_STRENGTH)
        (gamma0, temperature0), (gamma1, temperature1), fraction = (PAPER_GAMMA, PAPER_TEMPERATURE), STRONG, 1.0
    return InjectionSchedule(
        gamma0 + (gamma1 - gamma0) * u, temperature0 + (temperature1 - temperature0) * u, min(1.0, fraction)
    )


def load_styleid_pipeline(weights: str, device: str, dtype: str) -> Any:
    """StyleIDPipeline from an SD 1.x folder or Hub id, with a clear error when it cannot be had. When the Hub cannot
    be reached, only local folders and the local Hugging Face cache are tried (no waiting for retries)."""
    import torch

    from pipelines.core.hub import hub_reachable, offline_reason
    from pipelines.styleid.pipeline_styleid import StyleIDPipeline

    folder = Path(weights).expanduser()
    remote = not folder.is_dir()
    online = not remote or hub_reachable()
    try:
        pipe = StyleIDPipeline.from_pretrained(
            weights if remote else str(folder), dtype=getattr(torch, dtype), local_files_only=not online
        )
    except (OSError, ValueError) as exc:
        reason = offline_reason() if not online else str(exc).splitlines()[0][:200].rstrip(". ")
        raise MethodUnavailableError(
            f"StyleID needs a Stable Diffusion 1.x model ({weights}), which could not be loaded ({reason}). "
            "Set HF_TOKEN if the repo is gated, or download it once where the Hub is reachable",
            fix=FIX,
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class StyleIDMethod(StyleMethod):
    name = "styleid"
    label = "StyleID (diffusion, any style, no training)"
    description = (
        "Training-free style injection in Stable Diffusion 1.x (Chung 2024): inverts both pictures, then redraws the "
        "photo with the painting's attention keys and values. Needs a GPU to be practical; a style seen before is "
        "not inverted again."
    )
    strength_mapping = (
        f"sets query preservation γ (1 → 0.5), attention temperature T (1 → 2) and the share of injected steps "
        f"(0 → all by {PAPER_STRENGTH}); {PAPER_STRENGTH} is the paper's γ 0.75, T 1.5; below {FADE_IN_BELOW} it "
        "also cross-fades with the content, so 0 is the content unchanged"
    )
    steps = StepsSpec(default=30, minimum=2, maximum=200)
    priority = 8
    uses_seed = False  # DDIM η = 0 and the VAE noise from a fixed seed: deterministic
    fade_in_below = FADE_IN_BELOW
    options = (
        OptionSpec(
            "gamma",
            "Query preservation γ",
            "float",
            None,
            0.0,
            1.0,
            help="Empty: from strength (0.75 at 0.7). Weight of the photo's attention queries; lower is more style.",
        ),
        OptionSpec(
            "temperature",
            "Attention temperature T",
            "float",
            None,
            0.1,
            5.0,
            help="Empty: from strength (1.5 at 0.7). Higher attends more sharply to the style.",
        ),
        OptionSpec(
            "layers",
            "Injected layers",
            "choice",
            "6-11",
            choices=tuple(LAYER_CHOICES),
            help="UNet output blocks whose self-attention takes the style: 6-11 is the paper's.",
        ),
        OptionSpec(
            "adain",
            "AdaIN start",
            "choice",
            "on",
            choices=("on", "off"),
            help="Start from the photo's latent with the painting's statistics (the paper's colour transfer).",
        ),
        OptionSpec(
            "mode",
            "Mode",
            "choice",
            "general",
            choices=("general", "original"),
            help=(
                "general: any aspect ratio, every step injected at any step count. original: the reference code "
                "exactly (512×512 centre crop, stretched back to the photo's shape; below 26 steps it injects "
                "nothing; use 50)."
            ),
        ),
    )

    def default_weights(self) -> str:
        return DEFAULT_WEIGHTS

    def weights_fix(self) -> WeightsFix:
        return FIX

    def dtype_for(self, device: str, precision: str = "auto") -> str:
        return diffusion_dtype(device, precision)

    def prefers(self, device: str) -> bool:
        return device.startswith("cuda")  # two inversions and a sampling pass: too slow to be a CPU default

    def check_weights(self, weights: str) -> None:
        if weights.startswith((".", "/", "~")) and not Path(weights).expanduser().is_dir():
            raise MethodUnavailableError(f"StyleID model folder {weights} was not found. Check the path.", fix=FIX)

    def weights_reachable(self, weights: str) -> bool:
        from pipelines.core.hub import hub_file_available

        folder = Path(weights).expanduser()
        return (folder / "model_index.json").is_file() or hub_file_available(weights, "model_index.json")

    def prefetch(self, weights: str, context: Any) -> None:
        from pipelines.core.hub import prefetch_snapshot

        parts = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")  # what StyleIDPipeline loads
        prefetch_snapshot(weights, ["model_index.json", *(f"{part}/*" for part in parts)])

    def gpu_seconds(self, steps: int) -> int:
        return 20 + steps  # two inversions and the sampling, batch 1 each

    def load(self, weights: str, device: str, dtype: str, context: Any) -> Any:
        return load_styleid_pipeline(weights, device, dtype)

    def generate(self, model: Any, inputs: MethodInputs, context: Any) -> Image.Image:
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        mapped = injection_schedule(inputs.strength)
        gamma = inputs.options.get("gamma", mapped.gamma)
        temperature = inputs.options.get("temperature", mapped.temperature)
        mode = inputs.options.get("mode", "general")
        layers = LAYER_CHOICES[inputs.options.get("layers", "6-11")]
        steps = inputs.steps
        schedule = model.make_schedule(steps, steps, steps - 1, mode, True, mapped.injection_fraction)

        # Each picture's VAE noise from the same fixed seed: its inversion is the same in every request.
        content, style = model.prepare_images(inputs.content, inputs.style, mode)
        content_noise, style_noise = (
            randn_tensor(model.latent_shape(picture), generator=torch.Generator("cpu").manual_seed(NOISE_SEED))
            for picture in (content, style)
        )

        def on_inversion_step(pipe: Any, role: str, index: int, total: int) -> None:
            inputs.progress(index + 1, total, f"Inverting the {role} {index + 1}/{total}")
            if inputs.cancelled:
                pipe._interrupt = True

        output = model(
            inputs.content,
            inputs.style,
            num_inference_steps=steps,
            num_inversion_steps=steps,
            start_step=steps - 1,
            gamma=gamma,
            temperature=temperature,
            injection_layers=layers,
            adain_init=inputs.options.get("adain", "on") == "on",
            mode=mode,
            content_noise=content_noise,
            style_noise=style_noise,
            injection_fraction=mapped.injection_fraction,
            callback_on_step_end=inputs.denoising_callback(len(schedule.sampling_positions)),
            callback_on_inversion_step=on_inversion_step,
            return_intermediates=True,
        )
        intermediates = output.intermediates or {}
        inputs.derived.update(
            mode=mode,
            gamma=round(gamma, 4),
            temperature=round(temperature, 4),
            injected_steps=f"{sum(schedule.injected)}/{len(schedule.sampling_positions)}",
            network_size=f"{content.width}x{content.height}",
            style_cache_hit=bool(intermediates.get("style_memo_hit", False)),
            content_cache_hit=bool(intermediates.get("content_memo_hit", False)),
        )
        return output.images[0]
