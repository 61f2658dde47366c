"""Subgroup metrics: columns from ISIC and HAM10000 metadata, counts, intervals, small groups."""

import numpy as np
import pandas as pd
import pytest

from stages.core.metrics import classification_metrics
from stages.core.subgroups import MIN_PER_CLASS, subgroup_columns, subgroup_metrics

CLASSES = ["benign", "malignant"]


def test_columns_come_from_either_vocabulary_and_ages_are_banded():
    isic = pd.DataFrame({"sex": ["female", "MALE", ""], "age_approx": ["25", "55", "unknown"],
                         "anatom_site_general": ["head/neck", "", "lower extremity"]})
    ham = pd.DataFrame({"sex": ["unknown"], "age": ["80.0"], "localization": ["scalp"]})
    isic2017 = pd.DataFrame({"sex": ["male"], "age_approximate": ["45"]})
    assert subgroup_columns(isic).to_dict("list") == {
        "sex": ["female", "male", ""], "age": ["<30", "50-69", ""],
        "site": ["head/neck", "", "lower extremity"], "age_years": ["25", "55", ""]}
    assert subgroup_columns(ham).to_dict("list") == {"sex": [""], "age": ["70+"],
                                                     "site": ["scalp"], "age_years": ["80"]}
    assert subgroup_columns(isic2017).to_dict("list") == {
        "sex": ["male"], "age": ["30-49"], "site": [""], "age_years": ["45"]}
    assert subgroup_columns(pd.DataFrame(index=[0])).to_dict("list") == {
        "sex": [""], "age": [""], "site": [""], "age_years": [""]}


def test_each_group_is_scored_on_its_own_images_and_small_ones_are_marked():
    rng = np.random.default_rng(0)
    n = 120
    labels = np.tile([0, 1], n // 2)
    p = np.clip(labels * 0.4 + rng.uniform(0, 0.6, n), 0, 1)
    probs = np.stack([1 - p, p], axis=1)
    sex = np.where(np.arange(n) < 100, "female", "male")  # 20 male: 10 of each class
    site = np.where(np.arange(n) < 110, "trunk", "scalp")  # 10 scalp: 5 of each class
    groups = pd.DataFrame({"sex": sex, "age": "", "site": site})
    report = subgroup_metrics(groups, labels, probs, CLASSES, resamples=200, seed=1)
    female = report["sex"]["female"]
    want = classification_metrics(labels[:100], probs[:100], CLASSES)
    assert female["n_images"] == 100 and female["per_class"] == {"benign": 50, "malignant": 50}
    assert female["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-6)
    assert female["roc_auc_ci_low"] < female["roc_auc"] < female["roc_auc_ci_high"]
    assert "too_small" not in report["sex"]["male"]  # exactly MIN_PER_CLASS of each
    assert MIN_PER_CLASS == 10 and "too_small" in report["site"]["scalp"]
    assert "roc_auc" not in report["site"]["scalp"]
    assert "age" not in report  # no ages known: no groups
