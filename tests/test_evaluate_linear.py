"""evaluate of a logistic head on frozen features: computed from the features cache without
TensorFlow, the same predictions as the Keras model gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from stages import augment, download, evaluate, finetune, prepare, split, train
from stages.core.feature_cache import CACHE_DIR
from stages.core.model_io import read_card
from stages.core.paths import model_dir, predictions_file

REPO = Path(__file__).resolve().parents[1]
NO_TENSORFLOW = """
import runpy, sys
sys.argv = ["evaluate", "lite0_frozen"]
runpy.run_module("stages.evaluate", run_name="__main__")
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def test_a_linear_head_is_evaluated_from_the_cache_as_keras_would(in_tmp_repo, params):
    params["data"]["synthetic"].update(count=60, size=48)
    params.update(backbones=["lite0_frozen"], folds=["holdout"])
    params["prepare"]["size"] = 32
    (in_tmp_repo / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in (download, split, prepare, augment):
        stage.main()
    train.main("lite0_frozen", "holdout")
    finetune.main("lite0_frozen", "holdout")
    card = read_card(model_dir("lite0_frozen", "holdout") / "model.keras")
    assert set(card["linear_head"]) == {"feature_key", "kernel", "bias"}

    env = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent)}
    run = subprocess.run([sys.executable, "-c", NO_TENSORFLOW], env=env, text=True,
                         capture_output=True, check=True)
    assert "tensorflow imported: False" in run.stdout, run.stdout + run.stderr
    from_cache = {part: pd.read_csv(predictions_file("lite0_frozen", "holdout", part))
                  for part in ("test", "val")}

    # Without the cache the Keras model runs (and fills the cache again): the same numbers.
    for chunk in CACHE_DIR.rglob("chunk-*.npz"):
        chunk.unlink()
    evaluate.main("lite0_frozen", "holdout")
    for part, table in from_cache.items():
        by_keras = pd.read_csv(predictions_file("lite0_frozen", "holdout", part))
        assert list(by_keras["image"]) == list(table["image"])
        np.testing.assert_allclose(by_keras[["benign", "malignant"]],
                                   table[["benign", "malignant"]], atol=2e-6)
    assert list(CACHE_DIR.rglob("chunk-*.npz"))
