"""Where a training phase's DVCLive folder ends up: its final figures (metrics.json) as
metrics/training/<b>/<phase>/<fold>.json and its curves (plots/metrics/*.tsv) under
metrics/plots/<b>/<phase>/<fold>/, which dvc.yaml declares as metrics and plots. Also a
training curve that is not a run of epochs (a logistic head's inner-CV loss along its C grid),
written the same way."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from stages.core.files import atomic_path
from stages.core.paths import plots_dir, training_summary_file


def publish_log(live_dir: Path, backbone: str, phase: str, fold: str) -> None:
    """Copy a finished DVCLive folder into place, each part replaced whole."""
    with atomic_path(training_summary_file(backbone, phase, fold), suffix=".json") as tmp:
        shutil.copyfile(live_dir / "metrics.json", tmp)
    with atomic_path(plots_dir(backbone, phase) / str(fold)) as tmp:
        source = live_dir / "plots" / "metrics"
        if source.is_dir():
            shutil.copytree(source, tmp)
        else:  # no epochs, no curve: an empty folder says so
            tmp.mkdir()


def write_curve(backbone: str, phase: str, fold: str, curve: list[dict],
                summary: dict) -> None:
    """One DVCLive step per row of `curve`; `summary` over the last step's figures."""
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
        publish_log(live_dir, backbone, phase, fold)
