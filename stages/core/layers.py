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


def batch_norm(name: str | None = None) -> keras.layers.BatchNormalization:
    """BatchNorm for layers we train from scratch.

    Keras' default momentum 0.99 needs thousands of steps to forget the initial variance of 1;
    after a few hundred steps on a small dataset the inference-time statistics were far off
    and every test image came out benign.
    """
    return keras.layers.BatchNormalization(momentum=0.9, name=name)


@keras.saving.register_keras_serializable(package="skin_lesion")
class TemperatureScaling(keras.layers.Layer):
    """Probabilities → softmax(log(p) / T): the calibration of core/calibration.py, inside a
    graph, so an exported served model answers calibrated without our Python."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probs):
        logits = keras.ops.log(keras.ops.clip(probs, 1e-7, 1.0)) / self.temperature
        return keras.ops.softmax(logits, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
