"""Stage evaluate@<backbone>: each fold's fine-tuned model on its fold's test images.

Writes metrics/backbones/<backbone>/<fold>.json (git-tracked, for `dvc metrics diff`) with 95 %
bootstrap intervals (`evaluate.bootstrap` resamples, stratified by class, seeded), the ROC,
precision-recall and confusion-matrix data as metrics/plots/<backbone>/<kind>/<fold>.* (drawn
by `dvc plots show`), and the test AND validation predictions in the ISIC submission layout:
compare fits calibration and the decision threshold on validation (or out-of-fold)
predictions only; a model with clinical inputs is given each image's clinical data from
split.csv (and its answers without them go to <part>_image_only.csv); metrics per
subgroup (sex, age band, site: core/subgroups.py) go to metrics/subgroups/<b>/<fold>.json.
With `evaluate.tta: true` the probabilities are averaged over the eight flips/rotations of
each image (core/tta.py), as predict --tta and the web app do.

A model that is a logistic head on frozen features (its card's "linear_head") is computed
from the features stage's arrays without starting TensorFlow, which would cost more than
the rest of the stage; with TTA, or for any other model, the Keras model runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.cli import parse_target, run_stage
from stages.core.clinical import with_clinical
from stages.core.errors import PipelineError
from stages.core.feature_cache import cached_features
from stages.core.files import write_json
from stages.core.frozen_features import PREPARED, read_info, read_part
from stages.core.linear_head import linear_probabilities
from stages.core.metrics import curve_points, with_intervals
from stages.core.model_io import load_model, read_card
from stages.core.params import flag, fold_names, get, number, stage_params
from stages.core.paths import (
    LOCKBOX,
    PREPARED_DIR,
    metrics_file,
    model_dir,
    plots_dir,
    predictions_file,
    subgroups_file,
)
from stages.core.shards import (
    Split,
    clinical_table,
    fold_parts,
    read_meta,
    read_split,
    read_split_table,
)
from stages.core.subgroups import subgroup_metrics
from stages.core.submission import write_submission
from stages.core.worklog import work

Predict = Callable[[np.ndarray], np.ndarray]


def write_plots(backbone: str, fold: str, labels, probs, classes: list[str]) -> None:
    for name, points in curve_points(labels, probs, classes).items():
        write_json(plots_dir(backbone, name) / f"{fold}.json", {name: points})
    confusion = plots_dir(backbone, "confusion") / f"{fold}.csv"
    confusion.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"actual": [classes[i] for i in labels],
                  "predicted": [classes[i] for i in probs.argmax(axis=1)]}).to_csv(
        confusion, index=False)


def main(backbone: str, fold: str | None = None) -> None:
    """Every fold of `backbone` (or just `fold`)."""
    params = stage_params("evaluate", {"backbone": backbone})
    for name in fold_names(params, fold):
        evaluate_fold(backbone, name, params)


def evaluate_fold(backbone: str, fold: str, params: dict) -> None:
    tta = flag(params, "evaluate.tta")
    resamples = number(params, "evaluate.bootstrap", 0, 100_000, integer=True)
    model_path = model_dir(backbone, fold) / "model.keras"
    card = read_card(model_path)
    classes = card["classes"]
    prepared = list(read_meta(PREPARED_DIR)["counts"])
    parts = fold_parts(fold, prepared)
    predict_part = scored_parts(backbone, model_path, card, tta)

    scored = {"test": parts.test, "val": parts.val}
    if LOCKBOX in prepared:  # predicted for compare's one look at the served model
        scored[LOCKBOX] = LOCKBOX
    for part, name in scored.items():
        split, probs = predict_part(name)
        if card.get("clinical"):
            # The same model on the same photos without their clinical data: what it
            # scores where none come with the photo (bench/paired_gain.py compares).
            write_submission(predictions_file(backbone, fold, f"{part}_image_only"),
                             split.ids, probs, classes)
            probs = with_clinical(probs, card["clinical"], clinical_table(split.ids))
        write_submission(predictions_file(backbone, fold, part), split.ids, probs, classes)
        if part == "test":
            scores = score_test(backbone, fold, split, probs, classes, resamples,
                                get(params, "seed"))
            scores["fitted_on_validation"] = bool(card.get("fitted_on_validation", False))
            write_json(metrics_file(backbone, fold), scores)
    summary = {k: v for k, v in scores.items() if k not in ("confusion_matrix",
                                                            "fitted_on_validation")}
    print(f"evaluate@{backbone} fold {fold}: {json.dumps(summary)}")


def scored_parts(backbone: str, model_path: Path, card: dict, tta: bool,
                 ) -> Callable[[str], tuple[Split, np.ndarray]]:
    """A prepared part's name → (its ids and labels, the model's probabilities): a logistic
    head's from the features stage's arrays, any other model's (or with TTA) from the
    images by the Keras model, loaded once at the first need."""
    linear = None if tta else card.get("linear_head")
    if linear and read_info(backbone)["feature_key"] != linear["feature_key"]:
        raise PipelineError(f"{model_path}: its head was fitted on other features than "
                            f"data/processed/features/{backbone} holds: run `dvc repro`")
    keras_predict: list[Predict] = []

    def scored(part: str) -> tuple[Split, np.ndarray]:
        if linear:
            features = read_part(backbone, PREPARED, part)
            return features, linear_probabilities(features.images, linear)
        if not keras_predict:
            keras_predict.append(keras_probabilities(model_path, tta))
        split = read_split(PREPARED_DIR, part)
        return split, keras_predict[0](split.images)

    return scored


def keras_probabilities(model_path: Path, tta: bool) -> Predict:
    from stages.core.inference import as_predict, split_at_pool
    from stages.core.tta import tta_predict

    model, _ = load_model(model_path)
    if tta:
        return lambda images: tta_predict(model, images)
    # The model in two halves (backbone → pooled features, features → probabilities): the
    # same numbers, with the features of a frozen backbone computed once for all folds.
    extractor, head = split_at_pool(model)
    head_predict = as_predict(head)
    return lambda images: head_predict(cached_features(extractor, images))


def score_test(backbone: str, fold: str, split: Split, probs: np.ndarray, classes: list[str],
               resamples: int, seed: int) -> dict:
    """Test metrics with intervals, per subgroup, and the plots' data: the stage's maths."""
    with work("evaluation maths"):
        scores = with_intervals(split.labels, probs, classes, resamples, seed)
        groups = read_split_table().loc[split.ids, ["sex", "age", "site"]]
        write_json(subgroups_file(backbone, fold), subgroup_metrics(
            groups, split.labels, probs, classes, resamples, seed))
        write_plots(backbone, fold, split.labels, probs, classes)
    return scores


if __name__ == "__main__":
    run_stage("evaluate", main, *parse_target(__doc__.splitlines()[0]))
