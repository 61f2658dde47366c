import numpy as np
import pytest

from stages.compare import leaderboard, markdown, summarize
from stages.core.metrics import classification_metrics, curve_points

CLASSES = ["benign", "malignant"]


def test_binary_metrics_match_a_hand_computed_case():
    y = np.array([0, 0, 0, 1, 1])
    p_malignant = np.array([0.1, 0.6, 0.2, 0.8, 0.4])
    probs = np.stack([1 - p_malignant, p_malignant], axis=1)
    m = classification_metrics(y, probs, CLASSES)
    # arg-max predictions: 0 1 0 1 0 → TP=1 FN=1 TN=2 FP=1
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["precision"] == pytest.approx(0.5) and m["accuracy"] == pytest.approx(0.6)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of 6 (malignant, benign) pairs ordered
    assert m["confusion_matrix"]["rows_true_cols_pred"] == [[2, 1], [1, 1]]
    assert m["n_images"] == 5


def test_multiclass_metrics_are_macro_averages():
    y = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 2, 1]] * 0.8 + 0.2 / 3
    m = classification_metrics(y, probs, ["bcc", "melanoma", "nevus"])
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    # one-vs-rest AUCs by hand: bcc 1 (its one image scores highest), melanoma 2.5/3 (one
    # nevus ties with it), nevus 3/4 (one nevus ties with both others)
    assert m["roc_auc"] == pytest.approx((1 + 2.5 / 3 + 0.75) / 3)


def test_curves_run_from_corner_to_corner():
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    roc = curve_points(y, probs, CLASSES)["roc"]
    assert (roc[0]["fpr"], roc[0]["tpr"]) == (0.0, 0.0)
    assert (roc[-1]["fpr"], roc[-1]["tpr"]) == (1.0, 1.0)


def test_leaderboard_ranks_by_the_chosen_metric_and_missing_scores_last():
    rows = {name: summarize([{"roc_auc": auc}]) for name, auc in
            (("a", 0.7), ("b", 0.9), ("c", None))}
    ranked = leaderboard(rows, "roc_auc")
    assert [name for name, _ in ranked] == ["b", "a", "c"]
    table = markdown(ranked)
    assert "| 1 | b | 1 | 0.900 |" in table and "| 3 | c | 1 | – |" in table


def test_cross_validation_summary_is_mean_and_spread_over_folds():
    row = summarize([{"roc_auc": 0.8, "f1": 0.5}, {"roc_auc": 0.6, "f1": 0.7}])
    assert row["folds"] == 2
    assert row["roc_auc"] == pytest.approx(0.7) and row["roc_auc_std"] == pytest.approx(0.1)
    assert "± 0.100" in markdown([("m", row)])


def test_partial_auc_above_80_percent_sensitivity():
    from stages.core.metrics import pauc_above_tpr

    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    perfect = truth * 0.9 + 0.05
    assert pauc_above_tpr(truth, perfect) == pytest.approx(0.2)  # the whole band
    assert pauc_above_tpr(truth, 1 - perfect) == pytest.approx(0.0)
    # One malignant ranked in the middle of the benign ones: TPR is 0.8 up to FPR 0.5, then
    # 1.0; the band above 0.8 holds the rectangle 0.5 x 0.2.
    score = np.array([0.5, 0.6, 0.7, 0.8, 0.65, 0.9, 0.91, 0.92, 0.93])
    assert pauc_above_tpr(truth, score) == pytest.approx(0.1)
    # The ISIC 2024 scorer's form (labels and scores flipped, scikit-learn's standardised
    # pAUC rescaled) gives the same number on random data.
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 300), rng.uniform(size=300)
    s = s + 0.3 * y
    from sklearn.metrics import roc_auc_score

    scaled = roc_auc_score(1 - y, 1 - s, max_fpr=0.2)
    isic = 0.5 * 0.2 ** 2 + (0.2 - 0.5 * 0.2 ** 2) / 0.5 * (scaled - 0.5)
    assert pauc_above_tpr(y, s) == pytest.approx(isic, abs=1e-9)
