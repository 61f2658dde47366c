"""The ISIC challenge submission layout: `image` (the id, no extension) + one probability
column per class. evaluate writes it for the test split, predict --isic-csv for any photos."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.files import atomic_path


def write_submission(path: Path, ids: Sequence[str], probs: np.ndarray,
                     classes: list[str]) -> None:
    table = pd.DataFrame(np.asarray(probs), columns=classes).round(6)
    table.insert(0, "image", list(ids))
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
