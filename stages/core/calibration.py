"""Calibrated probabilities and a decision: temperature scaling, its before/after scores
(Brier, expected calibration error, a reliability table), and the referral threshold.

Temperature scaling divides the log-probabilities by one number T fitted by likelihood
(Guo et al. 2017): it changes how sure the model says it is, never the ranking, so ROC AUC is
untouched. It works the same for two classes and for many, and one parameter cannot overfit a
few hundred validation images the way isotonic regression can.

The decision is binary: the "refer" score is the probability of the malignant class, or with
several classes the summed probability of the malignant ones. `threshold_for_sensitivity` is
the highest score that still flags `target_sensitivity` of the malignant validation images:
what was measured there, not a promise. `guaranteed_threshold` adds a stated confidence that
the sensitivity on new malignant images from the same source reaches the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import binom

from stages.core.labels import CODES
from stages.core.softmax import softmax

EPS = 1e-7


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): temperature scaling."""
    return softmax(np.log(np.clip(probs, EPS, 1.0)) / temperature)


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of `labels`."""
    def nll(t: float) -> float:
        p = apply_temperature(probs, t)[np.arange(len(labels)), labels]
        return float(-np.mean(np.log(np.clip(p, EPS, 1.0))))

    # to 1e-8, not scipy's default 1e-5: T is then the optimum, not where the search stopped,
    # and the same on every CPU once rounded (served.DECIMALS)
    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded",
                                 options={"xatol": 1e-8}).x)


def malignant_classes(classes: list[str]) -> list[int]:
    """Indices of the classes a referral is about: `malignant`, or the malignant diagnoses."""
    if "malignant" in classes:
        return [classes.index("malignant")]
    malignant = {diagnosis for diagnosis, bm in CODES.values() if bm == "malignant"}
    return [i for i, c in enumerate(classes) if c in malignant] or [len(classes) - 1]


def refer_score(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    return probs[:, malignant_classes(classes)].sum(axis=1)


def threshold_for_sensitivity(is_malignant: np.ndarray, score: np.ndarray,
                              target: float) -> float:
    """The highest threshold (refer when score >= threshold) whose sensitivity on these
    images is at least `target`."""
    positives = np.sort(score[is_malignant.astype(bool)])[::-1]
    if len(positives) == 0:
        return 0.5
    needed = int(np.ceil(target * len(positives)))
    return float(positives[max(needed, 1) - 1])


@dataclass(frozen=True)
class Guarantee:
    threshold: float
    malignant: int  # malignant validation images the bound is computed from
    needed: int  # the fewest malignant images for which any threshold above 0 is guaranteed


def malignant_needed(target: float, confidence: float) -> int:
    """The fewest malignant validation images for which the guarantee refers less than
    every image: 1 - target**n >= confidence."""
    return int(np.ceil(np.log(1.0 - confidence) / np.log(target)))


def guaranteed_threshold(is_malignant: np.ndarray, score: np.ndarray, target: float,
                         confidence: float) -> Guarantee:
    """The highest threshold such that, with probability >= `confidence` over the draw of
    the n malignant validation images, a new malignant image exchangeable with them is
    referred (score >= threshold) with probability >= `target`.

    The threshold is the k-th smallest malignant score s_(k). A new image is missed when its
    score is below s_(k), with probability F(s_(k)), which is distributed as the k-th order
    statistic of n uniforms, Beta(k, n - k + 1) (ties only lower it), so
    P(miss rate <= 1 - target) = P(Binomial(n, 1 - target) >= k): the largest k for which
    that is >= `confidence` is kept. This is the training-conditional ("PAC") form of split
    conformal prediction: Vovk 2012, "Conditional validity of inductive conformal
    predictors", Prop. 2a; Angelopoulos & Bates 2023, "Conformal prediction: a gentle
    introduction", Sec. 3.2 (equivalently, the one-sided Clopper-Pearson bound). With too
    few malignant images no k >= 1 qualifies: the threshold is 0, every image is referred.
    """
    positives = np.sort(score[is_malignant.astype(bool)])
    n = len(positives)
    miss = 1.0 - target
    needed = malignant_needed(target, confidence)
    ks = np.arange(1, n + 1)
    qualifying = ks[binom.sf(ks - 1, n, miss) >= confidence]
    if n == 0 or len(qualifying) == 0:
        return Guarantee(0.0, n, needed)
    return Guarantee(float(positives[qualifying.max() - 1]), n, needed)


def decision_statement(card: dict) -> str:
    """The referral decision in words, as the card, leaderboard, predict and the page say it:
    what it promises (or only measured), from how many malignant images, at what cost."""
    decision, referral = card["decision"], card.get("estimate", {}).get("referral", {})
    names = decision["refer_classes"]
    what = ("malignant lesions" if names == ["malignant"] else f"{names[0]}s"
            if len(names) == 1 else f"malignant lesions ({', '.join(names)})")
    target, confidence = decision["target_sensitivity"], decision.get("confidence")
    n = decision.get("from_malignant")
    counted = f", from {n} {what} in validation" if n is not None else ""
    if confidence:
        said = (f"refers at least {target:.0%} of {what} with {confidence:.0%} confidence "
                f"on new images from the same source{counted}")
        if decision["threshold"] <= 0:
            said += " (too few to refer less than every image)"
    else:
        said = (f"referred {target:.0%} of the {what} in validation{counted} (measured there, "
                "no guarantee for new images)")
    if "specificity" in referral:
        low, high = referral.get("specificity_ci_low"), referral.get("specificity_ci_high")
        said += f"; expected specificity {referral['specificity']:.2f}" + (
            f" ({low:.2f}–{high:.2f})" if low is not None else "")
    if plain := referral.get("without_guarantee"):  # what the promise costs
        said += (f", against {plain['specificity']:.2f} for the threshold that flags "
                 f"{target:.0%} of the validation images, which promises nothing")
    return said


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict]:
    """Per confidence bin (of the arg-max probability): mean confidence, accuracy, count."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            rows.append({"confidence": float(confidence[inside].mean()),
                         "accuracy": float(correct[inside].mean()), "count": int(inside.sum())})
    return rows


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    rows = reliability(labels, probs, bins)
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows)
                 / max(1, len(labels)))
