"""THE batched prediction path: validation in training, evaluate, TTA, export's check, predict
and the web app all turn images into probabilities through `as_predict`."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]  # float32 (n, h, w, 3) 0..255 → (n, classes)


def inference(model: keras.Model):
    """model(images) in inference mode as one tf.function, traced once (reduce_retracing: a
    last, smaller batch does not trace it again). It reads the synchronised weights under any
    strategy, and unlike model.predict it sets up no tf.data pipeline per call, which for one
    small image costs more than the model itself."""
    import tensorflow as tf

    return tf.function(lambda x: model(tf.cast(x, tf.float32), training=False),
                       reduce_retracing=True)


def predict_batches(infer, images: np.ndarray, batch_size: int) -> np.ndarray:
    """`infer` (see inference) over images, batch by batch, as one float32 array."""
    outputs = [np.asarray(infer(images[i:i + batch_size]))
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs).astype(np.float32)


def as_predict(model: keras.Model | Predict, batch_size: int = 64) -> Predict:
    """A Keras model → a batch function; anything else is taken to be one already."""
    if not isinstance(model, keras.Model):
        return model
    infer = inference(model)
    return lambda images: predict_batches(infer, images, batch_size)


def probs_and_features(models: list[keras.Model], batch_size: int = 64):
    """A batch function → [(class probabilities, pooled backbone features)] per model, all
    models in one graph and one pass: what the out-of-distribution guard (core/ood.py)
    measures its distance on. A model with no single "pool" layer (an exported ensemble
    graph) gives zero-width features."""
    image = keras.Input(models[0].input_shape[1:], name="image")
    outputs = []
    for model in models:
        pools = [layer for layer in model.layers if layer.name == "pool"]
        features = pools[0].output if pools else keras.ops.zeros_like(model.output)[:, :0]
        outputs += keras.Model(model.input, [model.output, features])(image)
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
