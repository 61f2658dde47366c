"""End to end on other data: the real `dvc repro` of 400 real UDA-1 images in 3-fold
cross-validation, and of a HAM10000-layout folder with three classes (slow)."""

from __future__ import annotations

import pandas as pd
import pytest

from stages.core.params import merged
from tests.conftest import UDA1_DIR
from tests.pipeline_project import TINY, Project

pytestmark = pytest.mark.slow



@pytest.mark.skipif(not UDA1_DIR.exists(), reason=f"{UDA1_DIR} not found (../shared/data)")
def test_cross_validation_on_real_isic_images(tmp_path):
    """The 400 UDA-1 dermoscopy images through every stage: 3-fold CV of two frozen backbones
    with logistic heads (the real-data profiles' kind of model) and their ensemble, 32 px."""
    names = ["lite0_frozen", "lite1_frozen"]
    project = Project.copy_of_repo(tmp_path, merged(TINY, {
        "data": {"source": "local", "local": {"path": str(UDA1_DIR), "layout": "auto"}},
        "backbones": names, "folds": [0, 1, 2], "compare": {"ensemble": names},
    }))
    project.dvc("repro")
    raw = pd.read_csv(project.root / "data/raw/metadata.csv")
    assert len(raw) == 400 and (raw["benign_malignant"] == "malignant").sum() == 114
    assert (project.root / "data/raw/attribution.txt").exists()
    split = pd.read_csv(project.root / "data/interim/split.csv")
    assert len(split) == 400 and set(split["split"]) == {"fold0", "fold1", "fold2"}
    assert (split.groupby("group")["split"].nunique() == 1).all()
    rejected = pd.read_csv(project.root / "data/interim/rejected.csv")
    assert rejected.empty, rejected
    for fold in range(3):  # each fold is scored on its own held-out images
        scores = project.read_json(f"metrics/backbones/lite0_frozen/{fold}.json")
        assert scores["n_images"] == (split["split"] == f"fold{fold}").sum()
    guard = project.read_json("metrics/guard.json")  # real lesions, cross-fitted
    assert guard["not_lesions_flagged"] == 5 and guard["held_out_flagged"] <= 0.05, guard
    summary = project.read_json("metrics/summary.json")
    for name in [*names, "ensemble"]:
        row = summary["scores"][name]
        assert row["folds"] == 3 and "roc_auc_std" in row, name
    aucs = [project.read_json(f"metrics/backbones/lite0_frozen/{k}.json")["roc_auc"]
            for k in range(3)]
    assert summary["scores"]["lite0_frozen"]["roc_auc"] == pytest.approx(sum(aucs) / 3, abs=1e-6)
    assert summary["best"] in names


def _ham10000_folder(root, count: int = 90):
    """A HAM10000-layout folder (three diagnoses, two image folders) of synthetic images."""
    from stages.core.sources.synthetic import generate

    staging = root / "staging"
    meta = generate(staging, count=count, size=48, malignant_fraction=0.3, seed=3)
    ham = root / "HAM10000"
    rows = []
    for k, row in enumerate(meta.itertuples()):
        part = ham / f"HAM10000_images_part_{1 + k % 2}"
        part.mkdir(parents=True, exist_ok=True)
        (staging / f"{row.isic_id}.jpg").rename(part / f"{row.isic_id}.jpg")
        dx = "mel" if row.diagnosis == "melanoma" else ("nv", "bkl")[k % 2]
        rows.append({"lesion_id": row.lesion_id, "image_id": row.isic_id, "dx": dx,
                     "dx_type": "histo", "age": 50, "sex": "male", "localization": "back"})
    pd.DataFrame(rows).to_csv(ham / "HAM10000_metadata.csv", index=False)
    return ham


def test_multiclass_task_on_a_ham10000_folder(tmp_path):
    ham = _ham10000_folder(tmp_path)
    project = Project.copy_of_repo(tmp_path / "repo", merged(TINY, {
        "task": "multiclass",
        "data": {"source": "local", "local": {"path": str(ham), "layout": "auto"}},
        "backbones": ["small_functional_cnn"],
    }))
    project.dvc("repro")
    split = pd.read_csv(project.root / "data/interim/split.csv")
    assert set(split["label"]) == {"melanoma", "nevus", "benign keratosis"}
    meta = pd.read_csv(ham / "HAM10000_metadata.csv")
    lesion_of = dict(zip(meta["image_id"], meta["lesion_id"], strict=True))
    assert (split.groupby(split["isic_id"].map(lesion_of))["split"].nunique() == 1).all()
    predictions = pd.read_csv(
        project.root / "metrics/predictions/small_functional_cnn/holdout/test.csv")
    assert list(predictions.columns) == ["image", "benign keratosis", "melanoma", "nevus"]
    scores = project.read_json("metrics/backbones/small_functional_cnn/holdout.json")
    assert len(scores["confusion_matrix"]["rows_true_cols_pred"]) == 3
