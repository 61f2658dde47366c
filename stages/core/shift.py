"""Has a batch of photos shifted away from the images the promise was measured on?

Without labels, four signs that the referral threshold's promise (calibration.py) may not
hold for a batch, each compared with the served model's own evaluation images (compare
stores their profile in the card, `reference_profile`):
- the share flagged out of distribution (the guard flags about 1 % of lesions like the
  validation ones by construction): a one-sided binomial test;
- the distribution of the referral score: a Kolmogorov-Smirnov test against the reference's
  quantiles (its finite size counted as in the two-sample test);
- the share above the referral threshold: a two-proportion test;
- the class prior, re-estimated on the unlabelled batch by EM (Saerens, Latinne & Decaestecker
  2002, "Adjusting the outputs of a classifier to new a priori probabilities", Neural
  Computation 14(1)): its 95 % bootstrap interval against the reference's.
Each test is run at 1 % / 4 (Bonferroni), so a batch like the reference raises a warning
about 1 time in 100. Fewer than MIN_BATCH photos are too few to judge.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom, kstwo, norm

from stages.core.calibration import refer_score
from stages.core.ood import PERCENTILE

MIN_BATCH = 20
LEVEL = 0.01 / 4
QUANTILES = np.linspace(0.0, 1.0, 101)
EXPECTED_OOD = 1.0 - PERCENTILE / 100.0
BOOTSTRAP = 200


def em_prior(probs: np.ndarray, reference_prior: np.ndarray, iterations: int = 500,
             tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """(the class prior of this batch, the probabilities adjusted to it) by EM: posteriors
    reweighted by prior / reference prior, the prior re-estimated as their mean, until it
    settles. `reference_prior`: the prior the probabilities are calibrated for."""
    prior = reference_prior.copy()
    adjusted = probs
    for _ in range(iterations):
        adjusted = probs * (prior / reference_prior)
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        new = adjusted.mean(axis=0)
        if np.abs(new - prior).max() < tol:
            return new, adjusted
        prior = new
    return prior, adjusted


def reference_profile(probs: np.ndarray, classes: list[str], threshold: float) -> dict:
    """What a batch is compared with: the evaluation images' calibrated probabilities, as
    the card stores them (a few numbers, not the images)."""
    score = refer_score(probs, classes)
    return {"images": int(len(probs)),
            "refer_score_quantiles": [round(float(q), 6) for q in np.quantile(score, QUANTILES)],
            "referred": round(float(np.mean(score >= threshold)), 6),
            "class_prior": [round(float(p), 6) for p in probs.mean(axis=0)],
            "ood_flagged": EXPECTED_OOD}


def _ks_pvalue(score: np.ndarray, quantiles: np.ndarray, reference_n: int) -> tuple[float,
                                                                                   float]:
    """(D, p) of the batch's scores against the reference CDF given by its quantiles."""
    ordered = np.sort(score)
    reference_cdf = np.interp(ordered, quantiles, QUANTILES, left=0.0, right=1.0)
    n = len(ordered)
    above = np.arange(1, n + 1) / n - reference_cdf
    below = reference_cdf - np.arange(n) / n
    d = float(max(above.max(), below.max()))
    effective = max(1, round(n * reference_n / (n + reference_n)))
    return d, float(kstwo.sf(d, effective))


def _two_proportions(k: int, n: int, p0: float, n0: int) -> float:
    """Two-sided p-value of k/n against p0 measured on n0 images (pooled z-test)."""
    pooled = (k + p0 * n0) / (n + n0)
    spread = np.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n + 1 / n0))
    return float(2 * norm.sf(abs(k / n - p0) / spread))


def check_batch(probs: np.ndarray, ood_scores: np.ndarray, card: dict,
                seed: int = 0) -> dict:
    """The four signs for a batch of calibrated probabilities and OOD scores, against the
    card's `shift_reference`, and whether to warn. Photos flagged out of distribution count
    in the first sign only."""
    reference = card["shift_reference"]
    classes, threshold = card["classes"], card["decision"]["threshold"]
    n_all = len(probs)
    flagged = np.nan_to_num(ood_scores, nan=0.0) > 1.0
    kept = probs[~flagged]
    n = len(kept)
    if n_all < MIN_BATCH or n < MIN_BATCH:
        return {"images": n_all, "warning": False,
                "message": f"{n_all} photo(s): too few to judge a shift (needs {MIN_BATCH})"}
    ref_n = reference["images"]
    ref_prior = np.asarray(reference["class_prior"])
    malignant = [classes.index(c) for c in card["decision"]["refer_classes"]]
    score = refer_score(kept, classes)
    d, ks_p = _ks_pvalue(score, np.asarray(reference["refer_score_quantiles"]), ref_n)
    referred = int(np.sum(score >= threshold))
    prior, _ = em_prior(kept, ref_prior)
    rng = np.random.default_rng(seed)
    draws = [em_prior(kept[rng.integers(0, n, n)], ref_prior)[0][malignant].sum()
             for _ in range(BOOTSTRAP)]
    low, high = np.percentile(draws, [100 * LEVEL / 2, 100 * (1 - LEVEL / 2)])
    ref_malignant = float(ref_prior[malignant].sum())
    signs = [
        {"sign": "share flagged out of distribution", "batch": float(flagged.mean()),
         "reference": EXPECTED_OOD,
         "p_value": float(binom.sf(int(flagged.sum()) - 1, n_all, EXPECTED_OOD))},
        {"sign": "referral score distribution (KS distance)", "batch": d, "reference": None,
         "p_value": ks_p},
        {"sign": "share above the referral threshold", "batch": referred / n,
         "reference": reference["referred"],
         "p_value": _two_proportions(referred, n, reference["referred"], ref_n)},
        {"sign": "malignant prior (EM, Saerens 2002)", "batch": float(prior[malignant].sum()),
         "interval": [float(low), float(high)], "reference": ref_malignant,
         "p_value": None},
    ]
    for s in signs:
        s["outside"] = (not low <= ref_malignant <= high if s["p_value"] is None
                        else s["p_value"] < LEVEL)
    outside = [s["sign"] for s in signs if s["outside"]]
    message = (f"{n_all} photos look like the evaluation images on all four signs"
               if not outside else
               f"WARNING: this batch of {n_all} photos differs from the images the referral "
               f"threshold was validated on ({'; '.join(outside)}): the promised sensitivity "
               "may not hold here. Check it on labelled images from this source "
               "(python -m stages.app.adapt).")
    return {"images": n_all, "warning": bool(outside), "signs": signs,
            "class_prior": {c: float(p) for c, p in zip(classes, prior, strict=True)},
            "message": message}


def adjust_to_batch_prior(probs: np.ndarray, card: dict, ood_scores: np.ndarray) -> np.ndarray:
    """The probabilities re-weighted to the class prior EM estimates on this batch (its
    photos flagged out of distribution left out of the estimate)."""
    reference = np.asarray(card["shift_reference"]["class_prior"])
    kept = np.nan_to_num(ood_scores, nan=0.0) <= 1.0
    prior, _ = em_prior(probs[kept], reference) if kept.any() else (reference, probs)
    adjusted = probs * (prior / reference)
    return adjusted / adjusted.sum(axis=1, keepdims=True)
