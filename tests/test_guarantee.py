"""The referral threshold with a guarantee (calibration.guaranteed_threshold): over many
draws of the validation images, sensitivity >= target on new images holds at least as often
as promised, and not so much more often that the bound wastes specificity."""

import numpy as np
import pytest
from scipy.stats import beta

from stages.core.calibration import (
    decision_statement,
    guaranteed_threshold,
    threshold_for_sensitivity,
)


@pytest.mark.parametrize(("n", "target", "confidence"), [(114, 0.85, 0.95), (40, 0.9, 0.8)])
def test_the_promise_holds_as_often_as_stated(n, target, confidence):
    rng = np.random.default_rng(0)
    draws = 4000
    held = 0
    for _ in range(draws):
        scores = rng.uniform(size=n)  # malignant scores ~ U(0, 1): true sensitivity = 1 - t
        t = guaranteed_threshold(np.ones(n, bool), scores, target, confidence).threshold
        held += (1.0 - t) >= target
    rate = held / draws
    # the threshold is an order statistic of n uniforms, so the exact coverage is a Beta CDF
    k = int(np.round(n * guaranteed_threshold(np.ones(n, bool), np.arange(n) / n + 0.5 / n,
                                              target, confidence).threshold + 0.5))
    exact = beta.cdf(1 - target, k, n - k + 1)
    assert rate >= confidence - 0.01 and exact >= confidence, (rate, exact)
    assert abs(rate - exact) < 0.015, (rate, exact)  # Monte-Carlo error ~0.004


def test_stricter_than_the_plain_rule_and_benign_images_do_not_count():
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.uniform(size=100), rng.uniform(size=300) * 0.5])
    malignant = np.arange(400) < 100
    guaranteed = guaranteed_threshold(malignant, scores, 0.85, 0.95)
    assert guaranteed.malignant == 100
    assert guaranteed.threshold < threshold_for_sensitivity(malignant, scores, 0.85)
    again = guaranteed_threshold(malignant, np.where(malignant, scores, 0.99), 0.85, 0.95)
    assert again.threshold == guaranteed.threshold


def test_too_few_malignant_images_refer_everything_and_say_how_many_are_needed():
    few = guaranteed_threshold(np.ones(18, bool), np.linspace(0.1, 0.9, 18), 0.85, 0.95)
    enough = guaranteed_threshold(np.ones(19, bool), np.linspace(0.1, 0.9, 19), 0.85, 0.95)
    assert few.threshold == 0.0 and few.needed == 19
    assert enough.threshold == pytest.approx(0.1)  # the lowest malignant score


def test_the_statement_says_promise_confidence_count_and_cost():
    card = {"decision": {"refer_classes": ["melanoma"], "threshold": 0.12,
                         "target_sensitivity": 0.85, "confidence": 0.95,
                         "from_malignant": 114},
            "estimate": {"referral": {"specificity": 0.55, "specificity_ci_low": 0.5,
                                      "specificity_ci_high": 0.61}}}
    assert decision_statement(card) == (
        "refers at least 85% of melanomas with 95% confidence on new images from the same "
        "source, from 114 melanomas in validation; expected specificity 0.55 (0.50–0.61)")
    card["decision"] |= {"confidence": None, "refer_classes": ["mel", "bcc"]}
    assert "no guarantee" in decision_statement(card)
    assert "malignant lesions (mel, bcc)" in decision_statement(card)
