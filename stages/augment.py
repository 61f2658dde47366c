"""Stage augment: prepared train shards → data/processed/augmented/, class-balanced, seeded.

Materialising the augmented set (rather than augmenting on the fly) makes it a DVC output:
every backbone trains on the very same images, and a change to augment params reruns exactly
augment and what follows. Each class is filled up to its target count with augmented draws
of its own images (oversampling the minority class), the originals kept as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from stages.core.errors import run_stage
from stages.core.params import get, load_params, number
from stages.core.shards import read_meta, read_split, write_meta, write_split

PREPARED_DIR = Path("data/processed/prepared")
OUT_DIR = Path("data/processed/augmented")
BATCH = 64


def augmenter(params: dict, seed: int) -> keras.Sequential:
    """Random flips, rotation, zoom and colour shifts on 0..255 RGB, each strength a param."""
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


def augmented_items(images, labels, ids, targets, model, rng) -> Iterator[tuple]:
    for cls, target in targets.items():
        members = np.flatnonzero(labels == cls)
        for i in members[:target]:
            yield images[i], cls, str(ids[i])
        extra = rng.choice(members, size=max(0, target - len(members)), replace=True)
        for start in range(0, len(extra), BATCH):
            batch = extra[start:start + BATCH]
            out = model(images[batch].astype("float32"), training=True)
            out = np.clip(np.round(keras.ops.convert_to_numpy(out)), 0, 255).astype(np.uint8)
            for k, i in enumerate(batch):
                yield out[k], cls, f"{ids[i]}_aug{start + k}"
        print(f"  class {cls}: {len(members)} originals → {target} images", flush=True)


def main() -> None:
    params = load_params()
    seed = get(params, "seed")
    keras.utils.set_random_seed(seed)
    train = read_split(PREPARED_DIR, "train")
    targets = target_counts(train.labels, number(params, "augment.copies", 1.0, 100.0),
                            bool(get(params, "augment.balance")))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*.npz"):
        old.unlink()
    items = augmented_items(train.images, train.labels, train.ids, targets,
                            augmenter(params, seed), np.random.default_rng(seed))
    count = write_split(OUT_DIR, "train", items, read_meta(PREPARED_DIR)["shard_size"])
    classes = read_meta(PREPARED_DIR)["classes"]
    write_meta(OUT_DIR, {"classes": classes,
                         "counts": {classes[c]: n for c, n in targets.items()}, "total": count})
    print(f"{count} training images written to {OUT_DIR}")


if __name__ == "__main__":
    run_stage("augment", main)
