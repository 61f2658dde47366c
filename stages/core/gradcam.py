"""Grad-CAM: where in the image the model looked when it scored a class.

Selvaraju et al. (2017): take the last convolutional feature map A (h, w, k), the gradient of
the class score with respect to it, average that gradient over space to get one weight per
channel, and ReLU(sum_k weight_k * A_k) is the heatmap. Our models nest the backbone as one
layer named "backbone", so `keras.Model(inputs, backbone.output)` does not connect (the
backbone's output tensor lives in its own graph); instead the classifier is run in two
halves, input → scaling → backbone (the feature map) and feature map → head, which works the
same for Sequential, Functional and keras.applications backbones.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from stages.core.layers import DIHEDRAL, DihedralViews, undo_dihedral


def _split(model: keras.Model) -> tuple[list[keras.layers.Layer], list[keras.layers.Layer]]:
    """The layers up to and including the backbone, and those after it (the head).

    The classifier is a chain (see classifier.build_classifier): scaling layers, backbone,
    pool, dense/bn/dropout blocks, probs; model.layers lists them in that order.
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    names = [layer.name for layer in layers]
    if "backbone" not in names:
        raise ValueError(f"model '{model.name}' has no layer named 'backbone'")
    cut = names.index("backbone") + 1
    return layers[:cut], layers[cut:]


def _run(layers: list[keras.layers.Layer], x: tf.Tensor) -> tf.Tensor:
    for layer in layers:
        x = layer(x, training=False)
    return x


def _class_score(head: list[keras.layers.Layer], features: tf.Tensor) -> tf.Tensor:
    """The head's output before the softmax (logits) when the last layer is a softmax Dense.

    Grad-CAM is defined on the pre-softmax score: a confident softmax saturates, its gradient
    vanishes and the heatmap would come out blank exactly when the model is surest.
    """
    *body, last = head
    x = _run(body, features)
    if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax:
        logits = tf.matmul(tf.cast(x, last.kernel.dtype), last.kernel)
        return logits + last.bias if last.use_bias else logits
    return last(x, training=False)


def _cam_function(model: keras.Model):
    """A compiled (tf.function) Grad-CAM for this model, built once and kept with it.

    Traced once per model: eager execution re-runs Python for every layer on every call.
    """
    compiled = _COMPILED.get(model)
    if compiled is not None:
        return compiled
    features_part, head = _split(model)
    views = max([layer.views for layer in features_part if isinstance(layer, DihedralViews)],
                default=1)

    @tf.function(reduce_retracing=True)
    def cam(x: tf.Tensor, class_index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = _run(features_part, x)
        with tf.GradientTape() as tape:
            tape.watch(features)
            scores = _class_score(head, features)
            index = tf.where(class_index < 0, tf.argmax(scores[0], output_type=tf.int32),
                             class_index)
            score = tf.gather(scores, index, axis=1)
        grads = tape.gradient(score, features)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # one per channel
        maps = tf.reduce_sum(weights * features, axis=-1, keepdims=True)  # (views, h, w, 1)
        # A multi-view model scored the image in several orientations: turn each view's map
        # back to the image's own orientation and add them up.
        maps = [undo_dihedral(maps[v:v + 1], *DIHEDRAL[v]) for v in range(views)]
        return tf.nn.relu(tf.add_n(maps))[0, ..., 0], index

    _COMPILED[model] = cam
    return cam


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def gradcam(model: keras.Model, image: np.ndarray, class_index: int | None = None) -> np.ndarray:
    """Heatmap (size, size) in 0..1 for one uint8 image (size, size, 3) the model takes.

    class_index defaults to the predicted class. An all-zero map means no region raised the
    class score (every weighted channel was negative), not an error.
    """
    x = tf.convert_to_tensor(image[None].astype(np.float32))
    index = tf.constant(-1 if class_index is None else class_index, tf.int32)
    cam, _ = _cam_function(model)(x, index)
    cam = cam.numpy().astype(np.float64)
    top = cam.max()
    cam = cam / top if top > 0 else np.zeros_like(cam)
    resized = tf.image.resize(cam[..., None], image.shape[:2], method="bilinear")[..., 0]
    return np.clip(resized.numpy(), 0.0, 1.0).astype(np.float32)


def colormap(heatmap: np.ndarray) -> np.ndarray:
    """0..1 values → uint8 RGB in the classic 'jet' scale (blue cold, red hot).

    Jet's piecewise-linear formula, so no plotting library is needed at serving time.
    """
    h = np.clip(heatmap, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # where red, green, blue peak along the scale
    rgb = np.clip(1.5 - np.abs(4.0 * (h - centres)), 0.0, 1.0)
    return (rgb * 255).round().astype(np.uint8)
