"""A regularised linear model on frozen pooled features (the `solver: logistic` training of a
model entry): on a few hundred to a few thousand images a strong, low-variance learner.

scikit-learn's LogisticRegressionCV chooses the L2 strength by inner cross-validation on the
training features, grouped by source image (augment's copies of one image never sit on both
sides of an inner split), scored by log-loss; images that only ever train (data.extra_train)
sit in every inner fit and no inner score, so C is chosen for the data the model is scored
on. The standardisation and the fitted weights are
then folded into the classifier's own softmax layer, so the result is an ordinary Keras model:
evaluated, calibrated, served, exported and explained (Grad-CAM) like any other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import GroupKFold

from stages.core.hardware import usable_cores
from stages.core.shards import source_image
from stages.core.softmax import softmax

# Inverse L2 strengths tried. On standardised features of ~1,000-2,000 dimensions and a few
# thousand images the choice lands near 1e-3; past 1 the fit is all but unregularised and
# lbfgs slow, for nothing.
C_GRID = np.logspace(-4, 0, 9)
# lbfgs stops at this gradient tolerance: probabilities within ~0.005 of the exact optimum,
# in 16-70 % fewer iterations than scikit-learn's 1e-4 (multi-scale Lite0 features of ISIC
# 2017, C from 1e-4 to 1).
TOL = 1e-3
INNER_FOLDS = 5


def inner_splits(labels: np.ndarray, groups: np.ndarray, train_only: np.ndarray,
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit rows, score rows) of the inner CV: grouped folds of the rows not `train_only`,
    each fit joined by every `train_only` row."""
    scored, always = np.flatnonzero(~train_only), np.flatnonzero(train_only)
    folds = GroupKFold(n_splits=min(INNER_FOLDS, len(set(groups[scored]))))
    return [(np.concatenate([scored[fit], always]), scored[score])
            for fit, score in folds.split(scored, labels[scored], groups[scored])]


class LinearHead(NamedTuple):
    kernel: np.ndarray  # (d, n_classes), on the raw features
    bias: np.ndarray  # (n_classes,)
    c: float  # the chosen inverse L2 strength
    inner_log_loss: np.ndarray  # mean inner-CV log-loss for each C of C_GRID: the fit's curve


def fit_linear_head(features: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                    n_classes: int, class_weight: str | None = None,
                    train_only: np.ndarray | None = None) -> LinearHead:
    """softmax(features @ kernel + bias), fitted on standardised features and expressed on
    the raw ones, with the C chosen by inner CV and the inner log-loss of every C tried.

    class_weight "balanced" weighs each class inversely to its count, so the arg-max no
    longer favours the largest class (balanced accuracy, ISIC 2018/2019's metric); None
    fits the data's own class frequencies. `train_only` (a row mask) marks extra images that
    the inner CV fits on but never scores."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    z = (features - mean) / scale
    if train_only is None:
        train_only = np.zeros(len(labels), bool)
    splits = inner_splits(labels, source_image(ids), train_only)
    # The inner folds in parallel on every core: the same fit, 2.8x faster on 2 cores
    # (UDA-1 profile, multi-scale Lite1 features).
    model = LogisticRegressionCV(Cs=C_GRID, cv=splits, scoring="neg_log_loss", max_iter=2000,
                                 tol=TOL, n_jobs=usable_cores(),
                                 l1_ratios=(0.0,), use_legacy_attributes=False,
                                 class_weight=class_weight)
    model.fit(z, labels)
    coef, intercept = model.coef_, model.intercept_
    if n_classes == 2 and coef.shape[0] == 1:  # one logit for class 1: softmax of (0, logit)
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    kernel = (coef / scale).T
    bias = intercept - (coef / scale) @ mean
    # scores_: (inner folds, l1 ratios, Cs) of negative log-loss
    inner_log_loss = -np.asarray(model.scores_).mean(axis=0)[0]
    return LinearHead(kernel.astype(np.float32), bias.astype(np.float32), float(model.C_),
                      inner_log_loss)


def card_entry(head: LinearHead, feature_key: str) -> dict:
    """The head as the model card keeps it (key "linear_head"): with the features in the
    cache (core/feature_cache.py, under `feature_key`), the model's probabilities are
    `linear_probabilities` of them, no network needed: what evaluate computes."""
    return {"feature_key": feature_key, "kernel": head.kernel.tolist(),
            "bias": head.bias.tolist()}


def linear_probabilities(features: np.ndarray, entry: dict) -> np.ndarray:
    """softmax(features @ kernel + bias) of a card's "linear_head", as float32: the model's
    own "probs" layer (tests/test_linear_head.py checks the two agree), summed in float64
    so that another CPU's summation order moves nothing a metric shows."""
    kernel = np.asarray(entry["kernel"], np.float64)
    bias = np.asarray(entry["bias"], np.float64)
    return softmax(features.astype(np.float64) @ kernel + bias).astype(np.float32)
