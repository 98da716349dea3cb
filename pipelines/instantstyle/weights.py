"""Where InstantStyle's four models come from: the defaults, the studio's weights string, and local-or-Hub lookup.

No torch here: the studio imports this to validate weights without loading anything.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.core.errors import MethodUnavailableError, WeightsFix

# The InstantStyle scripts' choices.
DEFAULT_SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
# The original loads ip-adapter_sdxl.bin; the .safetensors beside it holds the same tensors (bitwise the same
# results, fixture SPEC §4) and needs no unpickling.
DEFAULT_IP_ADAPTER = "h94/IP-Adapter/sdxl_models/ip-adapter_sdxl.safetensors"
DEFAULT_IMAGE_ENCODER = "h94/IP-Adapter/sdxl_models/image_encoder"  # OpenCLIP ViT-bigG-14, D = 1280
DEFAULT_CONTROLNET = "diffusers/controlnet-canny-sdxl-1.0"
IP_ADAPTER_FILES = ("ip-adapter_sdxl.safetensors", "ip-adapter_sdxl.bin")  # looked for in a local folder
NO_CONTROLNET = "none"  # as the fourth part: text-to-image in the content's aspect ratio, without its edges
SEPARATOR = "::"  # "SDXL::IP_ADAPTER_FILE::IMAGE_ENCODER::CONTROLNET", empty or omitted parts take the defaults
FIX = WeightsFix(
    "instantstyle",
    f"SDXL_FOLDER{SEPARATOR}IP_ADAPTER_FILE{SEPARATOR}IMAGE_ENCODER_FOLDER{SEPARATOR}CONTROLNET_FOLDER",
)


def weights_spec(
    sdxl: str | None = None,
    ip_adapter: str | None = None,
    image_encoder: str | None = None,
    controlnet: str | None = None,
) -> str:
    """The studio's weights string; None takes the default for that part."""
    parts = (
        sdxl or DEFAULT_SDXL,
        ip_adapter or DEFAULT_IP_ADAPTER,
        image_encoder or DEFAULT_IMAGE_ENCODER,
        controlnet or DEFAULT_CONTROLNET,
    )
    return SEPARATOR.join(parts)


def split_weights(weights: str) -> tuple[str, str, str, str | None]:
    """(SDXL, IP-Adapter file, image encoder, ControlNet or None) of ``SDXL::IP_ADAPTER::IMAGE_ENCODER::CONTROLNET``;
    omitted or empty parts take the defaults, a ControlNet of "none" turns it off."""
    parts = [part.strip() for part in weights.split(SEPARATOR)]
    if len(parts) > 4:
        raise MethodUnavailableError(
            f"InstantStyle weights have at most four parts (SDXL{SEPARATOR}IP_ADAPTER{SEPARATOR}IMAGE_ENCODER"
            f"{SEPARATOR}CONTROLNET); got {len(parts)} in {weights!r}.",
            fix=FIX,
        )
    parts += [""] * (4 - len(parts))
    defaults = (DEFAULT_SDXL, DEFAULT_IP_ADAPTER, DEFAULT_IMAGE_ENCODER, DEFAULT_CONTROLNET)
    sdxl, ip_adapter, image_encoder, controlnet = (
        part or default for part, default in zip(parts, defaults, strict=True)
    )
    return sdxl, ip_adapter, image_encoder, None if controlnet.lower() == NO_CONTROLNET else controlnet


def is_local(name: str) -> bool:
    return Path(name).expanduser().exists()


def hub_location(spec: str) -> tuple[str, str]:
    """(repo id or folder, subfolder) of a local folder or ``owner/repo[/sub/folder]`` on the Hub."""
    if is_local(spec):
        return str(Path(spec).expanduser()), ""
    parts = spec.strip("/").split("/")
    return "/".join(parts[:2]), "/".join(parts[2:])


def ip_adapter_location(spec: str) -> tuple[str, str, str]:
    """(repo id or folder, subfolder, weight file name) of an IP-Adapter given as a local file, a local folder
    holding ``ip-adapter_sdxl.safetensors``/``.bin``, or ``owner/repo/path/to/file`` on the Hub."""
    path = Path(spec).expanduser()
    if path.is_file():
        return str(path.parent), "", path.name
    if path.is_dir():
        for name in IP_ADAPTER_FILES:
            if (path / name).is_file():
                return str(path), "", name
        raise FileNotFoundError(f"no {' or '.join(IP_ADAPTER_FILES)} in {path}")
    parts = spec.strip("/").split("/")
    if len(parts) < 3:
        raise ValueError(f"name the IP-Adapter file, e.g. {DEFAULT_IP_ADAPTER}; got {spec!r}")
    return "/".join(parts[:2]), "/".join(parts[2:-1]), parts[-1]


def hub_path(repo_or_folder: str, subfolder: str, filename: str) -> tuple[str, str]:
    """(repo, path of ``filename`` inside it)."""
    return repo_or_folder, f"{subfolder}/{filename}" if subfolder else filename
