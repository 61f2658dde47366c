"""Stage augment: seeded augmented copies of the prepared training images →
data/processed/augmented/, filling each class up to its target count (class balance).

Materialising the copies (rather than augmenting on the fly) makes them a DVC output: every
backbone trains on the very same images, and a change to augment params reruns exactly
augment and what follows. Only the copies are written; training reads each part's originals
from data/processed/prepared beside them (shards.read_training_part), so the default, which
draws none, keeps no second copy of every training image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from stages.core.cli import run_stage
from stages.core.params import get, number, stage_params
from stages.core.paths import AUGMENTED_DIR, PREPARED_DIR, TRAIN_ONLY
from stages.core.shards import (
    copy_id,
    read_labels,
    read_meta,
    read_split,
    write_meta,
    write_split,
)
from stages.core.worklog import work

if TYPE_CHECKING:
    import keras

BATCH = 64


def augmenter(params: dict, seed: int) -> keras.Sequential:
    """Random flips, rotation, zoom and colour shifts on 0..255 RGB, each strength a param,
    seeded. TensorFlow starts here, only when a copy is drawn (augment.copies 1 without
    balancing keeps the originals and draws none)."""
    import keras

    keras.utils.set_random_seed(seed)
    value_range = (0, 255)
    layers = []
    if get(params, "augment.flip"):
        layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=seed))
    strengths = {
        # dermoscopy has no 'up': any rotation is as real as the original
        "rotation": lambda f: keras.layers.RandomRotation(f, fill_mode="reflect", seed=seed + 1),
        "zoom": lambda f: keras.layers.RandomZoom(f, fill_mode="reflect", seed=seed + 2),
        "brightness": lambda f: keras.layers.RandomBrightness(f, value_range, seed=seed + 3),
        "contrast": lambda f: keras.layers.RandomContrast(f, value_range, seed=seed + 4),
        "hue": lambda f: keras.layers.RandomHue(f, value_range, seed=seed + 5),
    }
    for name, make in strengths.items():
        factor = number(params, f"augment.{name}", 0.0, 1.0)
        if factor > 0:
            layers.append(make(factor))
    return keras.Sequential(layers, name="augment")


def target_counts(labels: np.ndarray, copies: float, balance: bool) -> dict[int, int]:
    """Images per class after augmentation: balanced classes fill up to the largest one."""
    present, counts = np.unique(labels, return_counts=True)
    top = counts.max()
    return {int(c): int(round((top if balance else n) * copies))
            for c, n in zip(present, counts, strict=True)}


def augmented_copies(images, labels, ids, targets, model: Callable[[], keras.Sequential], rng,
                     ) -> Iterator[tuple]:
    """Class by class, seeded augmented copies of randomly drawn members, as many as the
    class lacks of its target (the originals all stay: targets are never below the count);
    `model()` gives the augmenter."""
    for cls, target in targets.items():
        members = np.flatnonzero(labels == cls)
        extra = rng.choice(members, size=max(0, target - len(members)), replace=True)
        for start in range(0, len(extra), BATCH):
            batch = extra[start:start + BATCH]
            out = model()(images[batch].astype("float32"), training=True)
            out = np.clip(np.round(np.asarray(out)), 0, 255).astype(np.uint8)
            for k, i in enumerate(batch):
                yield out[k], cls, copy_id(ids[i], start + k)
        print(f"  class {cls}: {len(members)} originals + {len(extra)} copies", flush=True)


def training_parts(meta: dict) -> list[str]:
    """The prepared parts any fold trains on: `train`, or every cross-validation fold, and
    `train_only` (data.extra_train) if there is one."""
    parts = list(meta["counts"])
    extra = [TRAIN_ONLY] if TRAIN_ONLY in parts else []
    return ([p for p in parts if p.startswith("fold")] or ["train"]) + extra


def main() -> None:
    params = stage_params("augment")
    seed = get(params, "seed")
    meta = read_meta(PREPARED_DIR)
    model = cache(lambda: augmenter(params, seed))
    rng = np.random.default_rng(seed)
    AUGMENTED_DIR.mkdir(parents=True, exist_ok=True)
    for old in AUGMENTED_DIR.glob("*.npz"):
        old.unlink()
    counts = {}
    # Each part is balanced on its own, so any union of folds a model trains on is balanced.
    for part in training_parts(meta):
        labels = read_labels(PREPARED_DIR, part)
        targets = target_counts(labels, number(params, "augment.copies", 1.0, 100.0),
                                bool(get(params, "augment.balance")))
        if sum(targets.values()) == len(labels):
            counts[part] = 0  # nothing to draw: no shard, no TensorFlow, no image read
        else:
            data = read_split(PREPARED_DIR, part)
            with work("augment"):
                items = augmented_copies(data.images, data.labels, data.ids, targets, model, rng)
                counts[part] = write_split(AUGMENTED_DIR, part, items, meta["shard_size"])
        print(f"{part}: {counts[part]} augmented copies written to {AUGMENTED_DIR}", flush=True)
    write_meta(AUGMENTED_DIR, {"classes": meta["classes"], "counts": counts})


if __name__ == "__main__":
    run_stage("augment", main)
