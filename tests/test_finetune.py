"""finetune with `epochs: 0` (the frozen-feature models): the head model is the model, copied
without TensorFlow, with the model's one training curve."""

import json
import subprocess
import sys

import pytest

from stages.core.paths import head_file, model_dir, plots_dir, training_summary_file
from stages.finetune import keep_head
from tests.conftest import REPO


def test_keep_head_copies_the_model_its_card_and_the_train_curve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    head = head_file("b", "holdout")
    head.parent.mkdir(parents=True)
    head.write_bytes(b"model bytes")
    head.with_suffix(".json").write_text('{"classes": ["benign", "malignant"]}')
    train_curves = plots_dir("b", "train") / "holdout"
    curves = plots_dir("b", "finetune") / "holdout"
    train_curves.mkdir(parents=True)
    (train_curves / "inner_cv_log_loss.tsv").write_text("step\tinner_cv_log_loss\n")
    curves.mkdir(parents=True)
    (curves / "stale.tsv").write_text("from an earlier run")
    keep_head("b", "holdout")
    model = model_dir("b", "holdout") / "model.keras"
    assert model.read_bytes() == b"model bytes"
    assert json.loads(model.with_suffix(".json").read_text())["classes"] == ["benign",
                                                                           "malignant"]
    summary = training_summary_file("b", "finetune", "holdout")
    assert json.loads(summary.read_text()) == {"epochs": 0}
    assert sorted(p.name for p in curves.iterdir()) == ["inner_cv_log_loss.tsv"]


@pytest.mark.parametrize("stage", ["download", "split", "prepare", "augment", "finetune",
                                   "compare"])
def test_stages_that_run_no_network_do_not_import_tensorflow(stage):
    """Starting TensorFlow costs seconds per process; these stages (finetune with no epochs,
    augment with nothing to draw) need none."""
    code = (f"import sys, stages.{stage}; "
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False"
