"""The one decoding function: orientation, colour modes, sizes and bad files."""

import io

import numpy as np
import pytest
from PIL import Image

from stages.core.images import ImageError, load_image


def _save(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_exif_rotated_photo_is_made_upright():
    # Left half red, right half blue, stored rotated with EXIF orientation 6 (rotate 90° CW).
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    stored = Image.fromarray(arr).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = load_image(_save(stored, "JPEG", exif=exif, quality=95), 32)
    assert out.shape == (32, 32, 3)
    assert out[16, 4, 0] > 200 and out[16, 4, 2] < 60  # red back on the left
    assert out[16, 28, 2] > 200 and out[16, 28, 0] < 60


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_any_colour_mode_becomes_rgb_uint8(mode):
    img = Image.new("RGB", (50, 30), (120, 80, 40)).convert(mode)
    if mode == "I;16":
        img = Image.fromarray(np.full((30, 50), 40000, np.uint16))
    fmt = "JPEG" if mode == "CMYK" else "PNG" if mode != "LA" else "PNG"
    out = load_image(_save(img, fmt), 16)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert out.max() > 0


def test_sixteen_bit_is_rescaled_not_clipped():
    gradient = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (8, 1))
    out = load_image(_save(Image.fromarray(gradient)), 8)
    assert out[:, 0].mean() < 40 and out[:, -1].mean() > 200


def test_large_jpeg_is_decoded_at_reduced_scale_to_the_right_size():
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (2400, 3200, 3), np.uint8))
    out = load_image(_save(big, "JPEG", quality=80), 64)
    assert out.shape == (64, 64, 3)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "not an image"),
        (b"this is a text file, not a jpeg", "not an image"),
        (None, "corrupt or truncated"),
    ],
)
def test_bad_files_raise_image_error_with_a_reason(data, reason):
    if data is None:  # a JPEG cut in half
        data = _save(Image.new("RGB", (200, 200), (10, 20, 30)), "JPEG")[:300]
    with pytest.raises(ImageError, match=reason):
        load_image(data, 16)
