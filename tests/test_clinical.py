"""Clinical data as input: the encoding with unknown fields, the joint fit with metadata
dropout, and applying the card's clinical half to a model's probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.core.clinical import (
    ClinicalEncoding,
    clinical_inputs,
    with_clinical,
    with_dropout_copies,
)
from stages.core.linear_head import fit_linear_head, softmax
from stages.core.params import ParamsError

TABLE = pd.DataFrame({"sex": ["male", "", "female", "male"],
                      "age_years": ["70", "30", "", ""],
                      "site": ["back", "face", "", "palms/soles"]})


def test_unknown_fields_encode_as_zero_and_nothing_known_is_the_zero_vector():
    encoding = ClinicalEncoding.fit(("age", "sex", "site"), TABLE.iloc[:2])
    assert encoding.names == ["age_known", "age", "sex=male", "sex=female", "site=back",
                              "site=face"]
    x = encoding.encode(TABLE)
    np.testing.assert_allclose(x[0], [1, 1.0, 1, 0, 1, 0])
    np.testing.assert_allclose(x[1], [1, -1.0, 0, 0, 0, 1])
    np.testing.assert_allclose(x[2], [0, 0, 0, 1, 0, 0])  # partial: sex only
    np.testing.assert_allclose(x[3], [0, 0, 1, 0, 0, 0])  # a site not seen in training
    none = encoding.encode(pd.DataFrame(index=range(2)))  # a photo with no clinical data
    assert none.shape == (2, 6) and not none.any()
    assert ClinicalEncoding.fit(("sex",), TABLE).names == ["sex=male", "sex=female"]


def test_inputs_are_checked():
    assert clinical_inputs({"clinical": {"inputs": ["site", "age"]}}) == ("age", "site")
    assert clinical_inputs({"clinical": {"inputs": []}}) == ()
    for bad in (["weight"], ["age", "age"]):
        with pytest.raises(ParamsError, match="clinical.inputs"):
            clinical_inputs({"clinical": {"inputs": bad}})


def _patients(n: int, seed: int = 0):
    """Image features that carry some signal, and an age and sex that carry more."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 85, n)
    sex = rng.choice(["male", "female"], n)
    features = rng.normal(size=(n, 6))
    logit = 1.5 * features[:, 0] + 0.08 * (age - 50) + 0.8 * (sex == "male") - 0.4
    labels = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    table = pd.DataFrame({"sex": sex, "age_years": [f"{a:.0f}" for a in age], "site": ""})
    return features, table, labels


def test_the_card_half_gives_the_joint_model_and_clinical_data_help():
    features, table, labels = _patients(600)
    encoding = ClinicalEncoding.fit(("age", "sex"), table)
    ids = np.array([f"ISIC_{i:07d}" for i in range(len(labels))])
    x, y, row_ids = with_dropout_copies(features, encoding.encode(table), labels, ids)
    assert x.shape == (1200, 6 + 4) and not x[600:, 6:].any()
    head = fit_linear_head(x, y, row_ids, 2)
    image_half = softmax(features @ head.kernel[:6] + head.bias)  # the Keras model's answer
    entry = encoding.card(head.kernel[6:])
    joint = softmax(np.hstack([features, encoding.encode(table)]) @ head.kernel + head.bias)
    np.testing.assert_allclose(with_clinical(image_half, entry, table), joint, atol=1e-5)
    # nothing known: the image half itself; no entry or no table: unchanged
    np.testing.assert_allclose(with_clinical(image_half, entry, table.assign(
        sex="", age_years="")), image_half, atol=1e-6)
    assert with_clinical(image_half, None, table) is image_half
    assert with_clinical(image_half, entry, None) is image_half
    # on new patients, the clinical data make the answers better (log-loss)
    new_features, new_table, new_labels = _patients(2000, seed=1)
    alone = softmax(new_features @ head.kernel[:6] + head.bias)
    given = with_clinical(alone, entry, new_table)

    def log_loss(p):
        return -np.log(p[np.arange(len(new_labels)), new_labels]).mean()

    assert log_loss(given) < log_loss(alone) - 0.05
    # partial: sex known, age not, lies between the two
    partial = with_clinical(alone, entry, new_table.assign(age_years=""))
    assert log_loss(given) < log_loss(partial) < log_loss(alone)
