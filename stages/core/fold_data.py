"""One fold's training data: the training parts with their augmented copies, the validation
part, and the tf.data pipeline that feeds them to train_loop epoch by epoch."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from stages.core.clinical_branch import CLINICAL, DROPOUT, INPUTS
from stages.core.feature_cache import cached_features
from stages.core.layers import DIHEDRAL, dihedral
from stages.core.paths import PREPARED_DIR
from stages.core.shards import (
    Split,
    concat,
    fold_parts,
    read_meta,
    read_split,
    read_training_part,
)


def training_data(fold: str) -> tuple[Split, Split, dict]:
    """(training split with its augmented copies, validation split, data meta) of one fold."""
    meta = read_meta(PREPARED_DIR)
    parts = fold_parts(fold, list(meta["counts"]))
    train = concat([read_training_part(part) for part in parts.train])
    return train, read_split(PREPARED_DIR, parts.val), meta


def backbone_features(extractor: keras.Model, split: Split, batch_size: int) -> Split:
    """`split` with each image replaced by what `extractor` makes of it (float32 vectors),
    computed once per image and extractor (core/feature_cache.py)."""
    return Split(cached_features(extractor, split.images, batch_size), split.labels, split.ids)


def random_symmetry(image, seed):
    """`image` (h, w, c) in one of the 8 symmetries of the square, layers.DIHEDRAL[k] for k
    drawn from `seed` (a stateless draw: the same seed gives the same view)."""
    import tensorflow as tf

    k = tf.random.stateless_uniform([], seed, 0, len(DIHEDRAL), dtype=tf.int32)
    return tf.switch_case(k, [lambda turn=turn: dihedral(image[None], *turn)[0]
                              for turn in DIHEDRAL])


def epoch_batches(split: Split, n_classes: int, batch_size: int, seed: int, first_epoch: int,
                  epochs: int, online_augment: str = "none",
                  clinical: np.ndarray | None = None) -> tuple[Any, int]:
    """Training batches for epochs first_epoch..epochs-1, and the number of steps per epoch.

    Each epoch is shuffled with a seed made of (seed, epoch) rather than by a generator that
    advances from epoch 0, so a run resumed at epoch k sees the batches an uninterrupted run
    would have seen from epoch k on. `online_augment: dihedral` shows each image, each epoch,
    in a random one of its 8 flips/rotations, drawn from (seed, epoch, image) for the same
    reason: fresh views every epoch (the augment stage's copies are fixed), exact ones (no
    interpolation), and the same ones after a resume. With `clinical` (one encoded row per
    image: core/clinical_branch.py) a batch's inputs are {"inputs": images, "clinical": rows},
    each row hidden with probability clinical_branch.DROPOUT, drawn the same way.
    """
    import tensorflow as tf

    all_images, all_labels = tf.constant(split.images), tf.constant(split.labels)
    if clinical is not None:
        all_rows = tf.constant(clinical, tf.float32)
    n = len(split.labels)

    def one_epoch(epoch):
        epoch_seed = seed * 100_003 + epoch
        # The epoch's order, drawn by a stateless op from (seed, epoch). Dataset.shuffle with
        # a tensor seed fails to trace when TensorFlow's global seed is 0 (params seed: 0).
        order = tf.argsort(tf.random.stateless_uniform([n], tf.stack([epoch_seed, -1])))
        shuffled = tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int64)).map(
            lambda index: (index, tf.gather(all_images, index), tf.gather(all_labels, index)))
        if online_augment == "dihedral":
            shuffled = shuffled.map(lambda index, image, label: (
                index, random_symmetry(image, tf.stack([epoch_seed, index])), label))
        if clinical is None:
            examples = shuffled.map(lambda index, image, label: (tf.cast(image, tf.float32),
                                                                 label))
        else:
            def with_rows(index, image, label):
                shown = tf.random.stateless_uniform([], tf.stack([-1 - epoch_seed, index])) \
                    >= DROPOUT
                row = tf.gather(all_rows, index) * tf.cast(shown, tf.float32)
                return {INPUTS: tf.cast(image, tf.float32), CLINICAL: row}, label
            examples = shuffled.map(with_rows)
        return examples.batch(batch_size).map(lambda x, label: (x, tf.one_hot(label, n_classes)))

    batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    options = tf.data.Options()
    # In a cluster each worker takes its share of every batch (the data are in memory, not
    # files to hand out).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options).prefetch(tf.data.AUTOTUNE), math.ceil(n / batch_size)
