"""THE batched prediction path: validation in training, evaluate, TTA, export's check, predict
and the web app all turn images into probabilities through `as_predict`. Also where a model
is cut at its pooled features (`split_at_pool`), how a frozen extractor is keyed for the
feature cache (`extractor_key`), and how members sharing a frozen backbone share its pass
(`member_outputs`)."""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from stages.core.progress import Progress

Predict = Callable[[np.ndarray], np.ndarray]  # float32 (n, h, w, 3) 0..255 → (n, classes)


def inference(model: keras.Model) -> Callable[[Any], Any]:
    """model(images) in inference mode as one tf.function, traced once per model: for any
    batch size (the signature leaves it open, so a last, smaller batch does not trace it
    again) and any input dtype (cast to float32 before the call). Every caller of one model
    shares it (tracing a Lite network takes ~1 s). It reads the synchronised weights under
    any strategy, and unlike model.predict it sets up no tf.data pipeline per call, which
    for one small image costs more than the model itself."""
    traced = model.__dict__.get(_TRACED)
    if traced is None:
        traced = _traced(model)
        # Kept on the model, bypassing Keras' attribute tracking (nothing to save): it lives
        # as long as the model does.
        object.__setattr__(model, _TRACED, traced)
    return lambda x: traced(_as_float32(x))


_TRACED = "_pipeline_inference"


def _as_float32(x: Any) -> Any:
    # (x: images, or a dict of inputs for a model with a clinical branch)
    if isinstance(x, dict):
        return {name: np.asarray(values, np.float32) for name, values in x.items()}
    return np.asarray(x, np.float32)


def _traced(model: keras.Model) -> Callable[[Any], Any]:
    import tensorflow as tf

    try:
        inputs = model.input
    except AttributeError:  # a Sequential model never called has no input shape to promise
        return tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    signature = tf.nest.map_structure(
        lambda t: tf.TensorSpec((None, *t.shape[1:]), tf.float32), inputs)
    return tf.function(lambda x: model(x, training=False), input_signature=[signature])


def predict_batches(infer, images: np.ndarray | dict[str, np.ndarray], batch_size: int,
                    what: str = "predicting") -> np.ndarray:
    """`infer` (see inference) over images (or a dict of inputs, one row per image: a model
    with a clinical branch), batch by batch, as one float32 array; `what` names the work in
    the progress line that long runs show (core/progress.py)."""
    def rows(start: int, stop: int):
        if isinstance(images, dict):
            return {name: values[start:stop] for name, values in images.items()}
        return images[start:stop]

    count = len(next(iter(images.values())) if isinstance(images, dict) else images)
    progress = Progress(what, count)
    outputs = []
    for i in range(0, count, batch_size):
        outputs.append(np.asarray(infer(rows(i, i + batch_size))))
        progress.advance(len(outputs[-1]))
    progress.close()
    return np.concatenate(outputs).astype(np.float32)


def as_predict(model: keras.Model | Predict, batch_size: int = 64) -> Predict:
    """A Keras model → a batch function; anything else is taken to be one already."""
    if not isinstance(model, keras.Model):
        return model
    infer = inference(model)
    return lambda images: predict_batches(infer, images, batch_size)


def member_outputs(models: list[keras.Model], image) -> list[tuple[Any, Any]]:
    """(class probabilities, pooled backbone features) of each model on the Keras input
    `image`, as tensors of one graph. Models whose feature halves are the same (the fold
    models of a frozen backbone: one backbone, five heads) share one backbone pass, so a
    15-member ensemble of 3 frozen backbones costs 3 backbones. A model with no single
    "pool" layer (an exported ensemble graph) gives zero-width features."""
    shared: dict[str, Any] = {}
    outputs = []
    for i, model in enumerate(models):
        if not [layer for layer in model.layers if layer.name == "pool"]:
            probs = model(image)
            outputs.append((probs, keras.ops.zeros_like(probs)[:, :0]))
            continue
        extractor, head = split_at_pool(model)
        key = extractor_key(extractor)
        if key not in shared:
            extractor.name = f"member{i}_{extractor.name}"  # unique within one graph
            shared[key] = extractor(image)
        head.name = f"member{i}_{head.name}"
        outputs.append((head(shared[key]), shared[key]))
    return outputs


def probs_and_features(models: list[keras.Model], batch_size: int = 64):
    """A batch function → [(class probabilities, pooled backbone features)] per model, all
    models in one graph and one pass (member_outputs): what the out-of-distribution guard
    (core/ood.py) measures its distance on."""
    image = keras.Input(models[0].input_shape[1:], name="image")
    outputs = [tensor for pair in member_outputs(models, image) for tensor in pair]
    infer = inference(keras.Model(image, outputs))

    def predict(images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        outs = [infer(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        joined = [np.concatenate([np.asarray(o[k]) for o in outs]).astype(np.float32)
                  for k in range(len(outputs))]
        return list(zip(joined[::2], joined[1::2], strict=True))

    return predict


def split_at_pool(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(image → pooled backbone features, features → probabilities), sharing `model`'s layers:
    training the second trains `model`'s head."""
    pool = model.get_layer("pool")
    extractor = keras.Model(model.input, pool.output, name=f"{model.name}_features")
    x = features = keras.Input(pool.output.shape[1:], name="features")
    for layer in model.layers[model.layers.index(pool) + 1:]:  # the head is a plain chain
        x = layer(x)
    return extractor, keras.Model(features, x, name=f"{model.name}_head")


_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # features tensor → key


def extractor_key(extractor: keras.Model) -> str:
    """What decides the features: the weights, and what the extractor makes of a fixed
    random probe (so two architectures, or views, with the same weights differ), to 6
    significant digits (a last-bit difference of the arithmetic is a miss, never a wrong
    hit); and TensorFlow's version. Computed once per graph node it outputs (it costs a
    traced pass; split_at_pool of one model, or of fold models sharing its backbone
    (model_io.load_members), gives that node again): the weights of a frozen extractor do
    not change while it is in use."""
    node = extractor.outputs[0]
    if node not in _KEYS:
        _KEYS[node] = _computed_key(extractor)
    return _KEYS[node]


def _computed_key(extractor: keras.Model) -> str:
    import tensorflow as tf

    digest = hashlib.sha256(tf.__version__.encode())
    for weight in extractor.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    probe = np.random.default_rng(0).uniform(0, 255, (2, *extractor.input_shape[1:]))
    answer = np.asarray(inference(extractor)(probe.astype(np.float32)))
    digest.update(" ".join(f"{v:.5e}" for v in answer.ravel()).encode())
    return digest.hexdigest()[:20]
