"""The logistic head on frozen features: scikit-learn's fit, folded into a softmax layer."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from stages.core.linear_head import C_GRID, fit_linear_head, inner_splits, softmax
from stages.core.shards import source_image


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_folded_weights_answer_like_the_fitted_model(n_classes, class_weight):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(240, 12)) * rng.uniform(0.5, 20, 12) + rng.uniform(-5, 5, 12)
    labels = np.digitize(features[:, 0] + rng.normal(0, 3, 240),
                         np.quantile(features[:, 0], np.linspace(0, 1, n_classes + 1)[1:-1]))
    ids = np.array([f"ISIC_{i // 4:07d}" + (f"_aug{i % 4}" if i % 4 else "")
                    for i in range(240)])
    kernel, bias, c, inner_log_loss = fit_linear_head(features, labels, ids, n_classes,
                                                      class_weight)
    assert kernel.shape == (12, n_classes) and bias.shape == (n_classes,)
    # The same C on standardised features, refitted plainly: the same probabilities.
    z = (features - features.mean(0)) / (features.std(0) + 1e-6)
    # (fitted to lbfgs' tol 1e-3, linear_head.TOL: within ~0.005 of the exact optimum; a
    # wrongly folded mean or scale is off by far more)
    reference = LogisticRegression(C=c, max_iter=5000, tol=1e-8, class_weight=class_weight).fit(
        z, labels).predict_proba(z)
    np.testing.assert_allclose(softmax(features @ kernel + bias), reference, atol=1e-2)
    # The curve the train stage draws: inner log-loss per C tried, the chosen C the lowest.
    assert inner_log_loss.shape == C_GRID.shape
    assert C_GRID[np.argmin(inner_log_loss)] == pytest.approx(c)


def test_copies_of_one_image_count_as_one_group():
    assert list(source_image(np.array(["ISIC_1", "ISIC_1_aug7", "x_aug12"]))) == [
        "ISIC_1", "ISIC_1", "x"]


def test_balanced_class_weights_let_the_arg_max_find_a_small_class():
    rng = np.random.default_rng(1)
    labels = np.array([0] * 270 + [1] * 30)
    features = rng.normal(size=(300, 5)) + labels[:, None] * 1.2
    ids = np.array([f"ISIC_{i:07d}" for i in range(300)])
    recall = {}
    for weight in (None, "balanced"):
        kernel, bias, *_ = fit_linear_head(features, labels, ids, 2, weight)
        predicted = softmax(features @ kernel + bias).argmax(axis=1)
        recall[weight] = (predicted[labels == 1] == 1).mean()
    assert recall["balanced"] > recall[None] + 0.2


def test_train_only_rows_fit_every_inner_fold_and_score_in_none():
    labels = np.array([0, 1] * 30)
    groups = np.array([f"g{i // 2}" for i in range(60)])  # pairs: copies of one image
    train_only = np.arange(60) >= 40
    splits = inner_splits(labels, groups, train_only)
    assert len(splits) == 5
    scored = np.concatenate([score for _, score in splits])
    assert sorted(scored) == list(range(40))  # every other row scored exactly once
    for fit, score in splits:
        assert set(np.flatnonzero(train_only)) <= set(fit)
        assert not set(groups[fit]) & set(groups[score])


def test_extra_images_do_not_choose_c():
    # Extra images whose labels are noise would pull the inner CV towards strong
    # regularisation if they were scored; kept out of the scores, C is the one the data
    # alone choose.
    rng = np.random.default_rng(2)
    labels = np.array([0, 1] * 100)
    features = rng.normal(size=(200, 8)) + labels[:, None] * 1.5
    noise = rng.normal(size=(200, 8)) + rng.integers(0, 2, (200, 1)) * 1.5
    ids = np.array([f"ISIC_{i:07d}" for i in range(400)])
    x, y = np.concatenate([features, noise]), np.concatenate([labels, rng.permutation(labels)])
    alone = fit_linear_head(features, labels, ids[:200], 2)[2]
    mask = np.arange(400) >= 200
    scored_too = fit_linear_head(x, y, ids, 2)[2]
    kept_out = fit_linear_head(x, y, ids, 2, train_only=mask)[2]
    assert scored_too <= alone / 10 and kept_out == alone  # 0.03 vs 1.0 (seeded)
