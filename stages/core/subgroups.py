"""Metrics per patient subgroup (sex, age band, anatomical site), with counts and intervals:
what reviewers of dermatology models ask about first.

split copies the subgroup columns from whatever the source's metadata calls them (ISIC:
sex, age_approx, anatom_site_general; HAM10000: sex, age, localization; ISIC 2017:
age_approximate, sex) into split.csv as `sex`, `age` (banded), `site`, and the age in years
as `age_years` (an input of the models that use clinical data: core/clinical.py). A group
whose images hold fewer than MIN_PER_CLASS of some class is reported with its counts and
marked too small: its AUC would say nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stages.core.metrics import bootstrap_intervals, interval_scores

SOURCES = {"sex": ("sex",), "age": ("age_approx", "age", "age_approximate"),
           "site": ("anatom_site_general", "localization", "anatom_site_general_challenge")}
AGE_BANDS = [(0, 30, "<30"), (30, 50, "30-49"), (50, 70, "50-69"), (70, 200, "70+")]
MIN_PER_CLASS = 10
UNKNOWN = {"", "unknown", "nan", "none"}


def subgroup_columns(meta: pd.DataFrame) -> pd.DataFrame:
    """sex, age (banded), site and age_years for each metadata row ("" where the source has
    none)."""
    out = pd.DataFrame(index=meta.index)
    for name, candidates in SOURCES.items():
        found = next((c for c in candidates if c in meta), None)
        values = meta[found].astype(str).str.strip().str.lower() if found else \
            pd.Series("", index=meta.index)
        out[name] = values.where(~values.isin(UNKNOWN), "")
    out["age_years"] = pd.to_numeric(out["age"], errors="coerce").map(
        lambda age: "" if pd.isna(age) else f"{age:g}")
    out["age"] = out["age"].map(_age_band)
    return out


def _age_band(value: str) -> str:
    try:
        age = float(value)
    except ValueError:
        return ""
    return next((band for low, high, band in AGE_BANDS if low <= age < high), "")


def subgroup_metrics(groups: pd.DataFrame, labels: np.ndarray, probs: np.ndarray,
                     classes: list[str], resamples: int, seed: int,
                     predicted: np.ndarray | None = None) -> dict:
    """{column: {value: {n, per-class counts, metrics + intervals | too_small}}};
    `predicted`: each image's predicted class (None: the arg-max of `probs`)."""
    predicted = probs.argmax(axis=1) if predicted is None else predicted
    report: dict = {}
    for column in groups.columns:
        values = groups[column].to_numpy()
        for value in sorted(set(values) - {""}):
            inside = values == value
            y, p, d = labels[inside], probs[inside], predicted[inside]
            counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
            row: dict = {"n_images": int(inside.sum()), "per_class": counts}
            if min(counts.values()) < MIN_PER_CLASS:
                row["too_small"] = f"fewer than {MIN_PER_CLASS} images of some class"
            else:
                row |= {k: round(v, 6) for k, v in interval_scores(y, p, classes, d).items()}
                row |= bootstrap_intervals(y, lambda ix, y=y, p=p, d=d: interval_scores(
                    y[ix], p[ix], classes, d[ix]), resamples, seed)
            report.setdefault(column, {})[value] = row
    return report
