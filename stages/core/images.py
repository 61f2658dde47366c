"""THE image decoding function: prepare, predict and the web app all call `load_image`.

Training and serving must see identical pixels, so there is exactly one path from a file (or
uploaded bytes) to the model's input: decode → upright → RGB uint8 → square at working size.
Normalisation for a backbone happens inside the model, never here.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow refuses images above twice this many pixels; a real dermoscope makes ~25 MP at most,
# so anything far above is a decompression bomb, not a photo.
Image.MAX_IMAGE_PIXELS = 100_000_000


class ImageError(ValueError):
    """The file cannot be used as an image; the message says why, for the rejected report."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float grayscale: Pillow's convert("RGB") would clip, so rescale to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.max() > 0 else 1.0
        img = Image.fromarray((arr * (255.0 / top)).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels carry no skin; put them on black like a dermoscope's border.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_image(source: str | Path | bytes | BinaryIO, size: int) -> np.ndarray:
    """Decode an image file or bytes into an upright RGB uint8 array of shape (size, size, 3).

    The whole field of view is resized to a square (no crop), so a lesion near the edge is
    never cut off. Raises ImageError for anything that is not a usable image.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                # JPEG: let libjpeg decode at 1/2, 1/4 or 1/8 scale; a 4000 px photo
                # destined for 128 px never needs its full-size pixels in memory.
                img.draft("RGB", (2 * size, 2 * size))
                img = ImageOps.exif_transpose(img)
                img = _to_rgb(img)
                img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
                return np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"too many pixels (possible decompression bomb): {err}") from err
    except UnidentifiedImageError as err:
        raise ImageError("not an image Pillow can read") from err
    except (OSError, SyntaxError, ValueError) as err:
        # Truncated or corrupt data surfaces from the decoder as OSError/SyntaxError.
        raise ImageError(f"corrupt or truncated image: {err}") from err
