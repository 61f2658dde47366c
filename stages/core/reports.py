"""Rejected-items reports: nothing is dropped without a row saying what and why."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.core.errors import PipelineError
from stages.core.files import atomic_path

COLUMNS = ["item", "reason"]


class TooManyRejectedError(PipelineError):
    """More input was unusable than params allow; the report names every item."""


def reason_kind(reason: str) -> str:
    """The reason without its per-item detail, so the summary groups like with like:
    "corrupt or truncated image: broken data stream ..." -> "corrupt or truncated image"."""
    return reason.split(":")[0].split(" (")[0].strip()


def write_report(rejected: pd.DataFrame, path: Path) -> None:
    """Write the report (always, even empty) atomically, so a killed stage never leaves half a
    report behind, and summarise it on the terminal: one line per kind, with an example."""
    rejected = rejected.reindex(columns=COLUMNS)
    with atomic_path(path) as tmp:
        rejected.to_csv(tmp, index=False)
    if len(rejected):
        print(f"{len(rejected)} items rejected, each listed with its reason in {path}:")
        kinds = rejected.assign(kind=rejected["reason"].astype(str).map(reason_kind))
        for kind, group in sorted(kinds.groupby("kind"), key=lambda kg: -len(kg[1]))[:10]:
            print(f"  {len(group):6d}  {kind}  (e.g. {group['item'].iloc[0]})")


def check_rejected(n_rejected: int, kept: int, max_fraction: float, path: Path,
                   key: str = "max_rejected_fraction") -> None:
    """Stop, with one line naming the report and the param, if too much input was unusable."""
    total = kept + n_rejected
    if kept == 0:
        raise TooManyRejectedError(
            f"no usable items left: all {total} were rejected, each listed in {path}")
    if n_rejected / total > max_fraction:
        raise TooManyRejectedError(
            f"{n_rejected} of {total} items rejected ({n_rejected / total:.1%}), more than "
            f"{key}={max_fraction}; fix the input (see {path}) or raise {key} in params.yaml")


def write_rejected(rejected: pd.DataFrame, path: Path, kept: int, max_fraction: float,
                   key: str = "max_rejected_fraction") -> None:
    """Write and summarise the report, then stop if too much was lost (see check_rejected)."""
    write_report(rejected, path)
    check_rejected(len(rejected), kept, max_fraction, path, key)
