"""Test-set metrics and the plot data DVC draws, from true labels and class probabilities.

The predicted class is the arg-max of the probabilities unless given (`y_pred`: a served
model's decision rule, core/class_decision.py), and balanced accuracy is the mean per-class
recall of it, as the ISIC challenge scorer defines it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm


def positive_class(classes: list[str]) -> int:
    """The class whose probability is the curves' score: malignant, else melanoma, else last."""
    for name in ("malignant", "melanoma"):
        if name in classes:
            return classes.index(name)
    return len(classes) - 1


def pauc_above_tpr(truth: np.ndarray, score: np.ndarray, min_tpr: float = 0.8) -> float:
    """The area under the ROC curve and above TPR = min_tpr (0 to 1 - min_tpr): how well the
    model ranks where its sensitivity is clinically acceptable, the ISIC 2024 metric."""
    fpr, tpr, _ = skm.roc_curve(truth, score)
    xs, ys = [fpr[0]], [tpr[0]]
    for i in range(1, len(fpr)):
        (x0, y0), (x1, y1) = (fpr[i - 1], tpr[i - 1]), (fpr[i], tpr[i])
        if (y0 - min_tpr) * (y1 - min_tpr) < 0:  # the segment crosses the line: add the point
            xs.append(x0 + (x1 - x0) * (min_tpr - y0) / (y1 - y0))
            ys.append(min_tpr)
        xs.append(x1)
        ys.append(y1)
    return float(np.trapezoid(np.maximum(np.array(ys) - min_tpr, 0.0), xs))


def slug(name: str) -> str:
    """A class name as part of a metric key: 'benign keratosis' → 'benign_keratosis'."""
    return name.replace(" ", "_")


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
                           y_pred: np.ndarray | None = None) -> dict:
    y_pred = probs.argmax(axis=1) if y_pred is None else y_pred
    labels = list(range(len(classes)))
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    result = {
        "n_images": int(len(y_true)),
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
    }
    present = np.unique(y_true)
    if len(classes) == 2:
        pos = positive_class(classes)
        truth, score = (y_true == pos).astype(int), probs[:, pos]
        pred = (y_pred == pos).astype(int)
        result |= {
            "precision": skm.precision_score(truth, pred, zero_division=0),
            "recall": skm.recall_score(truth, pred, zero_division=0),
            "f1": skm.f1_score(truth, pred, zero_division=0),
            "roc_auc": skm.roc_auc_score(truth, score) if len(present) == 2 else None,
            "pauc_above_80_tpr": pauc_above_tpr(truth, score) if len(present) == 2 else None,
            "average_precision": skm.average_precision_score(truth, score),
            "sensitivity": skm.recall_score(truth, pred, zero_division=0),
            "specificity": skm.recall_score(1 - truth, 1 - pred, zero_division=0),
        }
    else:
        onehot = np.eye(len(classes))[y_true]
        scored = [c for c in labels if c in present]  # AUC is undefined for absent classes
        result |= {
            "precision": skm.precision_score(y_true, y_pred, average="macro", zero_division=0),
            "recall": skm.recall_score(y_true, y_pred, average="macro", zero_division=0),
            "f1": skm.f1_score(y_true, y_pred, average="macro", zero_division=0),
            "roc_auc": float(np.mean([skm.roc_auc_score(onehot[:, c], probs[:, c])
                                      for c in scored])) if len(scored) > 1 else None,
            "average_precision": float(np.mean([
                skm.average_precision_score(onehot[:, c], probs[:, c]) for c in scored])),
            "sensitivity": skm.recall_score(y_true, y_pred, average="macro", zero_division=0),
            "specificity": float(np.mean([
                (confusion.sum() - confusion[c].sum() - confusion[:, c].sum() + confusion[c, c])
                / max(1, confusion.sum() - confusion[c].sum()) for c in labels])),
        }
        # Each class against the rest, as the ISIC 2017 ranking scored melanoma and
        # seborrheic keratosis.
        for c in scored:
            result[f"roc_auc_{slug(classes[c])}"] = skm.roc_auc_score(onehot[:, c], probs[:, c])
            result[f"average_precision_{slug(classes[c])}"] = skm.average_precision_score(
                onehot[:, c], probs[:, c])
    result = {k: v if v is None or isinstance(v, int) else round(float(v), 6)
              for k, v in result.items()}
    result["confusion_matrix"] = {"labels": classes, "rows_true_cols_pred": confusion.tolist()}
    return result


def curve_points(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """ROC and precision-recall points of the binary score (malignant vs the rest)."""
    pos = positive_class(classes)
    truth, score = (y_true == pos).astype(int), probs[:, pos]
    fpr, tpr, roc_thr = skm.roc_curve(truth, score)
    precision, recall, pr_thr = skm.precision_recall_curve(truth, score)
    return {
        "roc": [{"fpr": float(f), "tpr": float(t), "threshold": float(min(h, 1.0))}
                for f, t, h in zip(fpr, tpr, roc_thr, strict=False)],
        "precision_recall": [{"recall": float(r), "precision": float(p)}
                             for r, p in zip(recall, precision, strict=False)],
    }


def bootstrap_intervals(y_true: np.ndarray, score: Callable[[np.ndarray], dict],
                        resamples: int, seed: int) -> dict[str, float]:
    """95 % percentile intervals of the metrics `score(indices)` returns, over `resamples`
    bootstrap resamples drawn within each class (stratified: every resample keeps the class
    counts, so AUC is always defined), seeded. Keys: <metric>_ci_low/_ci_high."""
    if resamples == 0:
        return {}
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y_true == c) for c in np.unique(y_true)]
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        sample = score(np.concatenate([rng.choice(ix, len(ix)) for ix in by_class]))
        for m, value in sample.items():
            if value is not None:
                draws.setdefault(m, []).append(value)
    out = {}
    for m, values in draws.items():
        if values:
            low, high = np.percentile(values, [2.5, 97.5])
            out |= {f"{m}_ci_low": round(float(low), 6), f"{m}_ci_high": round(float(high), 6)}
    return out


def _auc(truth: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half), as scikit-learn's."""
    ranks = rankdata(score)
    n_pos = int(truth.sum())
    n_neg = len(truth) - n_pos
    return float((ranks[truth == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def interval_scores(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
                    y_pred: np.ndarray | None = None) -> dict:
    """ROC AUC (and per class with several), balanced accuracy, sensitivity and specificity
    exactly as classification_metrics defines them, fast enough to run a thousand times (it
    needs every class present, which a stratified resample keeps)."""
    y_pred = probs.argmax(axis=1) if y_pred is None else y_pred
    n = len(classes)
    recall = np.array([np.mean(y_pred[y_true == c] == c) for c in range(n)
                       if (y_true == c).any()])
    if n == 2:
        pos = positive_class(classes)
        truth = (y_true == pos).astype(int)
        sens = float(np.mean(y_pred[truth == 1] == pos))
        spec = float(np.mean(y_pred[truth == 0] != pos))
        auc = _auc(truth, probs[:, pos])
    else:
        present = [c for c in range(n) if (y_true == c).any()]
        sens = float(recall.mean())
        spec = float(np.mean([np.mean(y_pred[y_true != c] != c) for c in range(n)]))
        per_class = {f"roc_auc_{slug(classes[c])}": _auc((y_true == c).astype(int), probs[:, c])
                     for c in present}
        auc = float(np.mean(list(per_class.values())))
        return {"roc_auc": auc, "balanced_accuracy": float(recall.mean()), "sensitivity": sens,
                "specificity": spec, **per_class}
    return {"roc_auc": auc, "balanced_accuracy": float(recall.mean()), "sensitivity": sens,
            "specificity": spec}


def with_intervals(y_true: np.ndarray, probs: np.ndarray, classes: list[str], resamples: int,
                   seed: int, y_pred: np.ndarray | None = None) -> dict:
    """classification_metrics plus their bootstrap intervals."""
    y_pred = probs.argmax(axis=1) if y_pred is None else y_pred
    scores = classification_metrics(y_true, probs, classes, y_pred)
    return scores | bootstrap_intervals(
        y_true, lambda ix: interval_scores(y_true[ix], probs[ix], classes, y_pred[ix]),
        resamples, seed)
