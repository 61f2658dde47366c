"""Stage evaluate@<backbone>-<fold>: the fine-tuned model on its fold's test images.

Writes metrics/backbones/<backbone>/<fold>.json (git-tracked, for `dvc metrics diff`), the
ROC, precision-recall and confusion-matrix data under metrics/plots/<backbone>/<fold>/ (drawn
by `dvc plots show`), and the test predictions in the ISIC challenge submission layout.
With `evaluate.tta: true` the probabilities are averaged over the eight flips/rotations of
each image (core/tta.py), as predict --tta and the web app do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stages.core.cli import parse_target, run_stage
from stages.core.files import write_json
from stages.core.inference import as_predict
from stages.core.metrics import classification_metrics, curve_points
from stages.core.model_io import load_model
from stages.core.params import flag, stage_params
from stages.core.paths import (
    PREPARED_DIR,
    metrics_file,
    model_dir,
    plots_dir,
    predictions_file,
)
from stages.core.shards import fold_parts, read_meta, read_split
from stages.core.submission import write_submission
from stages.core.tta import tta_predict


def write_plots(out_dir: Path, labels, probs, classes: list[str]) -> None:
    for name, points in curve_points(labels, probs, classes).items():
        write_json(out_dir / f"{name}.json", {name: points})
    pd.DataFrame({"actual": [classes[i] for i in labels],
                  "predicted": [classes[i] for i in probs.argmax(axis=1)]}).to_csv(
        out_dir / "confusion.csv", index=False)


def main(backbone: str, fold: str) -> None:
    model, card = load_model(model_dir(backbone, fold) / "model.keras")
    classes = card["classes"]
    test = read_split(PREPARED_DIR, fold_parts(fold, list(read_meta(PREPARED_DIR)["counts"])).test)
    if flag(stage_params("evaluate", {"backbone": backbone, "fold": fold}), "evaluate.tta"):
        probs = tta_predict(model, test.images)
    else:
        probs = as_predict(model)(test.images.astype("float32"))

    scores = classification_metrics(test.labels, probs, classes)
    write_json(metrics_file(backbone, fold), scores)
    write_plots(plots_dir(backbone, fold), test.labels, probs, classes)
    write_submission(predictions_file(backbone, fold), test.ids, probs, classes)
    summary = {k: v for k, v in scores.items() if k != "confusion_matrix"}
    print(f"evaluate@{backbone}-{fold}: {json.dumps(summary)}")


if __name__ == "__main__":
    run_stage("evaluate", main, *parse_target(__doc__.splitlines()[0]))
