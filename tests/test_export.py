"""Stage export: SavedModel and TFLite answer like the Keras model they came from."""

import hashlib
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from stages import export
from stages.core.layers import CaffeScaling
from stages.core.model_io import load_model, write_model
from stages.core.params import ParamsError
from stages.core.predictor import Predictor
from tests.tiny_models import (
    spread_outputs,
    tiny_classifier,
    varied_images,
    write_served,
    write_tiny_model,
)

# float32 TFLite is the same arithmetic in another order; float16 weights round each weight
# to 11 significant bits.
TOLERANCE = {False: 1e-4, True: 1e-2}


def _images(size: int) -> np.ndarray:
    return varied_images(6, size, seed=5).astype(np.float32)


def _check(model: keras.Model, out_dir, float16: bool) -> dict[str, float]:
    images = _images(model.input_shape[1])
    want = model.predict(images, verbose=0)
    # Spread and unsaturated, or the comparison would prove nothing.
    assert want.std() > 0.01 and np.any((want > 0.02) & (want < 0.98)), want
    loaded = tf.saved_model.load(str(out_dir / "saved_model"))  # kept: it owns the variables
    saved = loaded.serve(tf.constant(images)).numpy()
    lite = export.tflite_predict(out_dir / "model.tflite", images)
    gaps = {"saved_model": float(np.abs(saved - want).max()),
            "tflite": float(np.abs(lite - want).max())}
    assert gaps["saved_model"] < 1e-5, gaps
    assert gaps["tflite"] < TOLERANCE[float16], gaps
    print(f"max |p - p_keras|: {gaps}")  # -s shows the figures
    return gaps


@pytest.mark.parametrize(("backbone", "size", "weights", "float16"), [
    ("small_cnn", 32, None, False),
    ("small_functional_cnn", 32, None, False),
    ("small_functional_cnn", 32, None, True),
    # The default model, exported the default way. ImageNet weights (offline, from pip):
    # with random ones its features are ~1e-12 and every answer is exactly 0.5. Slow: its
    # graph takes ~12 s to trace and convert.
    pytest.param("efficientnet_lite0", 64, "imagenet", True, marks=pytest.mark.slow),
])
def test_exported_models_match_keras(tmp_path, backbone, size, weights, float16):
    path = write_tiny_model(tmp_path, backbone, image_size=size, weights=weights)
    model, card = load_model(path)  # exported from the saved file, as the stage does
    export.export_model(model, card, tmp_path / "export", float16)
    _check(model, tmp_path / "export", float16)
    exported_card = json.loads((tmp_path / "export/model.json").read_text())
    assert exported_card["classes"] == card["classes"]
    assert exported_card["tflite_float16"] is float16


@pytest.mark.slow  # two processes importing TensorFlow: ~20 s
def test_the_same_model_exports_to_the_same_bytes(tmp_path):
    # Each export in its own process, as two `dvc repro` runs are (in one process TensorFlow
    # numbers its traced functions on). Keras' model.export ordered the variables anew in
    # each process, Dropout's seed state was drawn anew, the fingerprint's uuid was random.
    path = write_tiny_model(tmp_path, "small_cnn", image_size=32, weights=None)
    script = ("import sys; from pathlib import Path; from stages import export; "
              "from stages.core.model_io import load_model; "
              "model, card = load_model(Path(sys.argv[1])); "
              "export.export_model(model, card, Path(sys.argv[2]), False)")
    digests = []
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / name)],
                       check=True, capture_output=True)
        digests.append({str(f.relative_to(tmp_path / name)): hashlib.sha256(
            f.read_bytes()).hexdigest() for f in (tmp_path / name).rglob("*") if f.is_file()})
    assert "saved_model/fingerprint.pb" in digests[0]
    assert digests[0] == digests[1]
    loaded = tf.saved_model.load(str(tmp_path / "b/saved_model"))  # still a valid SavedModel
    assert loaded.serve(tf.constant(_images(32))).shape == (6, 2)


def test_custom_caffe_scaling_layer_exports(tmp_path):
    """ResNet50 and VGG16 put our CaffeScaling layer in the graph; a tiny stand-in model."""
    inputs = keras.Input((16, 16, 3))
    x = CaffeScaling()(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="probs")(x)
    spread_outputs(model := keras.Model(inputs, outputs))
    write_model(model, tmp_path / "m/model.keras", {"classes": ["a", "b"]})
    model, card = load_model(tmp_path / "m/model.keras")
    export.export_model(model, card, tmp_path / "export", float16=False)
    _check(model, tmp_path / "export", float16=False)


def test_stage_exports_the_served_ensemble_as_one_calibrated_graph(in_tmp_repo, capsys):
    for backbone in ("small_cnn", "small_functional_cnn"):
        write_tiny_model(in_tmp_repo, backbone, image_size=32)
    write_served(in_tmp_repo, ["small_cnn", "small_functional_cnn"], temperature=1.7,
                 class_bias=[0.0, 0.7])
    (in_tmp_repo / "params.yaml").write_text("export:\n  float16: true\n")
    stale = in_tmp_repo / "models/export/old.tflite"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")
    export.main()
    out = in_tmp_repo / "models/export"
    assert {p.name for p in out.iterdir()} == {"saved_model", "model.tflite", "model.keras",
                                               "model.json", "ood.npz"}
    assert "exported small_cnn+small_functional_cnn (holdout) (2 member(s)" in \
        capsys.readouterr().out
    served = Predictor.load(in_tmp_repo / "models/served.json")
    images = _images(32)
    got = export.tflite_predict(out / "model.tflite", images)
    np.testing.assert_allclose(got, served.predict(images.astype(np.uint8)), atol=2e-2)
    card = json.loads((out / "model.json").read_text())
    assert card["calibration"] == {"method": "temperature", "temperature": 1.7,
                                   "inside_graph": True}
    # the balanced-accuracy rule decides the class beside the graph, not in it
    assert card["decision"]["class_bias"] == [0.0, 0.7]
    assert "not in the graph" in card["decision"]["predicted_class"]
    # The folder as `dvc artifacts get` fetches it answers like the served model, calibrated
    # once (inside the graph), with its referral decision.
    exported = Predictor.load(out)
    np.testing.assert_allclose(exported.predict(images.astype(np.uint8)),
                               served.predict(images.astype(np.uint8)), atol=1e-5)
    assert "refer" in exported.result(exported.predict(images[:1].astype(np.uint8))[0])
    assert [exported.result(p)["predicted"] for p in exported.predict(images.astype(np.uint8))] \
        == [served.result(p)["predicted"] for p in served.predict(images.astype(np.uint8))]
    # with the served model's guard, from beside it
    _, ood = exported.assess(images.astype(np.uint8))
    np.testing.assert_allclose(ood, served.assess(images.astype(np.uint8))[1], rtol=1e-5)


def test_export_setting_is_checked(in_tmp_repo):
    (in_tmp_repo / "params.yaml").write_text("export:\n  float16: 'yes'\n")
    with pytest.raises(ParamsError, match="export.float16"):
        export.main()


def test_missing_served_model_says_run_dvc_repro(in_tmp_repo):
    (in_tmp_repo / "params.yaml").write_text("export:\n  float16: true\n")
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        export.main()


def test_tiny_model_outputs_are_spread():
    """The fixtures' precondition for every comparison above."""
    model = tiny_classifier("small_cnn", image_size=32)
    assert model.predict(_images(32), verbose=0).std() > 0.01
