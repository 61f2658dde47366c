"""THE image decoding function: prepare, predict and the web app all call `load_image`.

Training and serving must see identical pixels, so there is exactly one path from a file (or
uploaded bytes) to the model's input: decode → upright → RGB uint8 → [crop the dark border] →
square at working size → [colour constancy]. The bracketed steps are off unless
params.yaml `prepare:` turns them on; prepare records the choice (`Preprocessing`) in its
meta.json and the model card, so predict and serve repeat it. Normalisation for a backbone
happens inside the model, never here.

Whatever the file holds, `load_image` either returns that array or raises `ImageError` with a
reason fit for a rejected-items report: it never crashes on bad data and never allocates
more than `Image.MAX_IMAGE_PIXELS` decoded pixels for one image.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from stages.core.color import crop_dark_border, shades_of_gray
from stages.core.errors import PipelineError

# The most pixels we ever decode for one image. Pillow warns above this and refuses above
# twice it; a real dermoscope makes ~25 MP at most, so anything far above is a
# decompression bomb (or a scan of a whole slide), not a photo.
Image.MAX_IMAGE_PIXELS = 100_000_000

_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# What Pillow's decoders raise on damaged data, besides OSError (truncated, broken stream).
_CORRUPT = (OSError, SyntaxError, EOFError, struct.error, zlib.error, IndexError, TypeError)


class ImageError(ValueError):
    """The file cannot be used as an image; the message says why, for the rejected report."""


class PreprocessingError(PipelineError, ValueError):
    """A preprocessing setting (params.yaml prepare: or a model card) this code cannot follow."""


COLOR_CONSTANCY = ("none", "shades_of_gray")  # the values of params.yaml prepare.color_constancy

@dataclass(frozen=True)
class Preprocessing:
    """The optional dermoscopy corrections of `load_image`, as prepare applied them.

    Stored as a dict in prepare's meta.json and the model card (`to_dict`); a card without it
    (an older model) reads as both off (`from_dict`).
    """

    crop_border: bool = False
    color_constancy: str = "none"  # one of COLOR_CONSTANCY

    def __post_init__(self):
        if not isinstance(self.crop_border, bool):
            raise PreprocessingError(f"preprocessing: crop_border must be true or false, "
                             f"got {self.crop_border!r}")
        if self.color_constancy not in COLOR_CONSTANCY:
            raise PreprocessingError(f"preprocessing: color_constancy must be one of "
                             f"{', '.join(COLOR_CONSTANCY)}; got {self.color_constancy!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Preprocessing:
        data = data or {}
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:  # a step this code cannot repeat: refuse rather than decode differently
            raise PreprocessingError(f"preprocessing: unknown step(s) {', '.join(unknown)}")
        return cls(**data)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float grayscale: Pillow's convert("RGB") would clip, so rescale to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.max() > 0 else 1.0
        img = Image.fromarray((arr * (255.0 / top)).clip(0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels carry no skin; put them on black like a dermoscope's border.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    try:
        return img.convert("RGB")
    except ValueError as err:  # e.g. LAB, which Pillow cannot convert to RGB
        raise ImageError(f"unsupported colour mode {img.mode}") from err


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation. A damaged EXIF block leaves the pixels as stored: better an
    image the wrong way up (dermoscopy has no 'up'; augment rotates anyway) than one lost."""
    try:
        return ImageOps.exif_transpose(img)
    except _CORRUPT + (ValueError, KeyError):
        return img


def _rewind(source: str | Path | BinaryIO) -> str | Path | BinaryIO:
    if hasattr(source, "seek"):
        source.seek(0)
    return source


def _open_huge_jpeg(source: str | Path | BinaryIO, size: int, err: Exception) -> Image.Image:
    """A JPEG above the pixel limit, opened so that it decodes at reduced scale, or refused.

    Image.open refuses it before draft() could shrink it, but the refusal is about decoded
    pixels, and libjpeg can decode a baseline JPEG straight to 1/2, 1/4 or 1/8 scale using
    buffers of that size. So we open the header directly (JpegImageFile skips Image.open's
    check), ask for the scale, and go on only if the pixels it will decode fit the limit.
    Progressive JPEGs keep every full-size DCT coefficient in memory whatever the scale, so
    they are refused, as is everything that is not a JPEG.
    """
    limit = Image.MAX_IMAGE_PIXELS or 0
    try:
        img = JpegImagePlugin.JpegImageFile(_rewind(source))
    except _CORRUPT as not_jpeg:
        raise ImageError(f"too many pixels (possible decompression bomb): {err}") from not_jpeg
    width, height = img.size
    if img.info.get("progressive"):
        img.close()
        raise ImageError(f"too many pixels: progressive JPEG of {width}x{height} px, more "
                         f"than {limit:,} and progressive JPEGs cannot be decoded at reduced "
                         "scale")
    img.draft("RGB", (2 * size, 2 * size))
    if img.size[0] * img.size[1] > limit:
        img.close()
        raise ImageError(f"too many pixels: JPEG of {width}x{height} px is still "
                         f"{img.size[0]}x{img.size[1]} at 1/8 scale, more than {limit:,}")
    return img


def _open(source: str | Path | BinaryIO, size: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow only warns between the limit and twice it; we refuse from the limit on.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
    except _BOMB as err:
        return _open_huge_jpeg(source, size, err)
    # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale; a 4000 px photo destined for 96 px
    # never needs its full-size pixels in memory. (A no-op for other formats.)
    img.draft("RGB", (2 * size, 2 * size))
    return img


def _is_empty(source: str | Path | BinaryIO) -> bool:
    if isinstance(source, io.BytesIO):
        return not source.getbuffer().nbytes
    return isinstance(source, str | Path) and Path(source).stat().st_size == 0


PLAIN = Preprocessing()  # both corrections off


def load_image(
    source: str | Path | bytes | BinaryIO,
    size: int,
    steps: Preprocessing = PLAIN,
) -> np.ndarray:
    """Decode an image file or bytes into an upright RGB uint8 array of shape (size, size, 3).

    The whole field of view is resized to a square, so a lesion near the edge is never cut
    off; `steps.crop_border` first cuts away the dermoscope's dark ring (color.crop_dark_border, on
    the decoded pixels, before resizing). `steps.color_constancy="shades_of_gray"` then balances
    the colours (color.shades_of_gray, at working size, where it is cheap). Raises
    ImageError for anything that is not a usable image (ValueError for a bad argument).
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        if _is_empty(source):
            raise ImageError("empty file (0 bytes)")
        with _open(source, size) as img:
            rgb = _to_rgb(_upright(img))
            if steps.crop_border:
                rgb = Image.fromarray(crop_dark_border(np.asarray(rgb, dtype=np.uint8)))
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
            pixels = np.asarray(rgb, dtype=np.uint8)
            return shades_of_gray(pixels) if steps.color_constancy == "shades_of_gray" \
                else pixels
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError("image file missing") from err
    except (IsADirectoryError, PermissionError) as err:
        raise ImageError(f"cannot read the file: {err.strerror}") from err
    except UnidentifiedImageError as err:
        raise ImageError("not an image Pillow can read") from err
    except _BOMB as err:  # a frame or tile of a multi-part file, checked at load time
        raise ImageError(f"too many pixels (possible decompression bomb): {err}") from err
    except (*_CORRUPT, ValueError) as err:
        # Truncated or corrupt data surfaces from the decoders as one of these.
        raise ImageError(f"corrupt or truncated image: {err}") from err
