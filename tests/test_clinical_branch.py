"""The clinical branch of a gradient-trained model (core/clinical_branch.py): metadata dropout
in the training batches, and train → finetune → evaluate → predict of a scratch CNN with
clinical inputs, answering photos with all, some or none of their clinical data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stages.core.clinical import ClinicalEncoding
from stages.core.clinical_branch import CLINICAL, DROPOUT, INPUTS, joined_model
from stages.core.fold_data import epoch_batches
from stages.core.model_io import load_model, read_card
from stages.core.paths import PREPARED_DIR, SPLIT_FILE, head_file, model_dir, predictions_file
from stages.core.predictor import Predictor
from stages.core.shards import clinical_table, read_split
from tests.test_clinical_pipeline import clinical_project
from tests.tiny_problem import tiny_data

MODEL = model_dir("small_cnn", "holdout") / "model.keras"


def _clinical_rows(split, epochs: int, first_epoch: int = 0) -> list[np.ndarray]:
    rows = np.arange(1, 1 + len(split.labels), dtype=np.float32)[:, None]  # row i: i + 1
    batches, _ = epoch_batches(split, 2, 16, 7, first_epoch, epochs, clinical=rows)
    return [x[CLINICAL].numpy()[:, 0] for x, _ in batches]


def test_metadata_dropout_hides_half_the_rows_the_same_way_after_a_resume():
    train, _ = tiny_data(200)
    batches, _ = epoch_batches(train, 2, 16, 7, 0, 1, clinical=np.ones((200, 3), np.float32))
    x, _ = next(iter(batches))
    assert set(x) == {INPUTS, CLINICAL} and x[INPUTS].shape == (16, 8, 8, 3)
    shown = np.concatenate(_clinical_rows(train, 2))
    assert abs((shown == 0).mean() - DROPOUT) < 0.1  # hidden rows are zero (unknown)
    assert set(shown[shown > 0]) <= set(range(1, 201))  # the others are each image's own
    assert np.array_equal(np.concatenate(_clinical_rows(train, 2)), shown)  # seeded
    first_epoch = sum(len(b) for b in _clinical_rows(train, 1))
    assert np.array_equal(np.concatenate(_clinical_rows(train, 2, first_epoch=1)),
                          shown[first_epoch:])  # a resumed run draws what it would have


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return clinical_project(tmp_path_factory.mktemp("clinical-branch"), "small_cnn", {
        "small_cnn": {"train": {"epochs": 8, "lr": 1.0e-2, "batch_size": 16},
                      "finetune": {"epochs": 2, "batch_size": 16}}})


def test_the_clinical_half_trains_in_train_and_finetune_into_the_card(project, monkeypatch):
    monkeypatch.chdir(project)
    head, model = read_card(head_file("small_cnn", "holdout")), read_card(MODEL)
    assert head["clinical"]["columns"] == model["clinical"]["columns"] == [
        "age_known", "age", "sex=male", "sex=female", "site=back", "site=face",
        "site=lower extremity"]
    age = head["clinical"]["columns"].index("age")
    coefficients = np.asarray(head["clinical"]["coefficients"])  # (columns, classes)
    # the synthetic patients: older is more often malignant
    assert coefficients[age, 1] - coefficients[age, 0] > 0.05, coefficients
    assert model["clinical"]["coefficients"] != head["clinical"]["coefficients"]  # trained on
    for part in ("test", "test_image_only", "val", "val_image_only"):
        assert predictions_file("small_cnn", "holdout", part).exists(), part
    labels = pd.read_csv(SPLIT_FILE).set_index("isic_id")["label"]

    def log_loss(part: str) -> float:
        p = pd.read_csv(predictions_file("small_cnn", "holdout", part))
        malignant = (labels.loc[p["image"]] == "malignant").to_numpy()
        return -np.log(np.where(malignant, p["malignant"], p["benign"]).clip(1e-9)).mean()

    assert log_loss("test") < log_loss("test_image_only")  # age and sex carry the label here
    scores = json.loads((project / "metrics/backbones/small_cnn/holdout.json").read_text())
    assert 0 <= scores["roc_auc"] <= 1


def test_the_saved_image_model_and_card_answer_as_the_joined_model(project, monkeypatch):
    monkeypatch.chdir(project)
    network, card = load_model(MODEL)
    joined = joined_model(network, len(card["clinical"]["columns"]),
                          card["clinical"]["coefficients"])
    test = read_split(PREPARED_DIR, "test")
    table = clinical_table(test.ids)
    rows = ClinicalEncoding.from_card(card["clinical"]).encode(table)
    expected = np.asarray(joined({INPUTS: test.images.astype(np.float32), CLINICAL: rows}))
    predictor = Predictor.load(MODEL)
    assert predictor.clinical_inputs == ["age", "sex", "site"]
    np.testing.assert_allclose(predictor.predict(test.images, clinical=table), expected,
                               atol=1e-5)
    given = pd.read_csv(predictions_file("small_cnn", "holdout", "test"))
    np.testing.assert_allclose(given[["benign", "malignant"]], expected, atol=1e-5)
    # a photo with none of its clinical data: the image model alone; with some: a third answer
    alone = predictor.predict(test.images)
    np.testing.assert_allclose(alone, np.asarray(network(test.images.astype(np.float32))),
                               atol=1e-5)
    partial = predictor.predict(test.images, clinical=table.assign(age_years="", site=""))
    assert not np.allclose(partial, expected, atol=1e-4)
    assert not np.allclose(partial, alone, atol=1e-4)
