"""Image hygiene: every input goes through here before any method sees it.

``load_image`` turns a path, bytes, PIL image or array into an upright RGB picture, or raises an
``ImageInputError`` whose message says what was wrong and what to do. The rules:

- EXIF orientation is applied (phones store pictures sideways and set a flag).
- Any mode becomes RGB the way a person would expect: transparency is composited on white, 16-bit and
  float greyscale are rescaled rather than clipped, CMYK and other ICC-tagged images go through their
  colour profile to sRGB.
- Animated images (GIF, WebP, APNG) give their first frame.
- A file that declares more than ``MAX_PIXELS`` pixels is refused before it is decoded (decompression bombs).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from pipelines.core.errors import ImageInputError

ImageSource = Union[str, "os.PathLike[str]", bytes, Image.Image, np.ndarray]

MAX_PIXELS = 64_000_000  # declared width × height; 8000 × 8000 is the largest accepted square
DEFAULT_MAX_SIDE = 1024
MIN_SIDE = 32  # below this no method produces anything meaningful
READABLE_FORMATS = "PNG, JPEG, WebP, GIF, BMP or TIFF"


def load_image(
    source: ImageSource,
    *,
    role: str = "input",
    max_side: int | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """Decode ``source`` into an upright RGB image.

    ``role`` names the input in error messages ("content", "style"). ``max_side``, when given, also fits the
    long side to at most that many pixels (see ``fit_max_side``); JPEGs are then decoded at a reduced scale
    directly, which makes large photos cheap.
    """
    what = f"The {role} image"
    image = _open(source, what, max_pixels, max_side)
    with contextlib.suppress(Exception):  # a broken EXIF block should not cost the user their picture
        image = ImageOps.exif_transpose(image)
    image = to_rgb(image)
    if max_side is not None:
        image = fit_max_side(image, max_side, role=role)
    return image


def _open(source: ImageSource, what: str, max_pixels: int, max_side: int | None) -> Image.Image:
    if isinstance(source, Image.Image):
        _check_declared_size(source.size, what, max_pixels)
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, what)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageInputError(f"{what} is empty (0 bytes). Choose a {READABLE_FORMATS} file.")
        fp: io.BytesIO | Path = io.BytesIO(source)
        label = what
    elif isinstance(source, (str, os.PathLike)):
        fp = Path(source)
        label = f"{what} ({fp.name})"
        if not fp.is_file():
            raise ImageInputError(f"{label} was not found at {fp}. Check the path.")
        if fp.stat().st_size == 0:
            raise ImageInputError(f"{label} is empty (0 bytes). Choose a {READABLE_FORMATS} file.")
    else:
        raise ImageInputError(
            f"{what} must be a file path, bytes, a PIL image or an array, not {type(source).__name__}."
        )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(fp)
    except UnidentifiedImageError:
        raise ImageInputError(f"{label} is not an image this app can read. Use a {READABLE_FORMATS} file.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(
            f"{label} declares an enormous size and was refused as a possible decompression bomb. "
            f"Use an image under {max_pixels // 1_000_000} megapixels."
        ) from None
    except OSError as exc:
        raise ImageInputError(f"{label} could not be opened ({exc}). Try saving it again as PNG or JPEG.") from None

    _check_declared_size(image.size, label, max_pixels)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animated: take the first frame
    if max_side is not None and image.format == "JPEG":
        image.draft(None, (max_side, max_side))  # decode at 1/2, 1/4, 1/8 scale when that still covers max_side
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(
            f"{label} is damaged or truncated and cannot be decoded ({exc}). Re-export it, or pick another file."
        ) from None
    return image


def _check_declared_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageInputError(
            f"{label} is {width}×{height} pixels ({width * height / 1e6:.0f} MP); the limit is "
            f"{max_pixels / 1e6:.0f} MP. Downscale it first."
        )


def _from_array(array: np.ndarray, what: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageInputError(f"{what} array has shape {array.shape}; expected H×W, H×W×3 or H×W×4.")
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise ImageInputError(f"{what} array contains NaN or infinite values.")
        # floats in [0, 1] are the common convention; anything else is taken as 0..255
        if array.dtype.kind == "f" and values.max(initial=0.0) <= 1.0:
            values = values * 255.0
        array = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency on white."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _high_depth_grey_to_rgb(image)
    if "icc_profile" in image.info and mode in ("RGB", "RGBA", "CMYK"):
        converted = _through_icc_profile(image)
        if converted is not None:
            return converted
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_grey_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
    elif image.mode.startswith("I;16") or values.max(initial=0.0) > 255:
        scale = 255.0 / 65535.0  # 16-bit range, whatever the container mode
    else:
        scale = 1.0
    grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _through_icc_profile(image: Image.Image) -> Image.Image | None:
    """Map an ICC-tagged image to sRGB; None when the profile is sRGB already or unusable."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        if image.mode != "CMYK" and "srgb" in ImageCms.getProfileDescription(profile).lower():
            return None
        alpha = image.getchannel("A") if image.mode == "RGBA" else None
        base = image.convert("RGB") if image.mode == "RGBA" else image
        converted = ImageCms.profileToProfile(base, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # unusable profile: the plain conversion is the best we can do
        return None
    if alpha is None:
        return converted
    return to_rgb(Image.merge("RGBA", (*converted.split(), alpha)))


def fit_max_side(image: Image.Image, max_side: int, *, role: str = "input") -> Image.Image:
    """Downscale so the long side is at most ``max_side`` (never upscale); refuse slivers and specks."""
    width, height = image.size
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if min(image.size) < MIN_SIDE:
        fitted = (
            "" if image.size == (width, height) else f", {image.width}×{image.height} after fitting to {max_side} px"
        )
        raise ImageInputError(
            f"The {role} image is {width}×{height} pixels{fitted}; each side needs at least {MIN_SIDE} px. "
            "Use a larger or less elongated picture (or crop it)."
        )
    return image


def preserve_content_color(stylized: Image.Image, content: Image.Image) -> Image.Image:
    """Keep the content's colours: luminance from ``stylized``, chroma (Cb, Cr) from ``content``."""
    if content.size != stylized.size:
        content = content.resize(stylized.size, Image.Resampling.LANCZOS)
    luma = stylized.convert("YCbCr").getchannel("Y")
    _, cb, cr = content.convert("YCbCr").split()
    return Image.merge("YCbCr", (luma, cb, cr)).convert("RGB")


def fade_in_style(content: Image.Image, stylized: Image.Image, strength: float, full_at: float) -> Image.Image:
    """Below ``full_at``, cross-fade the stylized picture with the content (weight ``strength / full_at``).

    Methods whose weakest setting still repaints the picture use this so that strength 0 is exactly the
    content and the mapping stays continuous and monotone.
    """
    if strength >= full_at:
        return stylized
    if stylized.size != content.size:
        stylized = stylized.resize(content.size, Image.Resampling.LANCZOS)
    return Image.blend(content, stylized, strength / full_at)


def image_digest(image: Image.Image) -> str:
    """A short content hash of the decoded pixels (so a re-saved file with the same pixels matches)."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:16]
