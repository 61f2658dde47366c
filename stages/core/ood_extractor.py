"""The fixed feature space of the out-of-distribution guard (core/ood.py): pooled ImageNet
EfficientNet-Lite features of the photo resized to the size the network was trained at, the
same for every served model. The weights come from the pip package (core/lite.py); a missing
package is an error that names it, never a guard quietly built on other features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from stages.core import lite
from stages.core.errors import MissingInputError
from stages.core.inference import as_predict
from stages.core.ood import OodGuard


def build_extractor(input_size: int, variant: str = "lite0", size: int = 224) -> keras.Model:
    """uint8-valued RGB (n, input_size, input_size, 3) → pooled features (n, width)."""
    base = lite.build_efficientnet_lite(variant, (size, size, 3), include_top=False,
                                        pooling="avg", name=f"ood_{variant}")
    lite.load_imagenet_weights(base, variant)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = inputs
    if input_size != size:
        x = keras.layers.Resizing(size, size, antialias=True, name="to_imagenet_size")(x)
    return keras.Model(inputs, base(x), name=f"ood_{variant}_{size}")


@dataclass
class PhotoGuard:
    """The guard (core/ood.py) with its extractor: photos in, OOD scores out (above 1: out
    of distribution)."""
    guard: OodGuard
    extractor: keras.Model

    def __post_init__(self):
        self._features = as_predict(self.extractor)

    @classmethod
    def load(cls, spec: dict, file: Path, input_size: int) -> PhotoGuard:
        """`spec`: guard.json (or a card's "ood"), whose feature space `file` was fitted in."""
        if not file.exists():
            raise MissingInputError(f"{file} (the out-of-distribution guard) not found: run "
                                    "`dvc repro guard` (or `dvc pull`)")
        return cls(OodGuard.load(file), build_extractor(input_size, spec["extractor"],
                                                        int(spec["size"])))

    def score(self, images: np.ndarray) -> np.ndarray:
        return self.guard.score(self._features(images.astype(np.float32)))
