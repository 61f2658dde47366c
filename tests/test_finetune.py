"""finetune with `epochs: 0` (the frozen-feature models): the head model is the model, copied
without TensorFlow, with the model's one training curve."""

import json
import subprocess
import sys

import pytest

from stages.finetune import keep_head
from tests.conftest import REPO


def test_keep_head_copies_the_model_its_card_and_the_train_curve(tmp_path):
    head = tmp_path / "models/b/holdout/head.keras"
    head.parent.mkdir(parents=True)
    head.write_bytes(b"model bytes")
    head.with_suffix(".json").write_text('{"classes": ["benign", "malignant"]}')
    train_log, log = tmp_path / "train", tmp_path / "finetune"
    (train_log / "plots/metrics").mkdir(parents=True)
    (train_log / "plots/metrics/inner_cv_log_loss.tsv").write_text("step\tinner_cv_log_loss\n")
    (log / "plots/metrics").mkdir(parents=True)
    (log / "plots/metrics/stale.tsv").write_text("from an earlier run")
    model = head.with_name("model.keras")
    keep_head(head, model, train_log, log)
    assert model.read_bytes() == b"model bytes"
    assert json.loads(model.with_suffix(".json").read_text())["classes"] == ["benign",
                                                                           "malignant"]
    assert json.loads((log / "metrics.json").read_text()) == {"epochs": 0}
    assert sorted(p.name for p in (log / "plots/metrics").iterdir()) == [
        "inner_cv_log_loss.tsv"]


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
