import io
import struct
import zlib

import numpy as np
import pytest
from conftest import gradient_image
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines import ImageInputError, load_image, preserve_content_color
from pipelines.core.images import MIN_SIDE, fit_max_side, image_digest


def encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# ---- modes -------------------------------------------------------------------------------------------


def test_rgb_passes_through_unchanged():
    image = gradient_image()
    assert load_image(encoded(image)).tobytes() == image.tobytes()


def test_greyscale_becomes_equal_rgb_channels():
    grey = Image.fromarray(np.full((40, 50), 77, np.uint8), "L")
    out = np.asarray(load_image(encoded(grey)))
    assert out.shape == (40, 50, 3) and (out == 77).all()


def test_transparent_rgba_is_composited_on_white():
    pixels = np.zeros((40, 40, 4), np.uint8)
    pixels[:, :20] = (255, 0, 0, 255)  # opaque red
    pixels[:, 20:] = (0, 0, 255, 0)  # fully transparent blue
    pixels[0, 0] = (0, 0, 0, 128)  # half-transparent black
    out = np.asarray(load_image(encoded(Image.fromarray(pixels, "RGBA"))))
    assert tuple(out[5, 5]) == (255, 0, 0)
    assert tuple(out[5, 30]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[0, 0])


def test_la_transparency_is_composited_on_white():
    pixels = np.zeros((40, 40, 2), np.uint8)
    pixels[..., 1] = 0  # all transparent black
    out = np.asarray(load_image(encoded(Image.fromarray(pixels, "LA"))))
    assert (out == 255).all()


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 200, 0] + [10, 10, 10] * 255)
    image.paste(1, (0, 0, 20, 40))
    data = encoded(image, transparency=1)  # palette index 1 is transparent
    out = np.asarray(load_image(data))
    assert tuple(out[5, 30]) == (0, 200, 0)
    assert tuple(out[5, 5]) == (255, 255, 255)


def test_plain_palette_image_keeps_its_colours():
    image = Image.new("P", (40, 40), 3)
    image.putpalette([0, 0, 0] * 3 + [12, 34, 56] + [0, 0, 0] * 252)
    assert tuple(np.asarray(load_image(encoded(image)))[10, 10]) == (12, 34, 56)


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    values = np.array([[0, 257 * 128, 65535]], np.uint16).repeat(40, 0).repeat(20, 1)
    image = Image.fromarray(values)
    out = np.asarray(load_image(encoded(image)))
    assert image.mode == "I;16"
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 25]) == (128, 128, 128)
    assert tuple(out[0, 45]) == (255, 255, 255)


def test_cmyk_jpeg_becomes_the_right_rgb():
    cmyk = Image.new("CMYK", (48, 48), (0, 255, 255, 0))  # pure magenta + yellow = red
    out = np.asarray(load_image(encoded(cmyk, "JPEG", quality=95))).astype(int)
    red, green, blue = out[24, 24]
    assert red > 200 and green < 60 and blue < 60


def test_float_and_bilevel_modes():
    as_float = Image.fromarray(np.full((40, 40), 0.5, np.float32), "F")
    assert tuple(np.asarray(load_image(as_float))[0, 0]) == (128, 128, 128)
    bilevel = Image.new("1", (40, 40), 1)
    assert (np.asarray(load_image(encoded(bilevel))) == 255).all()


def test_arrays_are_accepted_in_uint8_and_unit_float():
    array = np.asarray(gradient_image())
    assert load_image(array).tobytes() == gradient_image().tobytes()
    as_float = array.astype(np.float32) / 255.0
    assert np.abs(np.asarray(load_image(as_float)).astype(int) - array).max() <= 1
    with pytest.raises(ImageInputError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageInputError, match="NaN"):
        load_image(np.full((40, 40, 3), np.nan, np.float32))


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (80, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = load_image(encoded(image, "JPEG", exif=exif, quality=95))
    assert out.size == (40, 80)
    pixels = np.asarray(out).astype(int)
    assert pixels[3, 36, 0] > 200 and pixels[3, 36, 2] < 80  # the mark is now top-right


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    out = np.asarray(load_image(buffer.getvalue())).astype(int)
    assert out[20, 20, 0] > 200 and out[20, 20, 1] < 50


# ---- unreadable and hostile input --------------------------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims an enormous size (the body is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageInputError, match="limit is 64 MP|decompression bomb"):
        load_image(png_declaring(100_000, 100_000))
    with pytest.raises(ImageInputError, match="limit is 64 MP"):
        load_image(png_declaring(9_000, 9_000))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01garbage" * 50, "not an image this app can read"),
        (b"%PDF-1.4 not a picture", "not an image this app can read"),
    ],
)
def test_unreadable_bytes_get_a_clear_message(data, message):
    with pytest.raises(ImageInputError, match=message):
        load_image(data, role="style")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_reported_as_damaged(fmt):
    data = encoded(gradient_image(200, 200), fmt)
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        load_image(data[: len(data) // 2])


def test_paths_missing_empty_and_named_in_the_message(tmp_path):
    with pytest.raises(ImageInputError, match="not found"):
        load_image(tmp_path / "nope.png", role="content")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"content image \(empty.png\) is empty"):
        load_image(empty, role="content")
    with pytest.raises(ImageInputError, match="must be a file path"):
        load_image(12345)


# ---- sizes -------------------------------------------------------------------------------------------


def test_long_side_is_fitted_and_aspect_kept():
    out = load_image(gradient_image(2000, 1000), max_side=1024)
    assert out.size == (1024, 512)


def test_small_images_are_never_upscaled():
    assert load_image(gradient_image(300, 200), max_side=1024).size == (300, 200)


def test_large_jpeg_is_decoded_at_reduced_scale_and_fitted():
    data = encoded(gradient_image(3000, 2000), "JPEG")
    assert load_image(data, max_side=512).size == (512, 341)


@pytest.mark.parametrize(("size", "message"), [((1, 1), "1×1"), ((10, 400), "10×400"), ((40, 4000), "after fitting")])
def test_specks_and_slivers_are_refused(size, message):
    with pytest.raises(ImageInputError, match=message):
        load_image(encoded(Image.new("RGB", size)), max_side=1024)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 3000), height=st.integers(1, 3000), max_side=st.integers(64, 2048))
def test_fit_max_side_properties(width, height, max_side):
    image = Image.new("RGB", (width, height))
    try:
        out = fit_max_side(image, max_side)
    except ImageInputError:
        fitted = min(width, height) * min(1.0, max_side / max(width, height))
        assert fitted < MIN_SIDE + 1
        return
    assert max(out.size) <= max(max_side, 0) or out.size == image.size
    assert max(out.size) <= max_side
    assert min(out.size) >= MIN_SIDE
    if max(width, height) <= max_side:
        assert out.size == (width, height)
    else:
        assert abs(out.width / out.height - width / height) < 2.0 / min(out.size) * (width / height) + 0.02


# ---- colour preservation and digests -----------------------------------------------------------------


def test_preserve_content_color_keeps_content_chroma_and_stylized_luma():
    # mid-range colours, so that recombining luma and chroma stays inside the RGB gamut (no clipping)
    mid = lambda image: Image.fromarray((60 + np.asarray(image) // 2).astype(np.uint8))  # noqa: E731
    content = mid(gradient_image(120, 80, seed=1))
    stylized = mid(Image.fromarray(np.asarray(gradient_image(120, 80, seed=2))[:, ::-1, ::-1].copy()))
    out = preserve_content_color(stylized, content)
    out_ycc = np.asarray(out.convert("YCbCr")).astype(int)
    content_ycc = np.asarray(content.convert("YCbCr")).astype(int)
    stylized_ycc = np.asarray(stylized.convert("YCbCr")).astype(int)
    assert np.abs(out_ycc[..., 0] - stylized_ycc[..., 0]).mean() < 2.0
    assert np.abs(out_ycc[..., 1:] - content_ycc[..., 1:]).mean() < 2.0
    # and it really changed something: the stylized chroma was different
    assert np.abs(stylized_ycc[..., 1:] - content_ycc[..., 1:]).mean() > 5


def test_preserve_content_color_resizes_content_to_the_result():
    out = preserve_content_color(gradient_image(60, 40), gradient_image(120, 80))
    assert out.size == (60, 40) and out.mode == "RGB"


def test_digest_depends_on_pixels_only():
    image = gradient_image()
    assert image_digest(load_image(encoded(image))) == image_digest(image)
    other = image.copy()
    other.putpixel((0, 0), (1, 2, 3))
    assert image_digest(other) != image_digest(image)
