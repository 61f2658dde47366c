"""Adapting the served decision to a new site (stages/app/adapt.py, core/adaptation.py): a new
card beside the original, what both decisions do there, the unusable images reported; and on
real images, a UDA-1 model adapted with 150 HAM10000 images holds on other HAM10000 lesions."""

from __future__ import annotations

import json

import pytest

from stages.app import adapt, predict
from stages.core.sources.synthetic import generate
from tests.conftest import HAM_DIR, UDA1_DIR
from tests.tiny_models import write_trained_repo


def test_adapt_writes_a_new_card_beside_the_original_and_reports_skipped_images(
        tmp_path, monkeypatch, capsys):
    repo = write_trained_repo(tmp_path / "repo", {"small_cnn": 0.9}, 32)
    original = (repo / "models/served.json").read_text()
    site = tmp_path / "clinic"
    generate(site, 60, 64, 0.4, seed=5)
    broken = sorted(site.glob("*.jpg"))[0]
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    monkeypatch.chdir(repo)
    adapt.main(adapt.parse_args([str(site), "--site", "Clinic A", "--bootstrap", "50"]))
    out = capsys.readouterr().out
    assert (repo / "models/served.json").read_text() == original
    card = json.loads((repo / "models/served-Clinic-A.json").read_text())
    assert card["adapted"]["images"] == 59 and card["adapted"]["site"] == "Clinic A"
    assert card["decision"]["from_malignant"] == card["adapted"]["malignant"] > 0
    assert "sensitivity_ci_low" in card["adapted"]["original"]["here"]
    assert "cross-fitted over" in card["estimate"]["how"]
    report = (repo / "models/served-Clinic-A.rejected.csv").read_text()
    assert broken.name in report and "original threshold 0.5000 here" in out
    # the adapted card serves like the original, with its own threshold
    code = predict.main(predict.parse_args([str(site), "--model",
                                            "models/served-Clinic-A.json", "--format", "json"]))
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert code == 0 and rows[0]["refer"]["threshold"] == card["decision"]["threshold"]


@pytest.mark.slow
@pytest.mark.skipif(not (UDA1_DIR.is_dir() and HAM_DIR.is_dir()),
                    reason="needs ../shared/data/isic-uda1-dev and ham10000-dev")
def test_a_uda1_decision_adapted_with_150_ham10000_images_holds_on_other_ham10000_lesions():
    from stages.core.adaptation import adapt_card, site_folds
    from stages.core.calibration import apply_temperature
    from stages.core.served import Predictions, decision_with_intervals
    from stages.core.sources.local import read_source
    from tests.real_lesion_model import fit_lesion_model, malignant

    uda, _ = read_source(UDA1_DIR)
    ham, _ = read_source(HAM_DIR)
    lesions = ham["lesion_id"].drop_duplicates().sample(frac=1.0, random_state=0)
    site = ham[ham["lesion_id"].isin(set(lesions[:120]))].head(150)
    check = ham[~ham["lesion_id"].isin(set(site["lesion_id"]))].sample(400, random_state=1)
    model = fit_lesion_model(uda)
    labels = malignant(site)
    adapted = adapt_card(model.card, Predictions(
        site["isic_id"].to_numpy(), labels, model.probs(site),
        site_folds(labels, site["lesion_id"], 5, 0)), "HAM10000 (143 images)", 1000, 0)
    estimate = adapted["estimate"]["referral"]
    ratio = adapted["calibration"]["temperature"] / model.card["calibration"]["temperature"]
    refer = (apply_temperature(model.probs(check), ratio)[:, 1]
             >= adapted["decision"]["threshold"])
    achieved = decision_with_intervals(malignant(check) == 1, refer, 1000, 0)
    assert achieved["sensitivity"] >= 0.85 - 0.05, achieved  # ~190 malignant: sd ~0.025
    for key in ("sensitivity", "specificity"):  # the site estimate agrees with other lesions
        assert (achieved[f"{key}_ci_low"] <= estimate[f"{key}_ci_high"]
                and estimate[f"{key}_ci_low"] <= achieved[f"{key}_ci_high"]), (key, achieved)


def test_a_site_folder_of_one_kind_only_is_refused_with_the_reason(tmp_path, monkeypatch):
    from stages.core.errors import PipelineError
    repo = write_trained_repo(tmp_path / "repo", {"small_cnn": 0.9}, 32)
    site = tmp_path / "benign_only"
    meta = generate(site, 12, 64, 0.3, seed=3)
    meta.assign(benign_malignant="benign", diagnosis="nevus").to_csv(site / "metadata.csv",
                                                                     index=False)
    monkeypatch.chdir(repo)
    with pytest.raises(PipelineError, match="0 of 12 usable images are malignant"):
        adapt.main(adapt.parse_args([str(site), "--site", "x", "--bootstrap", "0"]))


def test_an_adapted_card_predicts_the_same_classes_with_its_biases_rescaled():
    """The class biases decide the class on the calibrated log-probabilities; a site's
    temperature T2 scales those, so the adapted card's biases are b / T2 and every photo keeps
    its predicted class."""
    import numpy as np

    from stages.core.adaptation import adapt_card
    from stages.core.calibration import apply_temperature
    from stages.core.class_decision import decide
    from stages.core.served import Predictions

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    score = np.clip(0.5 + 0.25 * (labels - 0.5) + rng.normal(0, 0.3, 120), 0.01, 0.99) ** 3
    probs = np.column_stack([1 - score, score])  # overconfident: the site's T2 is not 1
    card = {"name": "m", "classes": ["benign", "malignant"],
            "calibration": {"method": "temperature", "temperature": 1.5},
            "decision": {"refer_classes": ["malignant"], "threshold": 0.3,
                         "target_sensitivity": 0.85, "confidence": None,
                         "class_bias": [0.0, 0.8]}}
    adapted = adapt_card(card, Predictions(np.arange(120).astype(str), labels, probs,
                                           np.arange(120) % 5), "site", 50, 0)
    t2 = adapted["calibration"]["temperature"] / 1.5
    assert abs(t2 - 1) > 0.05
    np.testing.assert_allclose(adapted["decision"]["class_bias"], [0.0, 0.8 / t2], atol=1e-6)
    np.testing.assert_array_equal(
        decide(apply_temperature(probs, t2), adapted["decision"]["class_bias"]),
        decide(probs, [0.0, 0.8]))
