"""Grouped, stratified, seeded splitting."""

import pandas as pd
import pytest

from stages.core.errors import PipelineError
from stages.core.shards import fold_parts
from stages.split import (
    assign,
    assign_folds,
    assign_splits,
    check_class_sizes,
    fold_count,
    link_groups,
)


def _items(n_lesions: int, images_per_lesion: int, malignant_every: int = 3) -> pd.DataFrame:
    rows = []
    for lesion in range(n_lesions):
        for k in range(images_per_lesion):
            rows.append({
                "isic_id": f"IMG_{lesion:04d}_{k}",
                "lesion_id": f"L{lesion}",
                "patient_id": f"P{lesion // 2}",  # two lesions per patient
                "label": "malignant" if lesion % malignant_every == 0 else "benign",
            })
    return pd.DataFrame(rows)


def test_link_groups_joins_lesions_and_patients_transitively():
    items = pd.DataFrame({
        "isic_id": ["a", "b", "c", "d", "e"],
        "lesion_id": ["L1", "L1", "L2", "", ""],
        "patient_id": ["", "P1", "P1", "", "P9"],
    })
    groups = link_groups(items)
    assert groups[0] == groups[1] == groups[2]  # a~b by lesion, b~c by patient
    assert len({groups[0], groups[3], groups[4]}) == 3


def test_no_patient_or_lesion_in_two_splits_and_fractions_hold():
    items = _items(n_lesions=120, images_per_lesion=2)
    frame = items.assign(group=link_groups(items))
    split = assign_splits(frame, val=0.15, test=0.2, seed=1)
    frame["split"] = split
    for key in ("lesion_id", "patient_id"):
        assert (frame.groupby(key)["split"].nunique() == 1).all(), key
    shares = split.value_counts(normalize=True)
    assert 0.12 < shares["test"] < 0.28 and 0.08 < shares["val"] < 0.22
    for part in ("train", "val", "test"):  # stratified: every split keeps the class balance
        malignant = (frame.loc[split == part, "label"] == "malignant").mean()
        assert 0.2 < malignant < 0.5, part


def test_split_is_seeded():
    items = _items(60, 1)
    frame = items.assign(group=link_groups(items))
    assert assign_splits(frame, 0.15, 0.2, seed=7).equals(assign_splits(frame, 0.15, 0.2, seed=7))
    assert not assign_splits(frame, 0.15, 0.2, seed=7).equals(
        assign_splits(frame, 0.15, 0.2, seed=8))


def test_class_with_too_few_groups_is_named():
    frame = pd.DataFrame({"label": ["nevus"] * 10 + ["dermatofibroma"] * 2,
                          "group": [f"g{i}" for i in range(12)]})
    with pytest.raises(PipelineError, match="'dermatofibroma' has 2 lesion/patient group"):
        check_class_sizes(frame)


def test_cross_validation_folds_are_grouped_and_stratified():
    items = _items(n_lesions=100, images_per_lesion=2)
    frame = items.assign(group=link_groups(items))
    frame["split"] = assign_folds(frame, 5, seed=0)
    assert set(frame["split"]) == {f"fold{k}" for k in range(5)}
    assert (frame.groupby("patient_id")["split"].nunique() == 1).all()
    for _, part in frame.groupby("split"):
        assert 0.2 < (part["label"] == "malignant").mean() < 0.5
        assert 0.1 < len(part) / len(frame) < 0.3


def test_fold_parts_never_train_on_what_validates_or_tests():
    parts = [f"fold{k}" for k in range(5)]
    for k in range(5):
        fp = fold_parts(str(k), parts)
        assert fp.test == f"fold{k}" and fp.val == f"fold{(k + 1) % 5}"
        assert sorted([*fp.train, fp.val, fp.test]) == parts
    assert fold_parts("holdout", ["test", "train", "val"]).train == ["train"]
    with pytest.raises(ValueError, match="fold 5 does not exist"):
        fold_parts("5", parts)


@pytest.mark.parametrize("folds, count", [(["holdout"], 0), ([0, 1, 2], 3), ([0, 1, 2, 3, 4], 5)])
def test_fold_count_reads_the_folds_param(folds, count):
    assert fold_count(folds) == count


@pytest.mark.parametrize("folds", [[1, 2, 3], [0, 1], ["a"], []])
def test_bad_folds_param_is_named(folds):
    with pytest.raises(PipelineError, match="'folds' must be"):
        fold_count(folds)


@pytest.mark.parametrize("n_folds", [0, 5])
def test_lockbox_is_set_aside_first_grouped_and_never_a_training_part(n_folds):
    items = _items(n_lesions=200, images_per_lesion=2)
    frame = items.assign(group=link_groups(items))
    split = assign(frame, n_folds, val=0.15, test=0.2, lockbox=0.2, seed=3)
    frame["split"] = split
    assert 0.15 < (split == "lockbox").mean() < 0.25
    assert (frame.groupby("group")["split"].nunique() == 1).all()  # no group straddles
    box = frame[split == "lockbox"]
    assert 0.25 < (box["label"] == "malignant").mean() < 0.42  # stratified (1 in 3)
    parts = sorted(set(split) - {"lockbox"})
    assert parts == (["test", "train", "val"] if n_folds == 0 else
                     [f"fold{k}" for k in range(5)])
    used = fold_parts(0 if n_folds else "holdout", [*parts, "lockbox"])
    assert "lockbox" not in [*used.train, used.val, used.test]
    # Without a lockbox the parts are exactly what they were before.
    plain = assign(frame, n_folds, val=0.15, test=0.2, lockbox=0.0, seed=3)
    assert "lockbox" not in set(plain)
