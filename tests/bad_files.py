"""Image files as they turn up in real data sets, good and bad, built in a few milliseconds.

Each function returns the file's bytes; the tests write them under whatever name they test.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def lesion(size: tuple[int, int] = (120, 90), seed: int = 0) -> Image.Image:
    """A brown blob on skin: enough texture that JPEG truncation really loses data."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    blob = ((xx - w / 2) / (w / 4)) ** 2 + ((yy - h / 2) / (h / 4)) ** 2 < 1
    arr = np.where(blob[..., None], (90, 60, 40), (220, 170, 150)).astype(np.int16)
    arr += rng.integers(-20, 20, arr.shape, dtype=np.int16)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def red_left_blue_right(size: tuple[int, int] = (60, 40)) -> Image.Image:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = RED
    arr[:, size[0] // 2:] = BLUE
    return Image.fromarray(arr)


# How a camera stores an upright picture for each EXIF orientation: the inverse of the
# transform that ImageOps.exif_transpose applies when reading it.
STORED_AS = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_90],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_270],
}


def exif_rotated(orientation: int) -> bytes:
    """A JPEG whose upright view is red left / blue right, stored turned per `orientation`."""
    img = red_left_blue_right()
    for step in STORED_AS[orientation]:
        img = img.transpose(step)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", exif=exif, quality=95)


def truncated_jpeg() -> bytes:
    data = encode(lesion(), "JPEG", quality=90)
    return data[: len(data) // 2]


def corrupt_jpeg() -> bytes:
    """A JPEG marker followed by noise: what a failed download or disk error leaves."""
    noise = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    return b"\xff\xd8\xff\xe0" + noise


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def png_rgb16(width: int = 40, height: int = 30) -> bytes:
    """48-bit RGB PNG (Pillow cannot write one): a red-to-white gradient left to right."""
    row = np.zeros((width, 3), ">u2")
    row[:, 0] = 65535
    row[:, 1] = row[:, 2] = np.linspace(0, 65535, width).astype(np.uint16)
    raw = b"".join(b"\x00" + row.tobytes() for _ in range(height))
    return _png(width, height, 16, 2, zlib.compress(raw))


def png_bomb(side: int = 15_000) -> bytes:
    """A valid ~220 KB grayscale PNG of side x side black pixels: 225 MB once decoded."""
    compressor = zlib.compressobj(9)
    rows = bytes(side + 1) * 100  # filter byte + pixels, 100 rows at a time
    parts = [compressor.compress(rows) for _ in range(side // 100)]
    return _png(side, side, 8, 0, b"".join(parts) + compressor.flush())


def huge_jpeg(width: int = 15_000, height: int = 15_000) -> bytes:
    """A baseline grayscale JPEG above Pillow's bomb limit (225 MP; ~2 s to encode)."""
    return encode(Image.new("L", (width, height), 150), "JPEG", quality=50)


def palette_with_transparency() -> bytes:
    img = Image.new("P", (40, 30), 1)
    img.putpalette([0, 0, 0, 200, 120, 90] + [0] * 762)
    img.paste(0, (0, 0, 10, 30))  # left quarter transparent
    return encode(img, "PNG", transparency=0)


def colour_modes() -> dict[str, bytes]:
    """One file per colour mode that must be converted to RGB, not rejected."""
    base = lesion((60, 40))
    rgba = base.convert("RGBA")
    rgba.putalpha(200)
    return {
        "png_rgb.png": encode(base, "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "palette.png": encode(base.convert("P"), "PNG"),
        "palette_transparent.png": palette_with_transparency(),
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "gray.jpg": encode(base.convert("L"), "JPEG"),
        "gray_alpha.png": encode(base.convert("LA"), "PNG"),
        "gray16.png": encode(Image.fromarray(np.full((40, 60), 40_000, np.uint16)), "PNG"),
        "rgb16.png": png_rgb16(),
        "bilevel.png": encode(base.convert("1"), "PNG"),
        "png_named.jpg": encode(base, "PNG"),  # a PNG with a .jpg name
    }
