"""Stage split: data/raw → data/interim/split.csv, stratified by label and grouped.

`folds: [holdout]` gives one train / val / test split; `folds: [0, 1, ..., K-1]` gives K
cross-validation folds (fold0..foldK-1), each fold in turn the test set (see shards.fold_parts).

Images of one lesion, or of one patient, look alike; if they sat in two splits the test score
would measure memory, not skill. So items linked by lesion_id or patient_id form one group,
groups never straddle splits, and each split keeps the class balance (StratifiedGroupKFold).

`split.lockbox` (a fraction, 0 = none) first sets aside that share of the groups as
`lockbox`: no model trains, validates or is chosen on it; evaluate predicts it and compare
scores the served model on it, the one estimate that took no part in choosing anything.

Images of data.extra_train (metadata train_only=1) get the part `train_only`: every fold
trains on them, none validates, tests or scores on them. One that shares a lesion or patient
with an image of the data, or whose class the data does not have, is rejected.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from stages.core.cli import run_stage
from stages.core.errors import PipelineError
from stages.core.files import write_json
from stages.core.params import choice, get, number, stage_params
from stages.core.paths import (
    HOLDOUT,
    LOCKBOX,
    RAW_DIR,
    SPLIT_COUNTS_FILE,
    SPLIT_FILE,
    SPLIT_REJECTED_FILE,
    TRAIN_ONLY,
)
from stages.core.reports import write_rejected
from stages.core.subgroups import subgroup_columns


def link_groups(items: pd.DataFrame) -> pd.Series:
    """One group id per connected set of images sharing a lesion_id or a patient_id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for isic_id, lesion, patient in items[["isic_id", "lesion_id", "patient_id"]].itertuples(
        index=False
    ):
        for key in (f"lesion:{lesion}" if lesion else "", f"patient:{patient}" if patient else ""):
            if key:
                parent[find(f"image:{isic_id}")] = find(key)
    return items["isic_id"].map(lambda i: find(f"image:{i}"))


def _hold_out(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.Index, pd.Index]:
    """Split off about `fraction` of the groups, stratified by label: (rest, held out)."""
    folds = StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True,
                                 random_state=seed)
    rest, held = next(folds.split(frame, frame["label"], frame["group"]))
    return frame.index[rest], frame.index[held]


def check_class_sizes(frame: pd.DataFrame, parts: int = 3) -> None:
    groups = frame.groupby("label")["group"].nunique()
    small = groups[groups < parts]
    if len(small):
        detail = ", ".join(f"'{c}' has {n} lesion/patient group(s)" for c, n in small.items())
        raise PipelineError(
            f"too few images to split: {detail}; each class needs at least {parts} (one per "
            "split or fold). Add images, drop the class from the source, or use task: binary."
        )


def assign_splits(frame: pd.DataFrame, val: float, test: float, seed: int) -> pd.Series:
    check_class_sizes(frame)
    split = pd.Series("train", index=frame.index)
    rest, test_idx = _hold_out(frame, test, seed)
    split[test_idx] = "test"
    _, val_idx = _hold_out(frame.loc[rest], val / (1 - test), seed)
    split[val_idx] = "val"
    return split


def assign_folds(frame: pd.DataFrame, n_folds: int, seed: int) -> pd.Series:
    check_class_sizes(frame, n_folds)
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    split = pd.Series("", index=frame.index)
    for k, (_, held) in enumerate(folds.split(frame, frame["label"], frame["group"])):
        split.iloc[held] = f"fold{k}"
    return split


def assign(frame: pd.DataFrame, n_folds: int, val: float, test: float, lockbox: float,
           seed: int) -> pd.Series:
    """Each row's part: `lockbox` first (that share of the groups, if any), then folds
    fold0..foldK-1 (n_folds > 0) or train/val/test of what is left."""
    split = pd.Series(LOCKBOX, index=frame.index)
    dev = frame.index if lockbox == 0 else _hold_out(frame, lockbox, seed + 1)[0]
    split[dev] = (assign_folds(frame.loc[dev], n_folds, seed) if n_folds else
                  assign_splits(frame.loc[dev], val=val, test=test, seed=seed))
    return split


def unusable_train_only(frame: pd.DataFrame, train_only: pd.Series) -> pd.Series:
    """Why each training-only row cannot be used ("" if it can): a lesion or patient shared
    with the data would put the same lesion in training and test; an unknown class has no
    output to train."""
    shared = frame["group"].isin(frame.loc[~train_only, "group"])
    unknown = ~frame["label"].isin(frame.loc[~train_only, "label"])
    reason = pd.Series("", index=frame.index)
    reason[train_only & unknown] = frame["label"].map(
        lambda label: f"data.extra_train: class '{label}' is not among the data's classes")
    reason[train_only & shared] = ("data.extra_train: shares a lesion or patient with an "
                                   "image of the data, so it would train on a test lesion")
    return reason


def fold_count(folds: list) -> int:
    """0 for [holdout]; K for [0, 1, ..., K-1]."""
    if folds == [HOLDOUT]:
        return 0
    if folds != list(range(len(folds))) or len(folds) < 3:
        raise PipelineError(f"params.yaml: 'folds' must be [{HOLDOUT}] or [0, 1, ..., K-1] "
                            f"with K >= 3; got {folds!r}")
    return len(folds)


def read_raw(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """download's canonical metadata.csv, each row with its image file's name; a row whose
    image is not there is rejected."""
    meta = pd.read_csv(raw_dir / "metadata.csv", dtype=str, keep_default_na=False)
    for optional in ("benign_malignant", "diagnosis", "lesion_id", "patient_id", "train_only"):
        if optional not in meta:
            meta[optional] = ""  # e.g. no lesion ids: every image is its own group
    files = {p.stem: p.name for p in raw_dir.iterdir() if p.is_file()}  # <isic_id>.<ext>
    meta["image"] = meta["isic_id"].map(files)
    missing = meta["image"].isna()
    rejected = pd.DataFrame({"item": meta.loc[missing, "isic_id"],
                             "reason": f"image file missing in {raw_dir}"})
    return meta[~missing], rejected


def main() -> None:
    params = stage_params("split")
    task = choice(params, "task", ("binary", "multiclass"))
    items, rejected = read_raw(RAW_DIR)
    label_column = "benign_malignant" if task == "binary" else "diagnosis"
    unlabeled = items[items[label_column] == ""]
    rejected = pd.concat([rejected, pd.DataFrame({
        "item": unlabeled["isic_id"], "reason": f"no {label_column} label for task '{task}'"})])
    items = items[items[label_column] != ""]
    frame = pd.DataFrame({
        "isic_id": items["isic_id"],
        "image": items["image"],
        "label": items[label_column],
        "group": link_groups(items),
    })
    frame = pd.concat([frame, subgroup_columns(items)], axis=1)
    reason = unusable_train_only(frame, items["train_only"] == "1")
    rejected = pd.concat([rejected, pd.DataFrame({"item": frame.loc[reason != "", "isic_id"],
                                                  "reason": reason[reason != ""]})])
    frame, train_only = frame[reason == ""].copy(), items.loc[reason == "", "train_only"] == "1"
    write_rejected(rejected, SPLIT_REJECTED_FILE, len(frame),
                   number(params, "data.max_rejected_fraction", 0.0, 1.0),
                   key="data.max_rejected_fraction")

    frame["split"] = TRAIN_ONLY
    frame.loc[~train_only, "split"] = assign(
        frame[~train_only], fold_count(get(params, "folds")),
        val=number(params, "split.val", 0.01, 0.5), test=number(params, "split.test", 0.01, 0.5),
        lockbox=number(params, "split.lockbox", 0.0, 0.5), seed=get(params, "seed"))
    SPLIT_FILE.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(SPLIT_FILE, index=False)

    counts = frame.groupby(["split", "label"]).size().unstack(fill_value=0)
    write_json(SPLIT_COUNTS_FILE, {s: counts.loc[s].to_dict() for s in counts.index})
    print(counts.to_string())


if __name__ == "__main__":
    run_stage("split", main)
