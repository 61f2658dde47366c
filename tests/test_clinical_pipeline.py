"""Clinical inputs through the real stages (train → evaluate), predict and the web API: a
photo with all, some or none of its clinical data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from stages import augment, download, evaluate, features, finetune, prepare, split, train
from stages.app import predict, serve
from stages.core.errors import PipelineError
from stages.core.model_io import read_card
from stages.core.params import merged
from stages.core.paths import PREPARED_DIR, SPLIT_FILE, model_dir, predictions_file
from stages.core.predictor import Predictor
from stages.core.shards import clinical_table, read_split
from tests.tiny_models import REPO

MODEL = model_dir("lite0_frozen", "holdout") / "model.keras"


def _with_clinical_data(table: pd.DataFrame) -> pd.DataFrame:
    """Synthetic patients whose age and sex say much about the label (the synthetic source
    has no clinical data), some of it missing."""
    rng = np.random.default_rng(0)
    malignant = (table["label"] == "malignant").to_numpy()
    age = np.where(malignant, rng.normal(68, 8, len(table)), rng.normal(38, 8, len(table)))
    table["age_years"] = [f"{a:.0f}" for a in age]
    table["sex"] = np.where(malignant ^ (rng.uniform(size=len(table)) < 0.2), "male", "female")
    table["site"] = rng.choice(["back", "face", "lower extremity"], len(table))
    table.loc[rng.uniform(size=len(table)) < 0.15, "age_years"] = ""
    return table


def clinical_project(root: Path, backbone: str, models: dict | None = None) -> Path:
    """A tiny synthetic project in `root` whose patients' age and sex carry the label, run
    through the stages for one backbone with clinical inputs (`models`: its settings)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"]["synthetic"].update(count=80, size=48)
        params.update(backbones=[backbone], folds=["holdout"])
        params["prepare"]["size"] = 32
        params["clinical"]["inputs"] = ["age", "sex", "site"]
        params["models"] = merged(params["models"], models or {})
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        download.main()
        split.main()
        _with_clinical_data(pd.read_csv(SPLIT_FILE, dtype=str, keep_default_na=False)).to_csv(
            SPLIT_FILE, index=False)
        for stage in (prepare, augment):
            stage.main()
        for stage in (features, train, finetune, evaluate):
            stage.main(backbone)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return clinical_project(tmp_path_factory.mktemp("clinical"), "lite0_frozen")


def test_the_card_holds_the_clinical_half_and_evaluate_scores_both(project, monkeypatch):
    monkeypatch.chdir(project)
    card = read_card(MODEL)
    assert card["clinical"]["columns"] == ["age_known", "age", "sex=male", "sex=female",
                                           "site=back", "site=face", "site=lower extremity"]
    given = pd.read_csv(predictions_file("lite0_frozen", "holdout", "test"))
    alone = pd.read_csv(predictions_file("lite0_frozen", "holdout", "test_image_only"))
    labels = (pd.read_csv(SPLIT_FILE).set_index("isic_id").loc[given["image"], "label"]
              == "malignant").to_numpy()

    def log_loss(p):
        return -np.log(np.where(labels, p["malignant"], p["benign"]).clip(1e-9)).mean()

    assert log_loss(given) < log_loss(alone)  # age and sex carry the label here
    scores = json.loads((project / "metrics/backbones/lite0_frozen/holdout.json").read_text())
    assert 0 <= scores["roc_auc"] <= 1


def test_predictor_answers_with_all_some_or_none_of_the_clinical_data(project, monkeypatch):
    monkeypatch.chdir(project)
    predictor = Predictor.load(MODEL)
    assert predictor.clinical_inputs == ["age", "sex", "site"]
    test = read_split(PREPARED_DIR, "test")
    table = clinical_table(test.ids)
    given = pd.read_csv(predictions_file("lite0_frozen", "holdout", "test"))
    alone = pd.read_csv(predictions_file("lite0_frozen", "holdout", "test_image_only"))
    np.testing.assert_allclose(predictor.predict(test.images, clinical=table),
                               given[["benign", "malignant"]], atol=1e-5)
    np.testing.assert_allclose(predictor.predict(test.images),
                               alone[["benign", "malignant"]], atol=1e-5)
    partial = predictor.predict(test.images, clinical=table.assign(age_years="", site=""))
    assert not np.allclose(partial, given[["benign", "malignant"]], atol=1e-4)
    assert not np.allclose(partial, alone[["benign", "malignant"]], atol=1e-4)


def _photos(project, tmp_path, n: int = 4):
    """Test images as files, and a metadata.csv beside them in the isic-cli layout."""
    test = read_split(project / PREPARED_DIR, "test")
    folder = tmp_path / "photos"
    folder.mkdir()
    for image_id, pixels in zip(test.ids[:n], test.images[:n], strict=True):
        Image.fromarray(pixels).save(folder / f"{image_id}.png")
    return folder, test.ids[:n]


def test_predict_reads_a_metadata_csv_beside_the_photos(project, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(project)
    folder, ids = _photos(project, tmp_path)
    table = pd.read_csv(SPLIT_FILE, dtype=str, keep_default_na=False).set_index("isic_id")

    def answers(*extra):
        assert predict.main(predict.parse_args([str(folder), "--model", str(MODEL),
                                                "--format", "json", *extra])) == 0
        out = json.loads(capsys.readouterr().out)
        return out, [r["probabilities"]["malignant"] for r in out["predictions"]]

    without, p_without = answers()
    assert without["clinical_from"] == [] and without["clinical_inputs"] == [
        "age", "sex", "site"]
    pd.DataFrame({"isic_id": ids, "age_approx": table.loc[ids, "age_years"].to_numpy(),
                  "sex": table.loc[ids, "sex"].to_numpy(),
                  "anatom_site_general": table.loc[ids, "site"].to_numpy()}).to_csv(
        folder / "metadata.csv", index=False)
    with_csv, p_with = answers()
    assert with_csv["clinical_from"] == [str(folder / "metadata.csv")]
    expected = Predictor.load(MODEL).predict(
        np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in sorted(ids)]),
        clinical=table.loc[sorted(ids), ["sex", "age_years", "site"]].reset_index(drop=True))
    np.testing.assert_allclose(p_with, expected[:, 1], atol=1e-5)
    assert not np.allclose(p_with, p_without, atol=1e-4)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,age\nx,3\n")
    with pytest.raises(PipelineError, match="bad.csv: no image id column"):
        answers("--clinical", str(bad))


def test_the_api_takes_optional_age_sex_and_site(project, tmp_path):
    folder, ids = _photos(project, tmp_path, n=1)
    data = (folder / f"{ids[0]}.png").read_bytes()
    client = serve.create_app(models_dir=project / "models",
                              summary_path=project / "metrics/summary.json").test_client()

    def ask(**fields):
        response = client.post("/api/predict", data={"image": (io.BytesIO(data), "x.png"),
                                                     "backbone": "lite0_frozen", **fields})
        return response.status_code, response.get_json()

    status, none = ask()
    assert status == 200 and none["clinical_given"] == {}
    status, some = ask(age="72", sex="male")
    assert status == 200 and some["clinical_given"] == {"age": "72", "sex": "male"}
    assert some["probabilities"] != none["probabilities"]
    assert ask(age="old")[0] == 400 and "age 'old'" in ask(age="old")[1]["error"]
    assert ask(sex="x")[0] == 400


def test_the_batch_api_takes_a_metadata_csv(project, tmp_path):
    folder, ids = _photos(project, tmp_path, n=3)
    table = pd.read_csv(project / SPLIT_FILE, dtype=str, keep_default_na=False).set_index(
        "isic_id")
    metadata = pd.DataFrame({"image_id": ids, "age": table.loc[ids, "age_years"].to_numpy(),
                             "sex": table.loc[ids, "sex"].to_numpy()}).to_csv(index=False)
    client = serve.create_app(models_dir=project / "models",
                              summary_path=project / "metrics/summary.json").test_client()

    def ask(**extra):
        uploads = [(io.BytesIO((folder / f"{i}.png").read_bytes()), f"{i}.png") for i in ids]
        response = client.post("/api/predict-batch", data={"images": uploads,
                                                           "backbone": "lite0_frozen", **extra})
        return response.status_code, response.get_json()

    _, plain = ask()
    status, given = ask(metadata=(io.BytesIO(metadata.encode()), "metadata.csv"))
    assert status == 200
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        images = np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in ids])
        expected = Predictor.load(MODEL).predict(images, clinical=table.loc[
            ids, ["sex", "age_years"]].assign(site="").reset_index(drop=True))
    np.testing.assert_allclose([p["probabilities"]["malignant"] for p in given["predictions"]],
                               expected[:, 1], atol=1e-5)
    assert [p["probabilities"] for p in given["predictions"]] != [
        p["probabilities"] for p in plain["predictions"]]
    status, bad = ask(metadata=(io.BytesIO(b"name,age\nx,3\n"), "mine.csv"))
    assert status == 400 and "mine.csv: no image id column" in bad["error"]
