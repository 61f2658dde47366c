"""Rejected-items reports: nothing is dropped without a row saying what and why."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.core.errors import PipelineError


class TooManyRejectedError(PipelineError):
    """More input was unusable than params allow; the report names every item."""


def write_rejected(rejected: pd.DataFrame, path: Path, kept: int, max_fraction: float) -> None:
    """Write the report (always, even empty), summarise it, and stop if too much was lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rejected = rejected.reindex(columns=["item", "reason"])
    rejected.to_csv(path, index=False)
    total = kept + len(rejected)
    if len(rejected):
        print(f"{len(rejected)} of {total} items rejected (see {path}):")
        for reason, count in rejected["reason"].value_counts().head(10).items():
            print(f"  {count:6d}  {reason}")
    if kept == 0:
        raise TooManyRejectedError(f"no usable items left; every one is listed in {path}")
    if len(rejected) / total > max_fraction:
        raise TooManyRejectedError(
            f"{len(rejected)} of {total} items rejected ({len(rejected) / total:.1%}), more "
            f"than max_rejected_fraction={max_fraction}; fix the input (see {path}) or raise "
            "the threshold in params.yaml"
        )
