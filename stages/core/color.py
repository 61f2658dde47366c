"""Dermoscopy-specific clean-up applied, when params ask for it, inside images.load_image.

Dermoscopes differ in light source and field of view: images from one clinic are bluer,
another's have a wide black ring. A model that learns those differences learns the clinic,
not the lesion. Both corrections here are classic remedies from the ISIC challenge entries.
"""

from __future__ import annotations

import numpy as np


def crop_dark_border(image: np.ndarray, threshold: int = 30, min_keep: float = 0.5) -> np.ndarray:
    """Cut away the dark vignette/ring a dermoscope leaves around its field of view.

    Keeps the rows and columns in which most pixels are brighter than `threshold` (luma);
    crops nothing when that would keep less than `min_keep` of either side, since a very dark
    lesion must not be mistaken for the border.
    """
    luma = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = luma > threshold
    rows = np.flatnonzero(bright.mean(axis=1) > 0.5)
    cols = np.flatnonzero(bright.mean(axis=0) > 0.5)
    if len(rows) == 0 or len(cols) == 0:
        return image
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    height, width = image.shape[:2]
    if (bottom - top) < min_keep * height or (right - left) < min_keep * width:
        return image
    return image[top:bottom, left:right]


def shades_of_gray(image: np.ndarray, power: int = 6) -> np.ndarray:
    """Shades-of-Gray colour constancy (Finlayson & Trezzi 2004), Minkowski norm p = 6.

    Estimates the illuminant as the p-norm of each channel and rescales the channels so that
    it becomes neutral grey; p = 6 sits between grey-world (p = 1) and max-RGB (p = ∞).
    """
    pixels = image.astype(np.float64)
    illuminant = np.power(np.mean(np.power(pixels, power), axis=(0, 1)), 1.0 / power)
    illuminant /= np.linalg.norm(illuminant) or 1.0
    gains = 1.0 / (np.maximum(illuminant, 1e-6) * np.sqrt(3.0))
    return np.clip(pixels * gains, 0, 255).astype(np.uint8)
