"""A decision rule for balanced accuracy: per-class biases on the calibrated log-probabilities.

ISIC 2018 and 2019 score the predicted class by balanced multiclass accuracy (the mean recall
over classes), so a rare class the model ranks well but rarely puts first costs as much as a
common one. Predicting argmax(log p + b), a bias b_c per class, moves the prediction towards
the rare classes. The biases decide the class only: the probabilities shown stay calibrated,
and the AUCs and the referral threshold, which read them, are those of the arg-max. The
biases are chosen by coordinate ascent on a grid to maximise balanced accuracy on the
validation (out-of-fold) images; the estimate fits them cross-fitted (core/served.py), so it
pays for the choosing.
"""

from __future__ import annotations

import numpy as np

from stages.core.calibration import EPS

GRID = np.round(np.arange(-3.0, 3.0 + 1e-9, 0.05), 2)
ROUNDS = 3


def _balanced_accuracy(labels: np.ndarray, decided: np.ndarray, classes: int) -> float:
    recalls = [np.mean(decided[labels == c] == c) for c in range(classes) if (labels == c).any()]
    return float(np.mean(recalls))


def decide(probs: np.ndarray, class_bias: list | tuple | np.ndarray | None = None,
           ) -> np.ndarray:
    """Each image's predicted class from its calibrated probabilities (n, classes): the
    arg-max, or with the rule's biases argmax(log p + b)."""
    if class_bias is None:
        return probs.argmax(axis=1)
    return (np.log(np.clip(probs, EPS, 1.0)) + np.asarray(class_bias)).argmax(axis=1)


def fit_class_bias(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Biases (class 0's fixed at 0) that maximise the balanced accuracy of
    argmax(log p + b) on these images; ties keep the smaller move."""
    log_p = np.log(np.clip(probs, EPS, 1.0))
    bias = np.zeros(probs.shape[1])
    best = _balanced_accuracy(labels, log_p.argmax(axis=1), probs.shape[1])
    for _ in range(ROUNDS):
        for c in range(1, probs.shape[1]):
            for value in sorted(GRID, key=abs):
                trial = bias.copy()
                trial[c] = value
                score = _balanced_accuracy(labels, (log_p + trial).argmax(axis=1),
                                           probs.shape[1])
                if score > best + 1e-12:
                    best, bias = score, trial
    return bias
