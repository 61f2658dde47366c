"""Which members the served model gets, chosen without fooling ourselves: on the other folds'
images for the estimate (nested), on validation predictions for one model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.compare import candidate_sets
from stages.core.errors import PipelineError
from stages.core.files import write_json
from stages.core.metrics import classification_metrics
from stages.core.paths import metrics_file, predictions_file
from stages.core.served import Rule, build_served, pooled_predictions
from stages.core.submission import write_submission

CLASSES = ["benign", "malignant"]
FOLDS = ["0", "1", "2"]


def _write(root_truth: pd.Series, backbone: str, fold: str, part: str, ids, signal: float,
           rng) -> None:
    labels = root_truth.loc[ids].map(CLASSES.index).to_numpy()
    score = 1 / (1 + np.exp(-(signal * (2 * labels - 1) + rng.normal(0, 1, len(ids)))))
    write_submission(predictions_file(backbone, fold, part), ids,
                     np.column_stack([1 - score, score]), CLASSES)


def _folds(n: int = 600, seed: int = 0) -> tuple[pd.Series, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"ISIC_{i:07d}" for i in range(n)])
    truth = pd.Series(np.where(rng.random(n) < 0.3, "malignant", "benign"), index=ids)
    return truth, np.array_split(ids, len(FOLDS))


def _auc(p) -> float:
    return classification_metrics(p.labels, p.probs, CLASSES)["roc_auc"]


def test_choosing_among_noise_on_the_same_folds_flatters_and_the_nested_estimate_does_not(
        in_tmp_repo):
    truth, parts = _folds()
    rng = np.random.default_rng(1)
    names = [f"noise{i}" for i in range(20)]
    for name in names:
        for k, fold in enumerate(FOLDS):
            _write(truth, name, fold, "test", parts[k], 0.0, rng)
            _write(truth, name, fold, "val", parts[(k + 1) % 3], 0.0, rng)
    flattering = max(_auc(pooled_predictions([n], FOLDS, "test", truth)) for n in names)
    card, _ = build_served(candidate_sets([], names), FOLDS, "ensemble", truth, Rule(0.85), 0, 0)
    chosen = card["members"][0]["backbone"]
    assert _auc(pooled_predictions([chosen], FOLDS, "test", truth)) == pytest.approx(flattering)
    assert flattering > 0.53  # the best of 20 coins looks like a model...
    assert abs(card["estimate"]["roc_auc"] - 0.5) < 0.04  # ...the nested estimate does not
    assert len(card["estimate"]["chosen_per_fold"]) == 3


def test_auto_serves_the_set_the_folds_agree_on(in_tmp_repo):
    truth, parts = _folds()
    rng = np.random.default_rng(2)
    signals = {"good": 1.5, "also_good": 1.5, "noise": 0.0}
    for name, signal in signals.items():
        for k, fold in enumerate(FOLDS):
            _write(truth, name, fold, "test", parts[k], signal, rng)
            _write(truth, name, fold, "val", parts[(k + 1) % 3], signal, rng)
    candidates = candidate_sets("auto", list(signals))
    assert len(candidates) == 7 and candidates[0] == ["good"]
    card, _ = build_served(candidates, FOLDS, "ensemble", truth, Rule(0.85), 0, 0)
    # Two independent good models average to a better one; the noise model earns no place.
    assert sorted({m["backbone"] for m in card["members"]}) == ["also_good", "good"]
    assert card["estimate"]["chosen_per_fold"] == ["good+also_good"] * 3
    # One fold served: chosen on its validation predictions.
    for name in signals:
        write_json(metrics_file(name, "1"), {"fitted_on_validation": False})
    card, _ = build_served(candidates, FOLDS, "1", truth, Rule(0.85), 0, 0)
    assert {m["backbone"] for m in card["members"]} == {"good", "also_good"}
    # ...which a model fitted on them cannot have.
    write_json(metrics_file("noise", "1"), {"fitted_on_validation": True})
    with pytest.raises(PipelineError, match="fold 1's noise model was fitted on its validation"):
        build_served(candidates, FOLDS, "1", truth, Rule(0.85), 0, 0)


def test_a_listed_ensemble_needs_two_known_names():
    assert candidate_sets(["a", "b"], ["a", "b", "c"]) == [["a", "b"]]
    for bad in (["a"], ["a", "z"], "some"):
        with pytest.raises(PipelineError, match="'compare.ensemble' is auto"):
            candidate_sets(bad, ["a", "b", "c"])
