"""Is one run's out-of-fold score really above another's? A paired bootstrap on the same images.

    python bench/paired_gain.py RUN_A RUN_B --backbones lite0_ms_frozen lite1_ms_frozen

RUN_A and RUN_B are project folders after `dvc repro` (two clones, or copies of an
experiment's workspace) of the same data and folds, e.g. a profile without and with
data.extra_train. For each, the listed backbones' fold models' test predictions
(metrics/predictions/<b>/<fold>/test.csv) are averaged and pooled over the folds: each image
scored by the models that did not train on it. Both runs must hold the same images.
`dvc metrics diff` compares two point values whose intervals overlap; this resamples the
images once for both runs (drawn within each class, as evaluate's intervals), so what the
two share cancels, and prints B − A with its 95 % interval for ROC AUC (each class's and
their mean with several classes), balanced accuracy, sensitivity and specificity at the
arg-max.

    python bench/paired_gain.py RUN RUN --part-b test_image_only --backbones ...

`--part-b test_image_only` scores RUN_B's clinical models on the same photos without their
clinical data (evaluate writes both; core/clinical.py): with RUN_A = RUN_B, what the
clinical data add at prediction time; with RUN_A a run without clinical inputs, what a
clinical model costs or gains on photos that come with none.
"""

from __future__ import annotations

import argparse
from contextlib import chdir
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.metrics import bootstrap_intervals, interval_scores
from stages.core.paths import predictions_file
from stages.core.served import pooled_predictions
from stages.core.shards import read_split_table


def out_of_fold(run: Path, backbones: list[str], part: str = "test",
                ) -> tuple[pd.DataFrame, pd.Series]:
    """The backbones' mean test probabilities pooled over the folds (compare's own reader,
    served.pooled_predictions, run in the run's folder), and each image's label."""
    with chdir(run):
        split = read_split_table()
        folds = sorted(s.removeprefix("fold") for s in split["split"].unique()
                       if s.startswith("fold")) or ["holdout"]
        pooled = pooled_predictions(backbones, folds, part, split["label"])
        classes = list(pd.read_csv(predictions_file(backbones[0], folds[0])).columns[1:])
    probs = pd.DataFrame(pooled.probs, index=pooled.ids, columns=classes).sort_index()
    return probs, split.loc[probs.index, "label"]


def paired_gains(run_a: Path, run_b: Path, backbones: list[str], part_b: str = "test",
                 resamples: int = 2000, seed: int = 0) -> tuple[int, dict[str, dict[str, float]]]:
    """The number of images, and per metric A's and B's scores and B − A with its 95 %
    interval: {metric: {"a", "b", "gain", "low", "high"}}."""
    a, labels = out_of_fold(run_a, backbones)
    b, labels_b = out_of_fold(run_b, backbones, part_b)
    if not a.index.equals(b.index) or not labels.equals(labels_b):
        raise SystemExit(f"{run_a} and {run_b} do not hold the same images with the same labels")
    classes = list(a.columns)
    y = labels.map(classes.index).to_numpy()
    pa, pb = a.to_numpy(), b[classes].to_numpy()

    def gain(ix: np.ndarray) -> dict[str, float]:
        sa, sb = interval_scores(y[ix], pa[ix], classes), interval_scores(y[ix], pb[ix], classes)
        return {m: sb[m] - sa[m] for m in sa}

    sa, sb = interval_scores(y, pa, classes), interval_scores(y, pb, classes)
    ci = bootstrap_intervals(y, gain, resamples, seed)
    return len(y), {m: {"a": sa[m], "b": sb[m], "gain": sb[m] - sa[m],
                        "low": ci[f"{m}_ci_low"], "high": ci[f"{m}_ci_high"]} for m in sa}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--backbones", nargs="+", required=True)
    parser.add_argument("--part-b", default="test",
                        help="RUN_B's predictions: test, or test_image_only (clinical models "
                             "without the photos' clinical data)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n, gains = paired_gains(args.run_a, args.run_b, args.backbones, args.part_b,
                            args.resamples, args.seed)
    print(f"{n} images; B = {args.run_b} ({args.part_b}), A = {args.run_a}; "
          f"mean of {', '.join(args.backbones)}")
    print("| metric | A | B | B − A (95 % CI) |\n|---|---|---|---|")
    for m, g in gains.items():
        print(f"| {m} | {g['a']:.3f} | {g['b']:.3f} | {g['gain']:+.3f} "
              f"({g['low']:+.3f} to {g['high']:+.3f}) |")

if __name__ == "__main__":
    main()
