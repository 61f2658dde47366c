"""Stage compare: every backbone's test metrics → a leaderboard and the model to serve.

With cross-validation each backbone has one metrics file per fold; the leaderboard shows the
mean over folds and the spread (`<metric>_std`), so `dvc metrics diff` compares CV means. An
ensemble (mean of the listed backbones' probabilities, fold by fold) is scored like any
model. metrics/summary.json names the best single backbone, which predict and the web app
load by default; metrics/leaderboard.md is the same table for people.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from stages.core.cli import run_stage
from stages.core.errors import MissingInputError, PipelineError
from stages.core.files import write_json
from stages.core.metrics import classification_metrics
from stages.core.params import choice, get, stage_params
from stages.core.paths import (
    LEADERBOARD_FILE,
    SPLIT_FILE,
    SUMMARY_FILE,
    metrics_file,
    model_dir,
    predictions_file,
)

ENSEMBLE = "ensemble"
COLUMNS = ("roc_auc", "balanced_accuracy", "average_precision", "sensitivity", "specificity",
           "f1", "accuracy")


def read_fold_scores(backbone: str, folds: list) -> list[dict]:
    paths = [metrics_file(backbone, fold) for fold in folds]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise MissingInputError(f"{', '.join(missing)} missing; run `dvc repro`")
    return [json.loads(p.read_text()) for p in paths]


def ensemble_scores(members: list[str], folds: list) -> list[dict]:
    """Score the mean of the members' test probabilities, one fold at a time."""
    labels = pd.read_csv(SPLIT_FILE, dtype=str, keep_default_na=False).set_index("isic_id")
    scores = []
    for fold in folds:
        tables = [pd.read_csv(predictions_file(m, fold)).set_index("image") for m in members]
        mean = sum(t.loc[tables[0].index] for t in tables) / len(tables)
        classes = list(mean.columns)
        truth = labels.loc[mean.index, "label"].map(classes.index).to_numpy()
        scores.append(classification_metrics(truth, mean.to_numpy(), classes))
    return scores


def summarize(per_fold: list[dict]) -> dict:
    """Mean of each metric over folds, plus its standard deviation when there are several."""
    row: dict = {"folds": len(per_fold)}
    for column in COLUMNS:
        values = [s[column] for s in per_fold if s.get(column) is not None]
        row[column] = round(float(np.mean(values)), 6) if values else None
        if len(per_fold) > 1:
            row[f"{column}_std"] = round(float(np.std(values)), 6) if values else None
    return row


def leaderboard(rows: dict[str, dict], rank_by: str) -> list[tuple[str, dict]]:
    # A missing score (e.g. AUC with one class in test) ranks last rather than crashing.
    return sorted(rows.items(), key=lambda kv: -1 if kv[1][rank_by] is None else kv[1][rank_by],
                  reverse=True)


def markdown(ranked: list[tuple[str, dict]]) -> str:
    spread = any(f"{COLUMNS[0]}_std" in row for _, row in ranked)
    lines = ["| rank | model | folds | " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * (len(COLUMNS) + 3)]
    for rank, (name, row) in enumerate(ranked, 1):
        cells = []
        for c in COLUMNS:
            value, std = row[c], row.get(f"{c}_std")
            cells.append("–" if value is None else
                         f"{value:.3f} ± {std:.3f}" if spread and std is not None else
                         f"{value:.3f}")
        lines.append(f"| {rank} | {name} | {row['folds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    params = stage_params("compare")
    rank_by = choice(params, "compare.rank_by", COLUMNS)
    backbones, folds = get(params, "backbones"), get(params, "folds")
    rows = {name: summarize(read_fold_scores(name, folds)) for name in backbones}
    members = get(params, "compare.ensemble") or []
    if members:
        unknown = sorted(set(members) - set(backbones))
        if unknown or len(members) < 2:
            raise PipelineError("params.yaml: 'compare.ensemble' needs two or more names from "
                                f"`backbones`; got {members}")
        rows[ENSEMBLE] = summarize(ensemble_scores(members, folds))
    ranked = leaderboard(rows, rank_by)
    best = next(name for name, _ in ranked if name != ENSEMBLE)
    summary = {
        "best": best,
        "best_model": str(model_dir(best, folds[0]) / "model.keras"),
        "serving_fold": str(folds[0]),  # predict and the web app load this fold's models
        "rank_by": rank_by,
        "ensemble": members,
        "scores": dict(ranked),  # keyed by model, so `dvc metrics show/diff` can flatten it
    }
    write_json(SUMMARY_FILE, summary)  # export reads it: never half-written
    LEADERBOARD_FILE.write_text(markdown(ranked))
    print(markdown(ranked) + f"\nbest single backbone by {rank_by}: {best}")


if __name__ == "__main__":
    run_stage("compare", main)
