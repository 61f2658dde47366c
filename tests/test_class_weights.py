"""class_weight: balanced in gradient training (train with solver adam, and finetune): each
image's loss weighed by its class, as the logistic heads' class_weight does."""

from __future__ import annotations

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from stages.core.hardware import set_up
from stages.core.train_loop import balanced_weights, train_step


def test_balanced_weights_are_scikit_learns_and_an_absent_class_weighs_one():
    labels = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose(balanced_weights(labels, 3),
                               compute_class_weight("balanced", classes=np.arange(3), y=labels),
                               rtol=1e-6)
    np.testing.assert_allclose(balanced_weights(np.array([0, 0, 0, 2]), 3),
                               [4 / 6, 1.0, 2.0], rtol=1e-6)


def _one_step(params: dict, labels: list[int], class_weights) -> list[np.ndarray]:
    """How much one SGD step on a batch with these labels moves a softmax layer's weights."""
    import tensorflow as tf

    hardware = set_up(params)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    before = [w.numpy().copy() for w in model.weights]
    x = np.random.default_rng(1).normal(size=(len(labels), 4)).astype(np.float32)
    onehot = np.eye(2, dtype=np.float32)[labels]
    batches = tf.data.Dataset.from_tensors((x, onehot)).repeat()
    step = train_step(model, hardware, len(labels), class_weights)
    step(iter(hardware.strategy.experimental_distribute_dataset(batches)))
    return [w.numpy() - b for w, b in zip(model.weights, before, strict=True)]


def test_each_image_loss_is_weighed_by_its_class(params):
    plain = _one_step(params, [1, 1, 0, 1], None)
    assert any(np.abs(d).max() > 1e-4 for d in plain)
    doubled = _one_step(params, [1, 1, 0, 1], np.array([2.0, 2.0], np.float32))
    for d, p in zip(doubled, plain, strict=True):
        np.testing.assert_allclose(d, 2 * p, rtol=1e-4, atol=1e-7)
    # A class weighed 0 teaches nothing: a batch of it alone leaves the weights as they were.
    ignored = _one_step(params, [1, 1, 1, 1], np.array([1.0, 0.0], np.float32))
    assert all(np.abs(d).max() == 0 for d in ignored)
