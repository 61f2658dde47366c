"""Our own Keras layers and layer recipes, registered so that a saved model loads anywhere.

Kept apart from the backbone zoo (backbones.py, lite.py): loading a model needs these and
nothing else, so editing a checkpoint reader never reruns evaluate.
"""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="skin_lesion")
class CaffeScaling(keras.layers.Layer):
    """RGB → BGR minus the ImageNet means: what ResNet50 and VGG16 were trained on."""

    def call(self, inputs):
        return inputs[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype="float32")


def probs_layer(n_classes: int) -> keras.layers.Dense:
    """The classifier's last layer, "probs": the one a logistic head's weights are written
    into. float32 even under mixed precision, so probabilities stay exact."""
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="probs")


def batch_norm(name: str | None = None) -> keras.layers.BatchNormalization:
    """BatchNorm for layers we train from scratch.

    Keras' default momentum 0.99 needs thousands of steps to forget the initial variance of 1;
    after a few hundred steps on a small dataset the inference-time statistics were far off
    and every test image came out benign.
    """
    return keras.layers.BatchNormalization(momentum=0.9, name=name)


@keras.saving.register_keras_serializable(package="skin_lesion")
class TemperatureScaling(keras.layers.Layer):
    """Probabilities → softmax(log(p) / T + b): the calibration of core/calibration.py (with
    the balanced-accuracy biases when the card has them), inside a graph, so an exported
    served model answers calibrated without our Python."""

    def __init__(self, temperature: float = 1.0, class_bias: list | None = None, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.class_bias = None if class_bias is None else [float(b) for b in class_bias]

    def call(self, probs):
        logits = keras.ops.log(keras.ops.clip(probs, 1e-7, 1.0)) / self.temperature
        if self.class_bias is not None:
            logits = logits + keras.ops.convert_to_tensor(self.class_bias, dtype=logits.dtype)
        return keras.ops.softmax(logits, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "class_bias": self.class_bias}


# The eight symmetries of the square, as (transpose?, flip rows?, flip columns?) of an
# (n, h, w, c) batch, applied in that order: the one table that TTA (core/tta.py, on numpy
# batches), DihedralViews and online augmentation (core/fold_data.py) draw from. A dermoscopy
# image has no "up", so the same lesion seen in each of them is the same lesion.
DIHEDRAL = ((False, False, False), (False, True, False), (False, False, True),
            (False, True, True), (True, False, False), (True, True, False),
            (True, False, True), (True, True, True))


def dihedral(x, transpose: bool, flip_rows: bool, flip_cols: bool):
    """One symmetry of a batch of square maps (n, h, w, c)."""
    if transpose:
        x = keras.ops.transpose(x, (0, 2, 1, 3))
    if flip_rows:
        x = keras.ops.flip(x, axis=1)
    if flip_cols:
        x = keras.ops.flip(x, axis=2)
    return x


def undo_dihedral(x, transpose: bool, flip_rows: bool, flip_cols: bool):
    """The inverse of `dihedral` with the same arguments (maps of shape (n, h, w, c))."""
    if flip_cols:
        x = keras.ops.flip(x, axis=2)
    if flip_rows:
        x = keras.ops.flip(x, axis=1)
    if transpose:
        x = keras.ops.transpose(x, (0, 2, 1, 3))
    return x


@keras.saving.register_keras_serializable(package="skin_lesion")
class DihedralViews(keras.layers.Layer):
    """(n, s, s, c) → (views·n, s, s, c): the first `views` symmetries of each image, stacked
    view-major along the batch, so the backbone sees them all in one pass. With ViewMean
    after the pooling, the model's features (and so its answer) are the mean over the
    views: multi-view inference inside the model, the same in evaluate, predict, the web
    app and export."""

    def __init__(self, views: int = 8, **kwargs):
        super().__init__(**kwargs)
        if views not in (1, 2, 4, 8):
            raise ValueError(f"views must be 1, 2, 4 or 8, got {views}")
        self.views = int(views)

    def call(self, images):
        return keras.ops.concatenate([dihedral(images, *DIHEDRAL[v])
                                      for v in range(self.views)], axis=0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="skin_lesion")
class ViewMean(keras.layers.Layer):
    """(views·n, d) → (n, d): the mean over the views DihedralViews stacked."""

    def __init__(self, views: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.views = int(views)

    def call(self, x):
        shape = keras.ops.shape(x)
        return keras.ops.mean(keras.ops.reshape(x, (self.views, -1, shape[-1])), axis=0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "views": self.views}
