"""Prepared data on disk: each split as a few .npz shards (fold_data feeds them to training).

A few shard files instead of one file per image keep DVC's hashing and `dvc status` fast at
10,000+ images, and the pixels are decoded only once (in prepare).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.errors import MissingInputError, PipelineError
from stages.core.files import atomic_path, write_json
from stages.core.params import ParamsError
from stages.core.paths import AUGMENTED_DIR, HOLDOUT, PREPARED_DIR, SPLIT_FILE, TRAIN_ONLY

META_FILE = "meta.json"
COPY_MARK = "_aug"  # augment's copy k of image <id> is <id>_aug<k>


class EmptySplitError(PipelineError):
    """Every image of a split was rejected, so there is nothing to write."""


@dataclass
class Split:
    images: np.ndarray  # (n, size, size, 3) uint8
    labels: np.ndarray  # (n,) int class indices into meta["classes"]
    ids: np.ndarray  # (n,) str image ids


def _save(path: Path, images: list[np.ndarray], labels: list[int], ids: list[str]) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, images=np.stack(images), labels=np.asarray(labels, np.int32),
                 ids=np.asarray(ids, dtype=str))


def write_split(
    out_dir: Path, split: str, items: Iterable[tuple[np.ndarray, int, str]], shard_size: int
) -> int:
    """Stream (image, label, id) items into out_dir/<split>-NNNNN.npz; returns the count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    written = shard = 0
    for image, label, item_id in items:
        images.append(image)
        labels.append(label)
        ids.append(item_id)
        if len(images) == shard_size:
            _save(out_dir / f"{split}-{shard:05d}.npz", images, labels, ids)
            written, shard = written + len(images), shard + 1
            images, labels, ids = [], [], []
    if images or shard == 0:
        if not images:
            raise EmptySplitError(f"split '{split}' has no images left to write")
        _save(out_dir / f"{split}-{shard:05d}.npz", images, labels, ids)
        written += len(images)
    return written


def shard_paths(data_dir: Path, split: str) -> list[Path]:
    paths = sorted(data_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].npz"))
    if not paths:
        raise MissingInputError(f"no '{split}' shards in {data_dir}: run `dvc repro` first")
    return paths


def iter_shards(data_dir: Path, split: str) -> Iterator[Split]:
    for path in shard_paths(data_dir, split):
        with np.load(path) as shard:
            yield Split(shard["images"], shard["labels"], shard["ids"])


def concat(parts: list[Split]) -> Split:
    if len(parts) == 1:  # a part of one shard: no copy of its (often large) arrays
        return parts[0]
    return Split(*(np.concatenate([getattr(p, f) for p in parts])
                   for f in ("images", "labels", "ids")))


def read_split(data_dir: Path, split: str) -> Split:
    return concat(list(iter_shards(data_dir, split)))


def copy_id(image_id: str, k: int) -> str:
    return f"{image_id}{COPY_MARK}{k}"


def source_image(ids: np.ndarray) -> np.ndarray:
    """The image id each augmented copy came from (an original's id is its own)."""
    return np.array([str(i).split(COPY_MARK)[0] for i in ids])


def read_labels(data_dir: Path, split: str) -> np.ndarray:
    """A split's labels, without reading its images."""
    labels = []
    for path in shard_paths(data_dir, split):
        with np.load(path) as shard:
            labels.append(shard["labels"])
    return np.concatenate(labels)


def read_copies(part: str) -> Split:
    """augment's copies of one training part's images (an empty Split when it drew none)."""
    if read_meta(AUGMENTED_DIR)["counts"].get(part, 0):
        return read_split(AUGMENTED_DIR, part)
    size = read_meta(PREPARED_DIR)["image_size"]
    return Split(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int32),
                 np.zeros(0, str))


def with_copies(originals: Split, copies: Split) -> Split:
    """A training part in the order training sees it: class by class, the originals (in
    their own order) and then that class's augmented copies. Works for images and for their
    features (frozen_features) alike."""
    pieces = [Split(s.images[s.labels == c], s.labels[s.labels == c], s.ids[s.labels == c])
              for c in np.unique(originals.labels) for s in (originals, copies)]
    return concat(pieces)


def read_training_part(part: str) -> Split:
    """One training part's images: its prepared originals with augment's copies."""
    return with_copies(read_split(PREPARED_DIR, part), read_copies(part))


@dataclass(frozen=True)
class FoldParts:
    train: list[str]
    val: str
    test: str


def fold_parts(fold: str, parts: list[str]) -> FoldParts:
    """Which prepared parts train, validate and test one fold.

    `holdout`: the train / val / test split. Cross-validation fold k of K (parts fold0..):
    test on fold k, validate (early stopping, LR schedule) on fold k+1, train on the rest, so
    no image that picks the best epoch is ever scored. The `train_only` part (data.extra_train)
    trains every fold.
    """
    extra = [TRAIN_ONLY] if TRAIN_ONLY in parts else []
    if str(fold) == HOLDOUT:
        return FoldParts(["train", *extra], "val", "test")
    k, n = int(fold), sum(p.startswith("fold") for p in parts)
    if not 0 <= k < n:
        raise ParamsError(f"fold {fold} does not exist: the split has {n} folds (params: folds)")
    val = (k + 1) % n
    return FoldParts([*(f"fold{j}" for j in range(n) if j not in (k, val)), *extra],
                     f"fold{val}", f"fold{k}")


def read_split_table() -> pd.DataFrame:
    """split.csv (isic_id, image, label, group, sex, age, site, age_years, split), indexed
    by isic_id."""
    if not SPLIT_FILE.exists():
        raise MissingInputError(f"{SPLIT_FILE} missing: run `dvc repro split` first")
    table = pd.read_csv(SPLIT_FILE, dtype=str, keep_default_na=False).set_index("isic_id")
    for column in ("sex", "age", "site", "age_years"):  # a split.csv from before they were kept
        if column not in table:
            table[column] = ""
    return table


CLINICAL_COLUMNS = ("sex", "age_years", "site")  # the inputs of core/clinical.py


def clinical_table(ids: np.ndarray) -> pd.DataFrame:
    """split.csv's clinical columns (core/clinical.py) for images (augment's copies: their
    original's), in the order of `ids`."""
    table = read_split_table().loc[source_image(ids), list(CLINICAL_COLUMNS)]
    return table.reset_index(drop=True)


def write_meta(data_dir: Path, meta: dict) -> None:
    # Written last: shards without a complete meta.json are not a prepared set.
    write_json(data_dir / META_FILE, meta)


def read_meta(data_dir: Path) -> dict:
    path = data_dir / META_FILE
    if not path.exists():
        raise MissingInputError(f"{path} missing: run `dvc repro prepare` first")
    return json.loads(path.read_text())
