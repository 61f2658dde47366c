"""MODEL_CARD.md is rendered from the served card: every Mitchell et al. section, the
figures of the model it describes, and the caveats of its data source."""

from stages.core.model_card import render

SECTIONS = ["Model details", "Intended use", "Out-of-scope use", "Training data",
            "Evaluation data", "Metrics", "Decision", "Calibration",
            "Out-of-distribution guard", "Quantitative analyses", "Ethical considerations",
            "Caveats and recommendations"]


def _card(lockbox: bool) -> dict:
    scores = {"roc_auc": 0.848, "roc_auc_ci_low": 0.802, "roc_auc_ci_high": 0.891,
              "balanced_accuracy": 0.725,
              "referral": {"sensitivity": 0.851, "specificity": 0.654,
                           "sensitivity_ci_low": 0.781, "sensitivity_ci_high": 0.912,
                           "without_guarantee": {"sensitivity": 0.86, "specificity": 0.70}}}
    card = {"name": "lite0_ms_frozen × 5 folds", "classes": ["benign", "malignant"],
            "members": [{"backbone": "lite0_ms_frozen", "fold": str(k)} for k in range(5)],
            "calibration": {"method": "temperature", "temperature": 0.849},
            "decision": {"refer_classes": ["malignant"], "threshold": 0.169,
                         "target_sensitivity": 0.85, "confidence": 0.95,
                         "from_malignant": 114},
            "estimate": {"how": "pooled out-of-fold predictions of 400 images", **scores,
                         "calibration": {"brier_before": 0.265, "brier_after": 0.263,
                                         "ece_before": 0.042, "ece_after": 0.033}},
            "image_size": 256, "preprocessing": {}}
    if lockbox:
        card["lockbox"] = {"how": "the served model on 80 lockbox images", "roc_auc": 0.9}
    return card


def test_every_section_with_the_served_models_figures():
    subgroups = {"sex": {"female": {"n_images": 112, "roc_auc": 0.857},
                         "male": {"n_images": 100, "too_small": "fewer than 5"}}}
    text = render(_card(lockbox=True), {"fold0": {"benign": 57, "malignant": 23}}, subgroups,
                  {"source": "the local folder ../shared/data/isic2017-dev",
                   "attribution": "ISIC Archive"})
    for section in SECTIONS:
        assert f"## {section}" in text, section
    assert "0.848 (95 % CI 0.802–0.891)" in text and "P(malignant) ≥ 0.169" in text
    assert "at least 85% of malignant lesions with 95% confidence" in text
    assert "against 0.70 for the threshold that flags 85%" in text
    assert "| sex | female | 112 | 0.857 |" in text and "| fold0 | 57 | 23 |" in text
    assert "## Lockbox" in text and "256 px copies" in text and "synthetic" not in text


def test_no_lockbox_section_without_one_and_the_synthetic_caveat():
    text = render(_card(lockbox=False), {}, {}, {"source": "600 synthetic images"})
    assert "## Lockbox" not in text and "No subgroup has enough images" in text
    assert "say nothing about real lesions" in text


def test_the_class_biases_are_stated_and_name_the_balanced_accuracy_they_give():
    card = _card(lockbox=True)
    assert "balanced accuracy (arg-max) | 0.725" in render(card, {}, {}, {"source": "x"})
    card["decision"]["class_bias"] = [0.0, 0.95]
    card["estimate"]["class_bias_gain"] = {"with_bias": 0.725, "without_bias": 0.70}
    text = render(card, {}, {}, {"source": "x"})
    assert "balanced accuracy (with the class biases) | 0.725" in text
    assert "argmax(log p + b), per-class biases b = [0.0, 0.95]" in text
    assert "the probabilities stay calibrated" in text and "(arg-max)" not in text
