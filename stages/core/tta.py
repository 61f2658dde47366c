"""Test-time augmentation: average a model's probabilities over flipped and rotated copies.

A dermoscopy photo has no "up": a lesion rotated by 90° or mirrored is the same lesion, so a
classifier's answer should not depend on it. Averaging over the eight symmetries of the
square (the dihedral group: identity, three rotations, and their mirror images) smooths out
the orientation quirks a model picked up in training. Generic on purpose: it takes anything
that maps a float32 batch to probabilities (a Keras model, a TFLite wrapper, a lambda), so
evaluate can reuse it on the test split.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from stages.core.inference import Predict, as_predict
from stages.core.layers import DIHEDRAL

# The eight symmetries in layers.DIHEDRAL's order (the order of a model's `head.views`), by
# name, as numpy functions of a batch (n, h, w, c); rotations need square images, which every
# prepared image is.
NAMES = ("identity", "flip_ud", "flip_lr", "rot180", "transpose", "rot90", "rot270",
         "transverse")


def _numpy_dihedral(transpose: bool, flip_rows: bool, flip_cols: bool,
                    ) -> Callable[[np.ndarray], np.ndarray]:
    def transform(x: np.ndarray) -> np.ndarray:
        x = np.swapaxes(x, 1, 2) if transpose else x
        x = x[:, ::-1] if flip_rows else x
        return x[:, :, ::-1] if flip_cols else x

    return transform


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    name: _numpy_dihedral(*symmetry) for name, symmetry in zip(NAMES, DIHEDRAL, strict=True)
}


def tta_predict(
    model: keras.Model | Predict,
    images: np.ndarray,
    transforms: tuple[str, ...] = tuple(TRANSFORMS),
    batch_size: int = 64,
) -> np.ndarray:
    """Mean class probabilities over `transforms` of each uint8 image in the batch."""
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected a batch of square images (n, s, s, 3), got {images.shape}")
    predict = as_predict(model, batch_size)
    # All views of a few images go through the model together: for one image one call of 8
    # rather than 8 calls of 1, and memory stays at one batch.
    step = max(1, batch_size // len(transforms))
    means = []
    for start in range(0, len(images), step):
        chunk = images[start:start + step].astype(np.float32)
        # ascontiguousarray: rotated views have negative strides, which TF will not take.
        views = np.concatenate([np.ascontiguousarray(TRANSFORMS[name](chunk))
                                for name in transforms])
        probs = predict(views).reshape(len(transforms), len(chunk), -1)
        means.append(probs.mean(axis=0))
    return np.concatenate(means)
