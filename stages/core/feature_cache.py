"""Pooled backbone features, computed once per image and reused by every stage and fold.

A frozen backbone (every `solver: logistic` model, and phase 1 of every pretrained one) turns
an image into the same features in the train stage of each fold and in each evaluate stage;
with 5 folds and multi-view models (head.views) computing them anew each time is most of a
run. So features are kept in .cache/features/<extractor>/, one folder per extractor, keyed
by what decides them and nothing else: the extractor's weights and what it computes (a
fine-tuned backbone, or another number of views, is another extractor), TensorFlow's
version, and each image's pixels. A
hit is by construction the very number a recomputation gives on this machine, so the cache
can be deleted at any time, and is never a DVC output (git-ignored, like .cache/backup).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.core.files import atomic_path
from stages.core.shards import Split, concat, iter_shards
from stages.core.worklog import work

if TYPE_CHECKING:
    import keras

CACHE_DIR = Path(".cache/features")


def image_keys(images: np.ndarray) -> np.ndarray:
    return np.array([hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
                     for image in images])


# folder → (the chunks read, their features by image key): a stage calls cached_features
# once per part and fold, and re-reading every chunk each time grows with parts × folds
# (trunk activations, finetune.cache_trunk, are 0.2-0.4 MB an image).
_READ: dict[Path, tuple[set[str], dict[str, np.ndarray]]] = {}


def _stored(folder: Path) -> dict[str, np.ndarray]:
    """Every feature kept in `folder`, reading only the chunks this process has not read;
    a chunk gone since (the cache emptied) starts over."""
    chunks = {chunk.name: chunk for chunk in folder.glob("chunk-*.npz")}
    read, known = _READ.get(folder, (set(), {}))
    if not read <= set(chunks):
        read, known = set(), {}
    for name in sorted(set(chunks) - read):
        with np.load(chunks[name]) as stored:
            known.update(zip(stored["keys"], stored["features"], strict=True))
        read.add(name)
    _READ[folder] = (read, known)
    return known


def cached_features(extractor: keras.Model, images: np.ndarray, batch_size: int = 64,
                    cache_dir: Path = CACHE_DIR) -> np.ndarray:
    """extractor(images) as float32 (n, d), from the cache where it has them; the images
    it lacks are computed in one batched pass and added."""
    from stages.core.inference import extractor_key, inference, predict_batches

    folder = cache_dir / extractor_key(extractor)
    known = _stored(folder)
    keys = image_keys(images)
    missing = sorted(set(keys) - set(known))
    if missing:
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        rows = [first[key] for key in missing]
        with work("features"):
            computed = predict_batches(inference(extractor), images[rows], batch_size,
                                       f"features of {extractor.name}")
        known.update(zip(missing, computed, strict=True))
        name = f"chunk-{hashlib.sha1(''.join(missing).encode()).hexdigest()[:16]}.npz"
        with atomic_path(folder / name, suffix=".npz") as tmp:
            np.savez(tmp, keys=np.array(missing), features=computed)
        _READ[folder][0].add(name)  # its features are in `known` already
    if not len(keys):
        return np.zeros((0, extractor.output_shape[-1]), np.float32)
    return np.stack([known[key] for key in keys]).astype(np.float32)


def part_features(extractor: keras.Model, data_dir: Path, parts: list[str],
                  batch_size: int = 64) -> Split:
    """The parts' features with their labels and ids, computed shard by shard, so that no
    part's images are all in memory at once (and none are copied to be joined)."""
    return concat([Split(cached_features(extractor, shard.images, batch_size), shard.labels,
                         shard.ids)
                   for part in parts for shard in iter_shards(data_dir, part)])
