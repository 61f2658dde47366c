"""The epochs of train and finetune: one code path for one CPU, several GPUs and a cluster.

Why not `model.fit`: with TensorFlow 2.21 / Keras 3.15, fit fails under
MultiWorkerMirroredStrategy before the first step ("Attempt to convert a value (PerReplica…)",
keras-team/keras#20585: fit reduces a sample batch across workers to build the model). A step
that the strategy runs works everywhere, so every run goes through the loop below rather
than fit on one machine and a second loop on a cluster. The loop is small on purpose and
drives Keras' own pieces: the compiled optimizer (loss scaling under mixed precision
included), Keras callbacks through CallbackList (EarlyStopping, ReduceLROnPlateau, DVCLive and
our checkpoints see the same hooks and `logs` as under fit), and tf.distribute for the rest.

Validation runs on every worker over the whole validation set with the synchronised weights,
so every worker computes the same val_auc and callbacks take the same decisions everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.utils.class_weight import compute_class_weight

from stages.core.hardware import Hardware
from stages.core.inference import inference, predict_batches


def scores(onehot: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Loss, accuracy and macro one-vs-rest ROC AUC (the binary AUC for two classes)."""
    clipped = np.clip(probs, 1e-7, 1.0)
    present = onehot.sum(axis=0) > 0
    return {
        "loss": float(-np.mean(np.sum(onehot * np.log(clipped), axis=1))),
        "accuracy": float(np.mean(probs.argmax(1) == onehot.argmax(1))),
        # A class absent from the batch of data has no AUC; NaN says so instead of guessing.
        "auc": float(roc_auc_score(onehot[:, present], probs[:, present], average="macro"))
        if present.sum() > 1 and (onehot[:, present].sum(0) < len(onehot)).all()
        else float("nan"),
    }


def balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's loss weight: scikit-learn's "balanced", as the logistic heads'
    class_weight (1 for a class with no training image: it never weighs a loss)."""
    present = np.unique(labels)
    weights = np.ones(n_classes, np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def train_step(model: keras.Model, hardware: Hardware, global_batch: int,
               class_weights: np.ndarray | None = None):
    """A tf.function that trains `model` on the next batch of a distributed iterator and
    returns (probabilities, one-hot labels) per replica; `class_weights` (n_classes,) weigh
    each image's loss by its class."""
    import tensorflow as tf

    if not model.optimizer.built:  # its variables must exist before the step is traced
        with hardware.strategy.scope():
            model.optimizer.build(model.trainable_variables)

    loss_fn = keras.losses.CategoricalCrossentropy(reduction=None)
    optimizer = model.optimizer

    def replica_step(images, onehot):
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            per_image = loss_fn(onehot, probs)
            if class_weights is not None:
                per_image *= tf.linalg.matvec(tf.cast(onehot, per_image.dtype),
                                              tf.constant(class_weights, per_image.dtype))
            loss = tf.nn.compute_average_loss(per_image, global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)  # the loss scale of mixed_float16, else 1
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return probs, onehot

    # XLA compiles the whole step, as fit(jit_compile=True) would.
    @tf.function(jit_compile=hardware.jit_compile)
    def step(iterator):
        return hardware.strategy.run(replica_step, args=next(iterator))

    return step


def fit_epochs(model: keras.Model, batches: Any, steps: int, val: tuple[np.ndarray, np.ndarray],
               batch_size: int, epochs: int, initial_epoch: int,
               callbacks: Sequence[keras.callbacks.Callback], hardware: Hardware,
               class_weights: np.ndarray | None = None) -> None:
    """Train `model` (built and compiled in hardware.strategy's scope) for epochs
    initial_epoch..epochs-1 on `batches` (global batches, `steps` per epoch), validating on
    `val` = (images, one-hot labels) after each (unweighted); one line per epoch on the
    terminal."""
    strategy = hardware.strategy
    step = train_step(model, hardware, batch_size * hardware.replicas, class_weights)
    infer = inference(model)
    iterator = iter(strategy.experimental_distribute_dataset(batches))
    hooks = keras.callbacks.CallbackList(list(callbacks), model=model, epochs=epochs,
                                         steps=steps, verbose=0)
    model.stop_training = False
    hooks.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        started = time.monotonic()
        hooks.on_epoch_begin(epoch)
        seen_probs, seen_labels = [], []
        for _ in range(steps):
            probs, onehot = step(iterator)
            # This worker's replicas: every image of the step on one machine.
            seen_probs += [p.numpy() for p in strategy.experimental_local_results(probs)]
            seen_labels += [y.numpy() for y in strategy.experimental_local_results(onehot)]
        logs = scores(np.concatenate(seen_labels), np.concatenate(seen_probs))
        val_scores = scores(val[1], predict_batches(infer, val[0], batch_size))
        logs |= {f"val_{name}": value for name, value in val_scores.items()}
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        print(f"Epoch {epoch + 1}/{epochs} - {time.monotonic() - started:.0f}s - "
              + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end(logs)
