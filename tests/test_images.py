"""The one decoding function: orientation, colour modes, sizes and bad files."""

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.core.color import crop_dark_border, shades_of_gray
from stages.core.images import ImageError, Preprocessing, load_image
from tests import bad_files
from tests.conftest import REPO
from tests.tiny_models import dermoscope_photo


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
        (b"", "empty file"),
        (b"this is a text file, not a jpeg", "not an image"),
        (None, "corrupt or truncated"),
    ],
)
def test_bad_files_raise_image_error_with_a_reason(data, reason):
    if data is None:  # a JPEG cut in half
        data = _save(Image.new("RGB", (200, 200), (10, 20, 30)), "JPEG")[:300]
    with pytest.raises(ImageError, match=reason):
        load_image(data, 16)


# ---------------------------------------------------------------- every case, file built here


@pytest.mark.parametrize("orientation", range(2, 9))
def test_every_exif_orientation_is_made_upright(orientation):
    out = load_image(bad_files.exif_rotated(orientation), 32)
    assert out[16, 3, 0] > 200 and out[16, 3, 2] < 60, "red on the left"
    assert out[16, 28, 2] > 200 and out[16, 28, 0] < 60, "blue on the right"


@pytest.mark.parametrize("name", sorted(bad_files.colour_modes()))
def test_colour_modes_are_converted_not_rejected(name):
    out = load_image(bad_files.colour_modes()[name], 24)
    assert out.dtype == np.uint8 and out.shape == (24, 24, 3)
    assert 0 < out.mean() < 255


def test_sixteen_bit_rgb_keeps_its_colours():
    out = load_image(bad_files.png_rgb16(), 16).astype(int)
    assert (out[:, :, 0] > 240).all()  # red channel full everywhere
    assert out[8, 0, 1] < 30 and out[8, -1, 1] > 220  # green/blue ramp up left to right


def test_transparent_palette_pixels_become_black():
    out = load_image(bad_files.palette_with_transparency(), 40)
    assert out[15, 2].max() == 0 and out[15, 30].tolist() == [200, 120, 90]


def test_decompression_bomb_png_is_refused_without_decoding():
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(bad_files.png_bomb(), 96)


def test_huge_baseline_jpeg_is_decoded_at_reduced_scale_in_bounded_memory(tmp_path):
    path = tmp_path / "huge.jpg"
    path.write_bytes(bad_files.huge_jpeg())  # 15000 x 15000: 225 MP, over 2x Pillow's limit
    # VmHWM, the peak RSS of this process image (ru_maxrss would include the parent's, on
    # Linux it survives exec).
    code = ("import re, sys; from pathlib import Path; from stages.core.images import load_image; "
            "out = load_image(sys.argv[1], 96); "
            "peak = re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]; "
            "print(out.shape[0], int(out.mean()), peak)")
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc to measure peak memory")
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, check=True,
                            capture_output=True, text=True)
    side, mean, peak_kb = (int(x) for x in result.stdout.split())
    assert side == 96 and abs(mean - 150) < 3
    # Decoding it whole would take 225 MB (675 MB as RGB); at 1/8 scale it is 3.5 MB.
    assert peak_kb < 150_000, f"peak RSS {peak_kb // 1024} MB"


@pytest.fixture
def small_pixel_limit(monkeypatch):
    """Pillow's bomb limit lowered to 0.5 MP, so ordinary test images stand in for huge ones."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500_000)


def test_over_the_limit_jpeg_is_drafted_if_that_brings_it_under(small_pixel_limit):
    jpeg = bad_files.encode(bad_files.lesion((1600, 1200)), "JPEG")  # 1.9 MP > 2 x 0.5 MP
    assert load_image(jpeg, 64).shape == (64, 64, 3)  # decoded at 1/8: 200 x 150
    with pytest.raises(ImageError, match="still 1600x1200"):
        load_image(jpeg, 600)  # a 1200 px target needs full scale: over the limit


def test_over_the_limit_progressive_jpeg_or_png_is_refused(small_pixel_limit):
    img = bad_files.lesion((1000, 800))  # 0.8 MP: between the limit and twice it
    with pytest.raises(ImageError, match="progressive JPEG of 1000x800"):
        load_image(bad_files.encode(img, "JPEG", progressive=True), 64)
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(bad_files.encode(img, "PNG"), 64)


def test_missing_file_and_folder_have_their_own_reasons(tmp_path):
    with pytest.raises(ImageError, match="image file missing"):
        load_image(tmp_path / "nope.jpg", 16)
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageError, match="cannot read the file"):
        load_image(tmp_path / "dir.jpg", 16)
    (tmp_path / "empty.jpg").touch()
    with pytest.raises(ImageError, match="empty file"):
        load_image(tmp_path / "empty.jpg", 16)


def test_damaged_files_only_ever_raise_image_error():
    """Seeded fuzzing: cut and scribbled-on JPEGs and PNGs never crash the decoder."""
    rng = np.random.default_rng(0)
    originals = [bad_files.encode(bad_files.lesion(), "JPEG"),
                 bad_files.encode(bad_files.lesion(), "JPEG", progressive=True),
                 bad_files.encode(bad_files.lesion(), "PNG")]
    for data in originals:
        for _ in range(60):
            damaged = bytearray(data[: rng.integers(1, len(data))] if rng.random() < 0.5
                                else data)
            for at in rng.integers(0, len(damaged), rng.integers(1, 20)):
                damaged[at] = rng.integers(0, 256)
            with contextlib.suppress(ImageError):  # anything else fails the test
                load_image(bytes(damaged), 16)


def test_border_is_cropped_before_resizing_and_colour_balanced_after():
    photo = dermoscope_photo(120)
    cropped = crop_dark_border(photo)
    assert cropped.shape[0] < photo.shape[0] and cropped.shape[1] < photo.shape[1]
    data, cropped_data = _save(Image.fromarray(photo)), _save(Image.fromarray(cropped))
    plain = load_image(data, 32)
    crop = Preprocessing(crop_border=True)
    assert np.array_equal(load_image(data, 32, crop), load_image(cropped_data, 32))
    assert np.array_equal(load_image(data, 32, Preprocessing(color_constancy="shades_of_gray")),
                          shades_of_gray(plain))
    both = load_image(data, 32, Preprocessing(True, "shades_of_gray"))
    assert np.array_equal(both, shades_of_gray(load_image(cropped_data, 32)))
    assert not np.array_equal(both, plain)


def test_with_the_corrections_on_bad_files_still_raise_image_error_and_bad_settings_not():
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"isic_id,diagnosis\n", 16, Preprocessing(True, "shades_of_gray"))
    with pytest.raises(ImageError, match="empty file"):
        load_image(b"", 16, Preprocessing(True, "shades_of_gray"))
    with pytest.raises(ValueError, match="color_constancy must be one of") as bad:
        load_image(_save(bad_files.lesion()), 16, Preprocessing(color_constancy="grey_world"))
    assert not isinstance(bad.value, ImageError)  # a caller's bug, not a bad image


def test_preprocessing_round_trips_and_an_old_card_means_both_off():
    steps = Preprocessing(crop_border=True, color_constancy="shades_of_gray")
    assert Preprocessing.from_dict(steps.to_dict()) == steps
    assert Preprocessing.from_dict({}) == Preprocessing.from_dict(None) == Preprocessing()
    with pytest.raises(ValueError, match="unknown step"):
        Preprocessing.from_dict({"hair_removal": True})
