"""The balanced-accuracy decision rule (core/class_decision.py): biases that move the
predicted class towards rare classes raise balanced accuracy where the arg-max neglects them,
change nothing where it does not, and decide the class only: the probabilities, their AUCs
and the referral stay the arg-max model's."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from stages.core.calibration import apply_temperature
from stages.core.class_decision import decide, fit_class_bias
from stages.core.layers import TemperatureScaling
from stages.core.served import balanced_accuracy_gain


def _imbalanced(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated posteriors of three classes with priors 0.8 / 0.15 / 0.05."""
    rng = np.random.default_rng(seed)
    prior = np.array([0.8, 0.15, 0.05])
    labels = rng.choice(3, n, p=prior)
    x = rng.normal(np.eye(3)[labels] * 1.5, 1.0)
    joint = prior * np.exp(-0.5 * ((x[:, None, :] - 1.5 * np.eye(3)[None]) ** 2).sum(-1))
    return labels, joint / joint.sum(axis=1, keepdims=True)


def test_biases_raise_balanced_accuracy_on_new_images_of_the_same_kind():
    labels, probs = _imbalanced(3000, 0)
    bias = fit_class_bias(labels, probs)
    assert bias[0] == 0 and bias[2] > bias[1] > 0  # rarer class, larger bias
    test_labels, test_probs = _imbalanced(3000, 1)
    plain = balanced_accuracy_score(test_labels, test_probs.argmax(axis=1))
    biased = balanced_accuracy_score(test_labels, decide(test_probs, bias))
    assert biased > plain + 0.05, (plain, biased)
    gain = balanced_accuracy_gain(test_labels, decide(test_probs, bias),
                                  test_probs.argmax(axis=1), 200, 0)
    assert gain["gain"] == pytest.approx(biased - plain, abs=1e-6) and gain["gain_ci_low"] > 0


def test_balanced_classes_need_no_bias():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1, 2], 200)
    probs = np.full((600, 3), 0.2)
    probs[np.arange(600), labels] = 0.6  # every image right already
    assert not fit_class_bias(labels, probs + rng.uniform(0, 0.01, probs.shape)).any()


def test_the_exported_layer_applies_the_temperature_as_numpy_does():
    _, probs = _imbalanced(20, 3)
    layer = TemperatureScaling(1.3)
    got = np.asarray(layer(probs.astype("float32")))
    np.testing.assert_allclose(got, apply_temperature(probs, 1.3), atol=1e-5)
    assert TemperatureScaling.from_config(layer.get_config()).temperature == 1.3


def test_the_estimate_scores_the_biased_arg_max_cross_fitted_with_a_guarantee_too():
    from stages.core.served import Predictions, Rule, estimate

    labels, probs = _imbalanced(1500, 4)
    folds = np.arange(1500) % 5
    p = Predictions(np.arange(1500).astype(str), labels, probs, folds)
    classes = ["nevus", "benign keratosis", "melanoma"]
    balanced = estimate(p, p, classes, Rule(0.85, 0.95, balance_classes=True), True, 100, 0)
    scores = balanced.scores
    gain = scores["class_bias_gain"]
    assert gain["gain"] > 0.05 and gain["gain_ci_low"] > 0, gain
    assert scores["balanced_accuracy"] == pytest.approx(gain["with_bias"], abs=1e-6)
    assert "without_guarantee" in scores["referral"]
    # The biases decide the class only: probabilities, AUCs and referral are the arg-max's.
    plain = estimate(p, p, classes, Rule(0.85, 0.95), True, 100, 0)
    np.testing.assert_array_equal(balanced.scored.probs, plain.scored.probs)
    assert scores["balanced_accuracy"] > plain.scores["balanced_accuracy"] + 0.05
    for key in ("roc_auc", "roc_auc_melanoma", "brier_after"):
        where = scores if key in scores else scores["calibration"]
        other = plain.scores if key in plain.scores else plain.scores["calibration"]
        assert where[key] == other[key], key
    assert scores["referral"] == plain.scores["referral"]


def test_the_fitted_biases_are_plain_numbers_the_card_shows_as_such():
    from stages.core.served import Predictions, Rule, fit_decision

    labels, probs = _imbalanced(600, 5)
    p = Predictions(np.arange(600).astype(str), labels, probs, np.arange(600) % 5)
    bias = fit_decision(p, ["nevus", "benign keratosis", "melanoma"],
                        Rule(0.85, 0.95, balance_classes=True)).class_bias
    assert any(bias) and all(type(b) is float for b in bias)
    assert "np.float64" not in f"{list(bias)}"
