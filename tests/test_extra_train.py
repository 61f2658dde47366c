"""data.extra_train: other folders' images train every fold and are never validated, tested or
scored; a duplicate, a shared lesion or an unknown class is rejected with its reason."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from stages import augment, download, features, prepare, split
from stages.core.errors import PipelineError
from stages.core.fold_data import training_data
from stages.core.frozen_features import fold_features
from stages.core.paths import PREPARED_DIR, SPLIT_FILE, TRAIN_ONLY
from stages.core.shards import fold_parts, read_split, read_training_part
from stages.split import link_groups, unusable_train_only
from tests.test_sources_stage import _ham, isic_cli_folder


def _write_params(root: Path, params: dict, folds: list, extra: list[Path]) -> None:
    params["data"].update(source="synthetic", extra_train=[str(f) for f in extra])
    params["data"]["synthetic"].update(count=40, size=48)
    params.update(task="binary", folds=folds)
    params["prepare"]["size"] = 16
    params["augment"].update(copies=1, balance=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def _extra_folders(tmp_path: Path) -> tuple[Path, Path]:
    """An isic-cli folder (4 nevi) and a HAM10000 folder (6 images) that repeats one of its ids."""
    cli = isic_cli_folder(tmp_path / "extra-cli")
    ham = _ham(tmp_path / "extra-ham", "root")
    (ham / "ATTRIBUTION.txt").write_text("HAM10000, CC BY-NC 4.0\n")
    meta = pd.read_csv(ham / "HAM10000_metadata.csv")
    meta.loc[0, "image_id"] = "ISIC_0000002"
    meta.to_csv(ham / "HAM10000_metadata.csv", index=False)
    (ham / "ISIC_0024306.jpg").rename(ham / "ISIC_0000002.jpg")
    return cli, ham


@pytest.mark.parametrize("folds", [["holdout"], [0, 1, 2]])
def test_extra_images_train_every_fold_and_nothing_else(folds, in_tmp_repo, params, tmp_path):
    cli, ham = _extra_folders(tmp_path)
    _write_params(in_tmp_repo, params, folds, [cli, ham])
    download.main()
    raw = in_tmp_repo / "data/raw"
    meta = pd.read_csv(raw / "metadata.csv", dtype=str, keep_default_na=False)
    extra_ids = set(meta.loc[meta["train_only"] == "1", "isic_id"])
    assert len(meta) == 40 + 4 + 5 and len(extra_ids) == 9
    rejected = pd.read_csv(raw / "rejected.csv")
    assert list(rejected["item"]) == [f"{ham}: ISIC_0000002"]  # kept once, from the first folder
    assert "already in the data" in rejected["reason"][0]
    assert (raw / "attribution-extra-cli.txt").exists()
    assert (raw / "attribution-extra-ham.txt").read_text().startswith("HAM10000")

    split.main()
    table = pd.read_csv(SPLIT_FILE, dtype=str)
    assert set(table.loc[table["split"] == TRAIN_ONLY, "isic_id"]) == extra_ids
    prepare.main()
    augment.main()
    features.main("lite0_frozen")
    assert set(read_training_part(TRAIN_ONLY).ids) == extra_ids
    parts = list(pd.read_json(PREPARED_DIR / "meta.json", typ="series")["counts"])
    for fold in folds:
        train, val, _ = training_data(str(fold))
        assert extra_ids <= set(train.ids)
        # The logistic head's rows: the same images in the same order, and the extra ones
        # marked, so that its inner CV fits on them and never scores them.
        train_features, val_features, train_only = fold_features("lite0_frozen", str(fold), parts)
        assert list(train_features.ids) == list(train.ids)
        assert list(val_features.ids) == list(val.ids)
        assert set(train.ids[train_only]) == extra_ids
        scored = fold_parts(str(fold), parts)
        for part in (scored.val, scored.test):
            assert not extra_ids & set(read_split(PREPARED_DIR, part).ids)
        assert not extra_ids & set(val.ids)


def test_a_shared_lesion_or_an_unknown_class_is_rejected_with_its_reason():
    items = pd.DataFrame({
        "isic_id": ["A", "B", "C", "D", "E"],
        "lesion_id": ["L1", "L2", "L1", "L3", "L4"],  # C is a second photo of A's lesion
        "patient_id": ["", "", "", "", ""],
        "label": ["nevus", "melanoma", "nevus", "dermatofibroma", "melanoma"],
    })
    frame = items.assign(group=link_groups(items))
    train_only = pd.Series([False, False, True, True, True])
    reason = unusable_train_only(frame, train_only)
    assert list(reason == "") == [True, True, False, False, True]
    assert "shares a lesion or patient" in reason[2]
    assert "class 'dermatofibroma' is not among the data's classes" in reason[3]


def test_a_missing_extra_folder_is_named(in_tmp_repo, params, tmp_path):
    _write_params(in_tmp_repo, params, ["holdout"], [tmp_path / "nowhere"])
    with pytest.raises(PipelineError, match="data.extra_train: '.*nowhere' is not a folder"):
        download.main()


def test_extra_train_is_off_by_default(params):
    assert params["data"]["extra_train"] == []
