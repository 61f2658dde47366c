"""A tiny learnable problem for the training-loop tests (resume, distribution)."""

from __future__ import annotations

import numpy as np

from stages.core.shards import Split


def tiny_data(n: int = 48) -> tuple[Split, Split]:
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 2).astype(np.int32)
    images = rng.integers(0, 120, (n, 8, 8, 3), dtype=np.uint8)
    images[labels == 1, 2:6, 2:6] += 100  # learnable, not trivially
    split = Split(images, labels, np.array([f"i{i}" for i in range(n)]))
    return split, split
