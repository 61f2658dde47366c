"""One fold's training data: the augmented training parts, the validation part, and the
tf.data pipeline that feeds them to train_loop epoch by epoch."""

from __future__ import annotations

import math
from typing import Any

import keras

from stages.core.feature_cache import cached_features
from stages.core.paths import AUGMENTED_DIR, PREPARED_DIR
from stages.core.shards import Split, fold_parts, read_meta, read_parts, read_split


def training_data(fold: str) -> tuple[Split, Split, dict]:
    """(augmented training split, validation split, data meta) of one fold."""
    meta = read_meta(PREPARED_DIR)
    parts = fold_parts(fold, list(meta["counts"]))
    return read_parts(AUGMENTED_DIR, parts.train), read_split(PREPARED_DIR, parts.val), meta


def backbone_features(extractor: keras.Model, split: Split, batch_size: int) -> Split:
    """`split` with each image replaced by what `extractor` makes of it (float32 vectors),
    computed once per image and extractor (core/feature_cache.py)."""
    return Split(cached_features(extractor, split.images, batch_size), split.labels, split.ids)


def epoch_batches(split: Split, n_classes: int, batch_size: int, seed: int, first_epoch: int,
                  epochs: int) -> tuple[Any, int]:
    """Training batches for epochs first_epoch..epochs-1, and the number of steps per epoch.

    Each epoch is shuffled with a seed made of (seed, epoch) rather than by a generator that
    advances from epoch 0, so a run resumed at epoch k sees the batches an uninterrupted run
    would have seen from epoch k on.
    """
    import tensorflow as tf

    base = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    n = len(split.labels)

    def one_epoch(epoch):
        return (base.shuffle(n, seed=seed * 100_003 + epoch)
                .batch(batch_size)
                .map(lambda image, label: (tf.cast(image, tf.float32),
                                           tf.one_hot(label, n_classes))))

    batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    options = tf.data.Options()
    # In a cluster each worker takes its share of every batch (the data are in memory, not
    # files to hand out).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options).prefetch(tf.data.AUTOTUNE), math.ceil(n / batch_size)
