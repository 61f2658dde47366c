"""The out-of-distribution guard: is a photo like the images the model was trained on?

The distance is Mahalanobis in the backbone's pooled-feature space: mean and (Ledoit-Wolf
shrunk) covariance of the training images' features, so directions in which dermoscopy
images vary little count most. The threshold is the 99th percentile of the validation
images' distances: about 1 % of real lesion photos are flagged, and a cat, a cup of coffee
or a screenshot, far from every lesion, is. evaluate fits it per model
(models/<b>/<fold>/ood.npz); a flagged photo gets no confident class in predict and serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.covariance import LedoitWolf

from stages.core.files import atomic_path

PERCENTILE = 99.0


@dataclass(frozen=True)
class OodGuard:
    mean: np.ndarray
    precision: np.ndarray  # inverse covariance
    threshold: float

    def distance(self, features: np.ndarray) -> np.ndarray:
        centred = features.astype(np.float64) - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, self.precision, centred))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance over threshold: above 1 means out of distribution."""
        return self.distance(features) / self.threshold

    def save(self, path: Path) -> None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, mean=self.mean, precision=self.precision,
                     threshold=np.float64(self.threshold))

    @classmethod
    def load(cls, path: Path) -> OodGuard:
        with np.load(path) as saved:
            return cls(saved["mean"], saved["precision"], float(saved["threshold"]))


def fit_guard(train_features: np.ndarray, val_features: np.ndarray) -> OodGuard:
    covariance = LedoitWolf().fit(train_features.astype(np.float64))
    guard = OodGuard(covariance.location_, covariance.precision_, 1.0)
    threshold = float(np.percentile(guard.distance(val_features), PERCENTILE))
    return OodGuard(guard.mean, guard.precision, threshold)
