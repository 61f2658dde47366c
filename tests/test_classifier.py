"""The head-on-features shortcut of the train stage is the same training as the full model."""

from __future__ import annotations

import keras
import numpy as np

from stages.core.fold_data import backbone_features
from stages.core.inference import split_at_pool
from stages.core.shards import Split
from tests.tiny_models import tiny_classifier, varied_images

SIZE = 32


def _pretrained() -> keras.Model:
    return tiny_classifier("efficientnet_lite0", SIZE, weights="imagenet")


def _data(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 2
    return varied_images(n, SIZE, seed=3), keras.utils.to_categorical(labels, 2)


def test_the_two_halves_compose_to_the_model():
    model = _pretrained()
    extractor, head = split_at_pool(model)
    images, _ = _data()
    features = extractor.predict(images, verbose=0)
    assert features.shape == (len(images), 1280)
    np.testing.assert_allclose(head.predict(features, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)


def _fit(model: keras.Model, x: np.ndarray, onehot: np.ndarray) -> None:
    # Plain SGD: Adam's first steps are ±lr for any gradient, so float round-off in a
    # near-zero gradient would flip a weight's step and hide what this test compares.
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy")
    keras.utils.set_random_seed(5)
    model.fit(x, onehot, batch_size=8, epochs=3, shuffle=False, verbose=0)


def test_fitting_the_head_on_features_equals_fitting_the_frozen_model():
    images, onehot = _data()
    full = _pretrained()  # the default head: dense layers, batch norm and dropout
    for layer in full.get_layer("backbone").layers:
        if isinstance(layer, keras.layers.Dropout):
            # Lite0's stochastic depth: the one difference, on purpose. Keras 3 runs it while
            # the whole model trains even though the backbone is frozen; features computed
            # once are the backbone's inference output, as a frozen feature extractor's are.
            layer.rate = 0.0
    _fit(full, images.astype("float32"), onehot)

    model = _pretrained()
    extractor, head = split_at_pool(model)
    features = backbone_features(extractor, Split(images, onehot.argmax(1), np.arange(24)), 8)
    _fit(head, features.images, onehot)

    trained = model.get_layer("probs").kernel.numpy()
    assert not np.allclose(trained, _pretrained().get_layer("probs").kernel.numpy())
    np.testing.assert_allclose(trained, full.get_layer("probs").kernel.numpy(), atol=1e-5)
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               full.predict(images, verbose=0), atol=1e-5)
