"""What the train and finetune stages share: seeding, input data, and a logged `model.fit`."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from stages.core.paths import AUGMENTED_DIR, PREPARED_DIR
from stages.core.shards import fold_parts, make_dataset, read_meta, read_parts, read_split


def seed_everything(seed: int) -> None:
    """Same params, same metrics on CPU: seed Python/NumPy/TF and ask TF for deterministic ops."""
    import tensorflow as tf

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def training_data(batch_size: int, seed: int, fold: str):
    """(augmented train batches, validation batches, data meta) of one fold, for model.fit."""
    meta = read_meta(PREPARED_DIR)
    n_classes = len(meta["classes"])
    parts = fold_parts(fold, list(meta["counts"]))
    train = make_dataset(read_parts(AUGMENTED_DIR, parts.train), n_classes, batch_size, seed)
    val = make_dataset(read_split(PREPARED_DIR, parts.val), n_classes, batch_size)
    return train, val, meta


def fit_logged(
    model: keras.Model, train, val, epochs: int, log_dir: Path,
    callbacks: list[keras.callbacks.Callback] = (),
) -> keras.callbacks.History:
    """model.fit with one line per epoch on the terminal and DVCLive curves in log_dir."""
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    # dvcyaml=None: our dvc.yaml declares these plots; DVCLive must not rewrite it.
    with Live(dir=str(log_dir), dvcyaml=None, save_dvc_exp=False) as live:
        return model.fit(
            train, validation_data=val, epochs=epochs, verbose=2, shuffle=False,  # ds shuffles
            callbacks=[DVCLiveCallback(live=live), *callbacks],
        )
