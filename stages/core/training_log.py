"""A training curve that is not a run of epochs (a logistic head's inner-CV loss along its C
grid), written where DVCLive writes an epoch run's: metrics.json and plots/metrics/*.tsv
under metrics/training/<b>/<fold>/<phase>/, which dvc.yaml declares."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from stages.core.files import atomic_path


def write_curve(log_dir: Path, curve: list[dict], summary: dict) -> None:
    """One DVCLive step per row of `curve`; `summary` over the last step's figures. Written
    aside and moved into place whole, as checkpoints.publish_dir does for epoch runs."""
    from dvclive import Live

    with tempfile.TemporaryDirectory(prefix="training-log-") as tmp:
        live_dir = Path(tmp) / "live"
        # dvcyaml=None: our dvc.yaml declares these plots; DVCLive must not rewrite it.
        with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False) as live:
            for row in curve:
                for metric, value in row.items():
                    live.log_metric(metric, value, plot=True)
                live.next_step()
            live.summary |= summary
            live.make_summary()
        (live_dir / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        log_dir.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(log_dir) as target:
            shutil.copytree(live_dir, target)
