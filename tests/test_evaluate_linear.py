"""A logistic head on frozen features: the features stage runs the backbone once; train and
evaluate then run without TensorFlow, and the model train writes (its network, with the
head's weights written into the archive) answers as evaluate computed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stages import augment, download, features, finetune, prepare, split
from stages.core.errors import PipelineError
from stages.core.frozen_features import NETWORK, read_info
from stages.core.inference import as_predict
from stages.core.model_io import load_model, read_card, write_linear_model
from stages.core.paths import PREPARED_DIR, features_dir, model_dir, predictions_file
from stages.core.shards import read_split

REPO = Path(__file__).resolve().parents[1]
WITHOUT_TENSORFLOW = """
import runpy, sys
sys.argv = ["{stage}", "lite0_frozen"]
runpy.run_module("stages.{stage}", run_name="__main__")
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def _run_without_tensorflow(stage: str) -> None:
    env = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)}
    run = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW.format(stage=stage)],
                         env=env, text=True, capture_output=True, check=True)
    assert "tensorflow imported: False" in run.stdout, run.stdout + run.stderr


def test_train_and_evaluate_of_a_linear_head_need_no_tensorflow(in_tmp_repo, params):
    params["data"]["synthetic"].update(count=60, size=48)
    params.update(backbones=["lite0_frozen"], folds=["holdout"])
    params["prepare"]["size"] = 32
    (in_tmp_repo / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in (download, split, prepare, augment):
        stage.main()
    features.main("lite0_frozen")
    _run_without_tensorflow("train")
    finetune.main("lite0_frozen", "holdout")
    card = read_card(model_dir("lite0_frozen", "holdout") / "model.keras")
    assert set(card["linear_head"]) == {"feature_key", "kernel", "bias"}
    assert card["linear_head"]["feature_key"] == read_info("lite0_frozen")["feature_key"]
    _run_without_tensorflow("evaluate")

    # The Keras model train wrote gives what evaluate computed from the features.
    model, _ = load_model(model_dir("lite0_frozen", "holdout") / "model.keras")
    for part in ("test", "val"):
        table = pd.read_csv(predictions_file("lite0_frozen", "holdout", part))
        images = read_split(PREPARED_DIR, part)
        assert list(table["image"]) == list(images.ids)
        np.testing.assert_allclose(as_predict(model)(images.images),
                                   table[["benign", "malignant"]], atol=2e-6)

    # Written twice, the same bytes (DVC sees an unchanged output); a wrong shape is refused.
    network = features_dir("lite0_frozen") / NETWORK
    kernel = np.asarray(card["linear_head"]["kernel"], np.float32)
    bias = np.asarray(card["linear_head"]["bias"], np.float32)
    for name in ("a.keras", "b.keras"):
        write_linear_model(network, in_tmp_repo / name, kernel, bias, card)
    assert (in_tmp_repo / "a.keras").read_bytes() == (in_tmp_repo / "b.keras").read_bytes()
    with pytest.raises(PipelineError, match="'probs' weight 0"):
        write_linear_model(network, in_tmp_repo / "c.keras", kernel[:-1], bias, card)
