"""Calibrated probabilities and a decision: temperature scaling, its before/after scores
(Brier, expected calibration error, a reliability table), and the referral threshold.

Temperature scaling divides the log-probabilities by one number T fitted by likelihood
(Guo et al. 2017): it changes how sure the model says it is, never the ranking, so ROC AUC is
untouched. It works the same for two classes and for many, and one parameter cannot overfit a
few hundred validation images the way isotonic regression can.

The decision is binary: the "refer" score is the probability of the malignant class, or with
several classes the summed probability of the malignant ones, and the threshold is the
highest score that still flags `target_sensitivity` of the malignant validation images.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from stages.core.labels import CODES

EPS = 1e-7


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of `labels`."""
    def nll(t: float) -> float:
        p = apply_temperature(probs, t)[np.arange(len(labels)), labels]
        return float(-np.mean(np.log(np.clip(p, EPS, 1.0))))

    # to 1e-8, not scipy's default 1e-5: T is then the optimum, not where the search stopped,
    # and the same on every CPU once rounded (served.DECIMALS)
    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded",
                                 options={"xatol": 1e-8}).x)


def malignant_classes(classes: list[str]) -> list[int]:
    """Indices of the classes a referral is about: `malignant`, or the malignant diagnoses."""
    if "malignant" in classes:
        return [classes.index("malignant")]
    malignant = {diagnosis for diagnosis, bm in CODES.values() if bm == "malignant"}
    return [i for i, c in enumerate(classes) if c in malignant] or [len(classes) - 1]


def refer_score(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    return probs[:, malignant_classes(classes)].sum(axis=1)


def threshold_for_sensitivity(is_malignant: np.ndarray, score: np.ndarray,
                              target: float) -> float:
    """The highest threshold (refer when score >= threshold) whose sensitivity on these
    images is at least `target`."""
    positives = np.sort(score[is_malignant.astype(bool)])[::-1]
    if len(positives) == 0:
        return 0.5
    needed = int(np.ceil(target * len(positives)))
    return float(positives[max(needed, 1) - 1])


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict]:
    """Per confidence bin (of the arg-max probability): mean confidence, accuracy, count."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            rows.append({"confidence": float(confidence[inside].mean()),
                         "accuracy": float(correct[inside].mean()), "count": int(inside.sum())})
    return rows


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    rows = reliability(labels, probs, bins)
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows)
                 / max(1, len(labels)))
