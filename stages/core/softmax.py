"""softmax over the last axis: the one the logistic head, calibration and the clinical inputs
apply to their logits."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Rows of `logits` to probabilities; the row maximum is taken off first, so large logits
    do not overflow (the result is the same)."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
