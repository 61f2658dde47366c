"""The served model: which fold models it averages, how its probabilities are calibrated,
where it refers, and what its estimate is. compare builds it (`build_served`) from the fold
models' validation and test predictions only; models/served.json is the contract that
predict, the web app, export and the latency bench load (core/predictor.py).

Estimates and fitting never share images:
- cross-validation, serving the fold ensemble: every image has one out-of-fold prediction
  (from the fold model that did not train on it). Calibration and the threshold are
  cross-fitted for the estimate (fitted on the other folds' images, applied to this fold's),
  and fitted on all out-of-fold predictions for serving;
- one model (holdout, or one fold): fitted on its validation images, scored on its test ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from stages.core.calibration import (
    apply_temperature,
    brier,
    expected_calibration_error,
    fit_temperature,
    guaranteed_threshold,
    malignant_classes,
    refer_score,
    reliability,
    threshold_for_sensitivity,
)
from stages.core.class_decision import decide, fit_class_bias
from stages.core.errors import MissingInputError
from stages.core.metrics import (
    bootstrap_intervals,
    classification_metrics,
    pauc_above_tpr,
    with_intervals,
)
from stages.core.params import ParamsError
from stages.core.paths import (
    HOLDOUT,
    LOCKBOX,
    metrics_file,
    model_dir,
    predictions_file,
)


@dataclass
class Predictions:
    ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    groups: np.ndarray  # the fold each image was tested in (cross-fitting), else all 0


def member_mean(backbones: list[str], fold: str, part: str, truth: pd.Series,
                classes: list[str] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Mean probabilities of these backbones' `fold` models on `part`, and the true labels."""
    paths = [predictions_file(b, fold, part) for b in backbones]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise MissingInputError(f"{', '.join(missing)} missing; run `dvc repro`")
    tables = [pd.read_csv(p).set_index("image") for p in paths]
    mean = sum(t.loc[tables[0].index] for t in tables) / len(tables)
    classes = classes or list(mean.columns)
    return mean[classes], truth.loc[mean.index].map(classes.index).to_numpy()


def pooled_predictions(backbones: list[str], folds: list[str], part: str,
                       truth: pd.Series) -> Predictions:
    """The backbones' mean predictions on `part` of each fold, concatenated over folds."""
    ids, labels, probs, groups = [], [], [], []
    for k, fold in enumerate(folds):
        mean, y = member_mean(backbones, fold, part, truth)
        ids.append(mean.index.to_numpy())
        labels.append(y)
        probs.append(mean.to_numpy())
        groups.append(np.full(len(y), k))
    return Predictions(*(np.concatenate(x) for x in (ids, labels, probs, groups)))


def _subset_score(p: Predictions, rank_by: str, classes: list[str]) -> float:
    score = classification_metrics(p.labels, p.probs, classes).get(rank_by)
    return -1.0 if score is None else float(score)


def restrict(p: Predictions, keep: np.ndarray) -> Predictions:
    return Predictions(p.ids[keep], p.labels[keep], p.probs[keep], p.groups[keep])


def choose_members(candidates: list[list[str]], pooled: dict[tuple[str, ...], Predictions],
                   rank_by: str, classes: list[str], exclude: int | None = None) -> list[str]:
    """The candidate member set whose pooled out-of-fold predictions score best by
    `rank_by`, judged without the images of fold `exclude` (cross-fitting: the estimate for
    a fold never uses that fold's labels to pick what scores it). Ties: the earlier one."""
    best, best_score = candidates[0], -np.inf
    for members in candidates:
        p = pooled[tuple(members)]
        if exclude is not None:
            p = restrict(p, p.groups != exclude)
        score = _subset_score(p, rank_by, classes)
        if score > best_score:
            best, best_score = members, score
    return best


def nested_out_of_fold(candidates: list[list[str]], folds: list[str], truth: pd.Series,
                       rank_by: str) -> tuple[Predictions, list[str], list[list[str]], Predictions]:
    """With several candidate member sets: each fold's out-of-fold predictions come from the
    set chosen on the other folds (so the estimate includes the choice), and the set chosen
    on all folds is what is served. Returns (nested predictions, served set, each fold's
    set, the served set's own out-of-fold predictions: what its calibration is fitted on)."""
    pooled = {tuple(m): pooled_predictions(m, folds, "test", truth) for m in candidates}
    first = pooled[tuple(candidates[0])]
    classes = list(pd.read_csv(predictions_file(candidates[0][0], folds[0])).columns[1:])
    served = choose_members(candidates, pooled, rank_by, classes)
    if len(candidates) == 1:
        return first, served, [served] * len(folds), first
    per_fold = [choose_members(candidates, pooled, rank_by, classes, exclude=k)
                for k in range(len(folds))]
    probs = np.empty_like(first.probs)
    for k, members in enumerate(per_fold):
        here = first.groups == k
        chosen = pooled[tuple(members)]
        assert (chosen.ids[here] == first.ids[here]).all()  # one pooling order for all sets
        probs[here] = chosen.probs[here]
    nested = Predictions(first.ids, first.labels, probs, first.groups)
    return nested, served, per_fold, pooled[tuple(served)]


@dataclass(frozen=True)
class Rule:
    """How the referral threshold is chosen: flag `target` of the malignant validation
    images (confidence None), or guarantee sensitivity >= `target` on new images from the
    same source with that confidence (calibration.guaranteed_threshold)."""
    target: float
    confidence: float | None = None
    balance_classes: bool = False  # per-class biases for balanced accuracy (class_decision)


@dataclass(frozen=True)
class Decision:
    temperature: float
    threshold: float
    malignant: int  # malignant images the threshold was chosen on
    class_bias: tuple[float, ...] | None = None  # decides the class, not the probabilities

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        return apply_temperature(probs, self.temperature)

    def predicted(self, calibrated: np.ndarray) -> np.ndarray:
        return decide(calibrated, self.class_bias)


# The decision's numbers are kept to 4 decimals, and these rounded values are the ones
# applied everywhere (estimate, card, predict): another CPU type computes the probabilities
# ~1e-8 apart, which must not change the card or the figures `dvc metrics diff` compares.
DECIMALS = 4


def fit_decision(p: Predictions, classes: list[str], rule: Rule) -> Decision:
    temperature = round(fit_temperature(p.labels, p.probs), DECIMALS)
    calibrated = apply_temperature(p.probs, temperature)
    # Python floats: the card's text shows them as they are (numpy's repr adds np.float64(...))
    bias = (tuple(float(b) for b in fit_class_bias(p.labels, calibrated))
            if rule.balance_classes else None)
    malignant = np.isin(p.labels, malignant_classes(classes))
    score = refer_score(calibrated, classes)
    threshold = (threshold_for_sensitivity(malignant, score, rule.target)
                 if rule.confidence is None else
                 guaranteed_threshold(malignant, score, rule.target, rule.confidence).threshold)
    # rounded down: a lower threshold flags every image the exact one flags (and so keeps
    # the guarantee)
    return Decision(temperature, float(np.floor(threshold * 10**DECIMALS) / 10**DECIMALS),
                    int(malignant.sum()), bias)


def _decision_scores(malignant: np.ndarray, refer: np.ndarray) -> dict:
    return {"sensitivity": float(np.mean(refer[malignant])),
            "specificity": float(np.mean(~refer[~malignant])),
            "referred": float(np.mean(refer))}


def decision_with_intervals(malignant: np.ndarray, refer: np.ndarray, resamples: int,
                             seed: int) -> dict:
    """Sensitivity, specificity and the share referred, with 95 % bootstrap intervals."""
    return {**_decision_scores(malignant, refer), **bootstrap_intervals(
        malignant.astype(int), lambda ix: _decision_scores(malignant[ix], refer[ix]),
        resamples, seed)}


def balanced_accuracy_gain(labels: np.ndarray, with_bias: np.ndarray, without: np.ndarray,
                           resamples: int, seed: int) -> dict:
    """Balanced accuracy of the classes predicted with and without the class biases on the
    same images, and the paired gain with its 95 % bootstrap interval."""
    def scores(ix: np.ndarray) -> dict:
        biased = skm.balanced_accuracy_score(labels[ix], with_bias[ix])
        plain = skm.balanced_accuracy_score(labels[ix], without[ix])
        return {"with_bias": biased, "without_bias": plain, "gain": biased - plain}
    everything = np.arange(len(labels))
    return {k: round(float(v), 6) for k, v in
            {**scores(everything), **bootstrap_intervals(labels, scores, resamples, seed)}
            .items()}


@dataclass
class Estimate:
    scores: dict  # metrics with intervals, referral, calibration
    reliability: list[dict]  # rows of the reliability diagram, before and after calibration
    scored: Predictions  # the images scored, with their calibrated probabilities
    predicted: np.ndarray  # and the class the served model predicts for each


def estimate(fit_on: Predictions, test: Predictions, classes: list[str], rule: Rule,
             cross_fit: bool, resamples: int, seed: int) -> Estimate:
    """The served model's scores on `test` with intervals, calibration before and after, and
    sensitivity/specificity at the referral threshold (and, with a guarantee, what the
    plain rule without it would have given: the guarantee's cost)."""
    calibrated = np.empty_like(test.probs)
    predicted = np.empty(len(test.labels), int)
    rules = {"rule": rule}
    if rule.confidence:  # the plain threshold beside the guaranteed one: what it costs
        rules["point"] = Rule(rule.target, balance_classes=rule.balance_classes)
    refer = {name: np.zeros(len(test.labels), bool) for name in rules}
    for g in np.unique(test.groups):
        here = test.groups == g
        fit_part = restrict(fit_on, fit_on.groups != g) if cross_fit else fit_on
        decisions = {name: fit_decision(fit_part, classes, r) for name, r in rules.items()}
        calibrated[here] = decisions["rule"].calibrate(test.probs[here])
        predicted[here] = decisions["rule"].predicted(calibrated[here])
        for name, decision in decisions.items():  # the same calibration, another threshold
            refer[name][here] = refer_score(calibrated[here], classes) >= decision.threshold
    scores = with_intervals(test.labels, calibrated, classes, resamples, seed, predicted)
    scores.pop("confusion_matrix")
    if rule.balance_classes:  # against the arg-max of the same probabilities
        scores["class_bias_gain"] = balanced_accuracy_gain(
            test.labels, predicted, calibrated.argmax(axis=1), resamples, seed)
    malignant = np.isin(test.labels, malignant_classes(classes))
    scores["referral"] = {"target_sensitivity": rule.target,
                          "confidence": rule.confidence,
                          **decision_with_intervals(malignant, refer["rule"], resamples, seed)}
    if "point" in refer:
        scores["referral"]["without_guarantee"] = decision_with_intervals(
            malignant, refer["point"], resamples, seed)
    refer_scores = refer_score(calibrated, classes)
    # how well P(malignant) ranks malignant against everything else
    scores["referral"] |= {"roc_auc": float(skm.roc_auc_score(malignant, refer_scores)),
                           "pauc_above_80_tpr": pauc_above_tpr(malignant, refer_scores)}
    scores["calibration"] = {name: round(value, DECIMALS) for name, value in {
        "brier_before": brier(test.labels, test.probs),
        "brier_after": brier(test.labels, calibrated),
        "ece_before": expected_calibration_error(test.labels, test.probs),
        "ece_after": expected_calibration_error(test.labels, calibrated)}.items()}
    rows = [{**r, "series": f"{when} calibration", "point": i}
            for when, probs in (("before", test.probs), ("after", calibrated))
            for i, r in enumerate(reliability(test.labels, probs))]
    return Estimate(scores, rows, Predictions(test.ids, test.labels, calibrated, test.groups),
                    predicted)


def _lockbox_scores(backbones: list[str], folds: list[str], truth: pd.Series,
                    classes: list[str], decision: Decision, resamples: int,
                    seed: int) -> dict | None:
    """The served model itself (every member, the final calibration and threshold) on the
    lockbox images, when split.lockbox set some aside; None otherwise."""
    if not predictions_file(backbones[0], folds[0], LOCKBOX).exists():
        return None
    tables = [member_mean([b], f, LOCKBOX, truth, classes) for b in backbones for f in folds]
    order, labels = tables[0][0].index, tables[0][1]
    probs = decision.calibrate(np.mean([t.loc[order].to_numpy() for t, _ in tables], axis=0))
    scores = with_intervals(labels, probs, classes, resamples, seed, decision.predicted(probs))
    scores.pop("confusion_matrix")
    malignant = np.isin(labels, malignant_classes(classes))
    refer = refer_score(probs, classes) >= decision.threshold
    scores["referral"] = decision_with_intervals(malignant, refer, resamples, seed)
    return {"how": f"the served model on the {len(labels)} lockbox images (split.lockbox), "
                   "which took no part in training, calibration, thresholds or choices",
            **scores}


def build_served(candidates: list[list[str]], folds: list, serve: str, truth: pd.Series,
                 rule: Rule, resamples: int, seed: int,
                 rank_by: str = "roc_auc") -> tuple[dict, Estimate]:
    """The served card (without the image size and preprocessing, added by compare) and its
    estimate. `candidates`: the member sets (lists of backbones) to choose from, by
    `rank_by` on pooled out-of-fold predictions (cross-fitted for the estimate); one set:
    no choice. Without cross-validation (or serving one fold) the set is chosen on that
    model's validation predictions."""
    folds = [str(f) for f in folds]
    cross_validated = folds != [HOLDOUT]
    backbones = candidates[0]
    if cross_validated and serve == "ensemble":
        oof, backbones, per_fold, served_oof = nested_out_of_fold(candidates, folds, truth,
                                                                  rank_by)
        classes = list(pd.read_csv(predictions_file(backbones[0], folds[0])).columns[1:])
        served_folds = folds
        result = estimate(oof, oof, classes, rule, True, resamples, seed)
        how = (f"pooled out-of-fold predictions of the {len(folds)} fold models: each of the "
               f"{len(oof.labels)} images scored by the fold model(s) that did not train on it "
               "(calibration and threshold cross-fitted on the other folds)")
        if len(candidates) > 1:
            how += (f"; the members chosen among {len(candidates)} candidate sets by "
                    f"{rank_by}, for each fold on the other folds' images (nested), so the "
                    "estimate includes the choice")
            result.scores["chosen_per_fold"] = ["+".join(m) for m in per_fold]
        final = fit_decision(served_oof, classes, rule)
    else:
        fold = folds[0] if not cross_validated else str(serve)
        if fold not in folds:
            raise MissingInputError(f"compare.serve: fold {serve} is not in `folds` {folds}")
        fitted = sorted({b for m in candidates for b in m
                         if json.loads(metrics_file(b, fold).read_text()).get(
                             "fitted_on_validation")})
        if fitted:
            raise ParamsError(
                f"compare.serve: fold {fold}'s {', '.join(fitted)} model was fitted on its "
                "validation images (train.fit_on: train+val), which would calibrate it and "
                "set its threshold; serve the fold ensemble (compare.serve: ensemble) or fit "
                "on train only")
        classes = list(pd.read_csv(predictions_file(backbones[0], fold)).columns[1:])
        # One model: its members are chosen on validation predictions, never on its test.
        backbones = choose_members(candidates, {
            tuple(m): pooled_predictions(m, [fold], "val", truth) for m in candidates},
            rank_by, classes)
        val = pooled_predictions(backbones, [fold], "val", truth)
        test = pooled_predictions(backbones, [fold], "test", truth)
        served_folds = [fold]
        result = estimate(val, test, classes, rule, False, resamples, seed)
        how = (f"the {len(test.labels)} test images of fold {fold} (calibration and threshold "
               "fitted on its validation images)")
        final = fit_decision(val, classes, rule)
    lockbox = _lockbox_scores(backbones, served_folds, truth, classes, final, resamples, seed)
    members = [{"backbone": b, "fold": f, "model": str(model_dir(b, f) / "model.keras")}
               for b in backbones for f in served_folds]
    card = {
        "name": "+".join(backbones) + (f" × {len(served_folds)} folds"
                                       if len(served_folds) > 1 else f" ({served_folds[0]})"),
        "classes": classes,
        "members": members,
        "calibration": {"method": "temperature", "temperature": final.temperature},
        "decision": {"refer_classes": [classes[i] for i in malignant_classes(classes)],
                     "threshold": final.threshold,
                     "target_sensitivity": rule.target,
                     "confidence": rule.confidence,
                     "from_malignant": final.malignant,
                     # the predicted class: argmax(log p + class_bias) (class_decision.py)
                     **({"class_bias": list(final.class_bias)} if final.class_bias else {})},
        "estimate": {"how": how, **result.scores},
        **({"lockbox": lockbox} if lockbox else {}),
    }
    return card, result

