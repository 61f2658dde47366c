"""Adapting the served model's decision to a new site with a few labelled images.

The network and its members stay as they are: on the site's images, a second temperature is
fitted on top of the card's (temperatures compose: T1 then T2 is T1·T2; a balanced-accuracy
class bias b becomes b / T2, the biases themselves are not refitted) and the referral
threshold is chosen again with the card's rule (target sensitivity and, with a confidence,
the finite-sample guarantee of calibration.guaranteed_threshold), now over the site's
malignant images. What that achieves there is estimated by cross-fitting over the site's
images (fitted on k-1 folds, applied to the k-th, grouped by lesion), beside what the
original decision did on the same images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from stages.core.calibration import malignant_classes, refer_score
from stages.core.served import (
    DECIMALS,
    Predictions,
    Rule,
    decision_with_intervals,
    estimate,
    fit_decision,
)
from stages.core.shift import reference_profile


def site_folds(labels: np.ndarray, groups: pd.Series, folds: int, seed: int) -> np.ndarray:
    """Each image's fold for cross-fitting: stratified by class, no lesion in two folds."""
    counts = np.bincount(labels)
    folds = max(2, min(folds, int(counts[counts > 0].min())))
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    out = np.zeros(len(labels), int)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        out[test] = k
    return out


def rule_of(card: dict) -> Rule:
    decision = card["decision"]
    return Rule(decision["target_sensitivity"], decision.get("confidence"))


def adapt_card(card: dict, site: Predictions, where: str, resamples: int, seed: int) -> dict:
    """The served card adapted to the site: `site` holds the site's images with the card's
    calibrated probabilities and their fold (`groups`). The original card is not changed."""
    classes = card["classes"]
    rule = rule_of(card)
    malignant = np.isin(site.labels, malignant_classes(classes))
    before = refer_score(site.probs, classes) >= card["decision"]["threshold"]
    result = estimate(site, site, classes, rule, True, resamples, seed)
    final = fit_decision(site, classes, rule)
    temperature = round(card["calibration"]["temperature"] * final.temperature, 2 * DECIMALS)
    calibration = {**card["calibration"], "temperature": temperature}
    # argmax(log p / T2 + b / T2) = argmax(log p + b): the class biases, scaled, predict the
    # same classes from the site-calibrated probabilities as before
    bias = card["decision"].get("class_bias")
    scaled = ({"class_bias": [round(b / final.temperature, 2 * DECIMALS) for b in bias]}
              if bias else {})
    folds = len(np.unique(site.groups))
    return {
        **{k: v for k, v in card.items() if k not in ("lockbox", "estimate")},
        "name": f"{card['name']} adapted to {where}",
        "calibration": calibration,
        "decision": {**card["decision"], "threshold": final.threshold,
                     "from_malignant": final.malignant, **scaled},
        "estimate": {"how": f"the {len(site.labels)} labelled images of {where}, calibration "
                            f"and threshold cross-fitted over {folds} folds (no lesion in two)",
                     **result.scores},
        "shift_reference": reference_profile(result.scored.probs, classes, final.threshold),
        "adapted": {"site": where, "images": int(len(site.labels)),
                    "malignant": int(malignant.sum()),
                    "original": {"name": card["name"],
                                 "threshold": card["decision"]["threshold"],
                                 "temperature": card["calibration"]["temperature"],
                                 "here": decision_with_intervals(malignant, before, resamples,
                                                                 seed)}},
    }
