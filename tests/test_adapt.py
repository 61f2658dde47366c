"""Adapting the served decision to a new site (stages/app/adapt.py, core/adaptation.py): a new
card beside the original, what both decisions do there, the unusable images reported; and on
real images, a UDA-1 model adapted with 150 HAM10000 images holds on other HAM10000 lesions."""

from __future__ import annotations

import json

import numpy as np
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
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from stages.core import lite
    from stages.core.adaptation import adapt_card, site_folds
    from stages.core.calibration import apply_temperature, fit_temperature, guaranteed_threshold
    from stages.core.images import load_image
    from stages.core.served import Predictions, decision_with_intervals
    from stages.core.sources.local import read_source

    size = 128
    uda, _ = read_source(UDA1_DIR)
    ham, _ = read_source(HAM_DIR)
    lesions = ham["lesion_id"].drop_duplicates().sample(frac=1.0, random_state=0)
    site = ham[ham["lesion_id"].isin(set(lesions[:120]))].head(150)
    check = ham[~ham["lesion_id"].isin(set(site["lesion_id"]))].sample(400, random_state=1)
    base = lite.build_efficientnet_lite("lite0", (size, size, 3), include_top=False,
                                        pooling="avg")
    lite.load_imagenet_weights(base, "lite0")

    def features(paths) -> np.ndarray:
        images = np.stack([load_image(p, size) for p in paths]).astype("float32")
        return base.predict(images, batch_size=32, verbose=0)

    def malignant(frame) -> np.ndarray:
        return (frame["benign_malignant"] == "malignant").to_numpy().astype(int)

    head = LogisticRegression(C=0.1, max_iter=2000)
    uda_features, uda_labels = features(uda["image_path"]), malignant(uda)
    oof = cross_val_predict(head, uda_features, uda_labels, cv=5, method="predict_proba")
    temperature = round(fit_temperature(uda_labels, oof), 4)
    threshold = guaranteed_threshold(uda_labels == 1, apply_temperature(oof, temperature)[:, 1],
                                     0.85, 0.95).threshold
    head.fit(uda_features, uda_labels)
    card = {"name": "UDA-1 lite0", "classes": ["benign", "malignant"],
            "calibration": {"method": "temperature", "temperature": temperature},
            "decision": {"refer_classes": ["malignant"], "threshold": threshold,
                         "target_sensitivity": 0.85, "confidence": 0.95}}

    def probs(frame) -> np.ndarray:
        return apply_temperature(head.predict_proba(features(frame["image_path"])), temperature)

    labels = malignant(site)
    adapted = adapt_card(card, Predictions(site["isic_id"].to_numpy(), labels, probs(site),
                                           site_folds(labels, site["lesion_id"], 5, 0)),
                         "HAM10000 (150 images)", 1000, 0)
    estimate = adapted["estimate"]["referral"]
    check_labels, check_probs = malignant(check), probs(check)
    ratio = adapted["calibration"]["temperature"] / temperature
    refer = (apply_temperature(check_probs, ratio)[:, 1] >= adapted["decision"]["threshold"])
    achieved = decision_with_intervals(check_labels == 1, refer, 0, 0)
    assert achieved["sensitivity"] >= 0.85 - 0.05, achieved  # ~190 malignant: sd ~0.025
    for key in ("sensitivity", "specificity"):  # the site estimate's interval holds elsewhere
        assert estimate[f"{key}_ci_low"] <= achieved[key] <= estimate[f"{key}_ci_high"], key


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
