"""What the features stage keeps of one frozen backbone (data/processed/features/<backbone>/):
the pooled features of every prepared image and augmented copy, per part, with their ids and
labels; the extractor's feature-cache key; and the classifier network whose softmax layer
each fold's logistic head is written into. train and evaluate read it without TensorFlow:
a fold's logistic head is maths on these arrays, and starting TensorFlow in each of the 15
train and 15 evaluate stages of a profile cost more than that maths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stages.core.errors import MissingInputError
from stages.core.files import atomic_path
from stages.core.params import ParamsError
from stages.core.paths import TRAIN_ONLY, features_dir
from stages.core.shards import Split, concat, fold_parts, with_copies

PREPARED, AUGMENTED = "prepared", "augmented"  # the parts' two sources, one folder each
INFO = "features.json"  # feature_key, classes, the parts; or why there are no features
NETWORK = "classifier.keras"  # its head's weights are zero; train writes each fold's in


def part_file(backbone: str, source: str, part: str) -> Path:
    return features_dir(backbone) / source / f"{part}.npz"


def write_part(backbone: str, source: str, part: str, split: Split) -> None:
    """`split` with its images replaced by their features, as the stage writes it."""
    with atomic_path(part_file(backbone, source, part), suffix=".npz") as tmp:
        np.savez(tmp, ids=split.ids, labels=split.labels, features=split.images)


def read_part(backbone: str, source: str, part: str) -> Split:
    """One part as a Split whose `images` are the (n, d) float32 features."""
    path = part_file(backbone, source, part)
    if not path.exists():
        raise MissingInputError(f"{path} not found: run `dvc repro features@{backbone}` "
                                "(models whose train.solver is logistic have one)")
    with np.load(path) as stored:
        return Split(stored["features"], stored["labels"], stored["ids"])


def fold_features(backbone: str, fold: str, parts: list[str]) -> tuple[Split, Split,
                                                                         np.ndarray]:
    """(training features, validation features, train-only mask of the training rows) of
    one fold, in the order fold_data.training_data reads the images: the training parts with
    their augmented copies, then the prepared validation part. The mask marks
    data.extra_train's rows (its own part), which the logistic head's inner CV fits on and
    never scores."""
    fold_split = fold_parts(fold, parts)
    train_parts = [with_copies(read_part(backbone, PREPARED, part),
                               read_part(backbone, AUGMENTED, part))
                   for part in fold_split.train]
    train_only = np.concatenate([np.full(len(split.ids), part == TRAIN_ONLY)
                                 for part, split in zip(fold_split.train, train_parts,
                                                        strict=True)])
    return concat(train_parts), read_part(backbone, PREPARED, fold_split.val), train_only


def read_info(backbone: str) -> dict:
    """The stage's features.json; a ParamsError if the backbone has no frozen features."""
    path = features_dir(backbone) / INFO
    if not path.exists():
        raise MissingInputError(f"{path} not found: run `dvc repro features@{backbone}`")
    info = json.loads(path.read_text())
    if not info.get("feature_key"):
        raise ParamsError(f"{backbone}: {info.get('none', 'no frozen features')}")
    return info
