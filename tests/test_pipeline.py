"""End to end: the real `dvc repro` on a tiny configuration (slow: about two minutes)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from stages.compare import COLUMNS
from tests.browser import chromium
from tests.pipeline_project import TINY, Project

pytestmark = pytest.mark.slow

METRIC_KEYS = {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc",
               "average_precision", "sensitivity", "specificity", "confusion_matrix"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    project = Project.copy_of_repo(tmp_path_factory.mktemp("pipeline"), TINY)
    project.dvc("repro")
    project.git("add", "-A")
    project.git("commit", "-qm", "first repro")
    return project



def test_repro_writes_every_declared_output(project):
    root = project.root
    assert len(pd.read_csv(root / "data/raw/metadata.csv")) == 80
    split = pd.read_csv(root / "data/interim/split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    assert (split.groupby("group")["split"].nunique() == 1).all()
    assert list((root / "data/processed/prepared").glob("train-*.npz"))
    assert list((root / "data/processed/augmented").glob("train-*.npz"))
    for name in TINY["backbones"]:
        for path in (f"models/heads/{name}/holdout/head.keras",
                     f"models/{name}/holdout/model.keras",
                     f"metrics/plots/{name}/roc/holdout.json",
                     f"metrics/plots/{name}/confusion/holdout.csv",
                     f"metrics/training/{name}/train/holdout.json"):
            assert (root / path).exists(), path
        scores = project.read_json(f"metrics/backbones/{name}/holdout.json")
        assert set(scores) >= METRIC_KEYS, name
        assert 0.0 <= scores["roc_auc"] <= 1.0
        for part in ("test", "val"):
            predictions = pd.read_csv(root / f"metrics/predictions/{name}/holdout/{part}.csv")
            assert list(predictions.columns) == ["image", "benign", "malignant"]
            assert len(predictions) == (split["split"] == part).sum()
        assert (root / "models/guard/ood.npz").exists()
        assert (root / f"metrics/subgroups/{name}/holdout.json").exists()
    summary = project.read_json("metrics/summary.json")
    assert summary["best"] in TINY["backbones"]
    # the served scratch CNN is guarded like any model: the cat, coffee, ... are flagged
    guard = project.read_json("metrics/guard.json")
    assert guard["not_lesions_flagged"] == 5 and guard["held_out_flagged"] <= 0.05, guard
    served = project.read_json("models/served.json")
    assert served["ood"]["extractor"] == "lite0"
    # The served backbone is the best on the validation images (never chosen on its test
    # ones), and its estimate is its own test score.
    labels = split.set_index("isic_id")["label"]
    val_auc = {}
    for name in TINY["backbones"]:
        val = pd.read_csv(root / f"metrics/predictions/{name}/holdout/val.csv")
        val_auc[name] = roc_auc_score(labels.loc[val["image"]] == "malignant", val["malignant"])
    [chosen] = [m["backbone"] for m in served["members"]]
    assert chosen == max(val_auc, key=val_auc.get), val_auc
    assert served["estimate"]["roc_auc"] == pytest.approx(
        summary["scores"][chosen]["roc_auc"], abs=1e-4)
    assert (root / "metrics/plots/served/reliability.json").exists()
    assert "| 1 |" in (root / "metrics/leaderboard.md").read_text()
    for path in ("saved_model/saved_model.pb", "model.tflite", "model.json"):
        assert (root / "models/export" / path).exists(), path
    assert "up to date" in project.dvc("status").stdout


def test_metrics_plots_and_dag_list_every_backbone(project):
    shown = project.dvc("metrics", "show", "--json").stdout
    for name in TINY["backbones"]:
        assert f"metrics/backbones/{name}/holdout.json" in shown
    plots = project.dvc("plots", "show", "--json").stdout
    for name in TINY["backbones"]:
        for plot in ("roc/holdout.json", "precision_recall/holdout.json",
                     "confusion/holdout.csv"):
            assert f"metrics/plots/{name}/{plot}" in plots, plot
        assert f"metrics/plots/{name}/finetune/holdout/" in plots
    dag = project.dvc("dag", "--md").stdout
    for stage in ("download", "split", "prepare", "augment", "train@small_cnn",
                  "finetune@small_cnn", "evaluate@small_cnn", "compare", "export"):
        assert stage in dag, stage


def test_plots_render_offline_with_every_model_in_one_roc_chart(project, tmp_path):
    """`dvc plots show` as a user runs it, opened in headless Chromium on a machine with no
    route to a CDN: every chart must be drawn from the inlined Vega."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    project.dvc("plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots/index.html").read_text()
    assert "cdn.jsdelivr.net" not in page and "ROC of every model" in page
    charts = page.count("vegaEmbed(")
    browser = chromium(tmp_path / "profile", height=1400)
    try:
        browser.get((tmp_path / "plots/index.html").as_uri())
        WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(
            By.CSS_SELECTOR, ".vega-embed canvas, .vega-embed svg")) >= charts)
        overlay = browser.find_element(By.XPATH, "//div[contains(@id, 'roc_all')]")
        browser.execute_script("arguments[0].scrollIntoView()", overlay)
        shot = tmp_path / "roc_all.png"
        overlay.screenshot(str(shot))
    finally:
        browser.quit()
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.std() > 10, "the overlay chart is blank"


def test_one_backbone_change_reruns_only_its_stages_and_compare(project):
    project.set_params({"models": {"small_cnn": {"finetune": {"lr": 1.0e-3}}}})
    status = project.dvc("status", "--json").stdout
    assert set(json.loads(status)) == {"finetune@small_cnn"}
    served_before = project.read_json("models/served.json")
    ran = project.stages_run(project.dvc("repro").stdout)
    # export follows the served model: it reruns only when models/served.json changed
    served_changed = project.read_json("models/served.json") != served_before
    assert ran == {"finetune@small_cnn", "evaluate@small_cnn", "compare",
                   *(["export"] if served_changed else [])}
    project.git("add", "-A")
    project.git("commit", "-qm", "small_cnn: finetune lr 1e-3")

    diff = json.loads(project.dvc("metrics", "diff", "HEAD~1", "--json").stdout)
    changed = diff.get("metrics/backbones/small_cnn/holdout.json", {})
    assert changed, f"no metric changed for small_cnn: {diff}"
    assert "metrics/backbones/small_functional_cnn/holdout.json" not in diff
    # compare's summary moves with it: every leaderboard column that changed for small_cnn
    summary = diff.get("metrics/summary.json", {})
    moved = {k for k in changed if k in COLUMNS}
    assert moved and all(f"scores.small_cnn.{k}" in summary for k in moved), summary


def test_augment_change_reruns_augment_and_everything_after(project):
    project.set_params({"augment": {"hue": 0.05}})
    assert set(json.loads(project.dvc("status", "--json").stdout)) == {"augment"}
    ran = project.stages_run(project.dvc("repro").stdout)
    # (features@<b> of these scratch CNNs reruns too, in a second: nothing to compute)
    after_augment = {"augment", "compare", "export"} | {
        f"{stage}@{name}" for stage in ("train", "finetune", "evaluate")
        for name in TINY["backbones"]} | {f"features@{name}" for name in TINY["backbones"]}
    assert ran == after_augment
    project.git("add", "-A")
    project.git("commit", "-qm", "augment: hue 0.05")


def test_training_is_reproducible_on_cpu(project):
    path = "metrics/backbones/small_functional_cnn/holdout.json"
    before = project.read_json(path)
    project.dvc("repro", "--force", "--single-item", "train@small_functional_cnn")
    # Same weights, same bytes (no save date in the .keras file): nothing downstream is stale.
    assert "up to date" in project.dvc("status").stdout
    ran = project.stages_run(project.dvc("repro").stdout)
    assert ran == set()
    assert project.read_json(path) == before
