"""The ISIC 2016, 2017 and SIIM-ISIC 2020 ground-truth layouts, each built in tmp_path, and
the real isic2017-dev folder when it is beside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.core.sources.local import detect_layout, read_source
from stages.core.subgroups import subgroup_columns
from tests.test_sources_local import jpeg, labels_of, reasons, write_csv

ISIC2017_DEV = Path(__file__).resolve().parents[2] / "shared/data/isic2017-dev"


def test_isic2017_one_hot_of_two_with_nevus_when_both_are_zero(tmp_path: Path) -> None:
    write_csv(tmp_path / "ISIC-2017_Part3_GroundTruth.csv", [
        {"image_id": "ISIC_0000001", "melanoma": "1.0", "seborrheic_keratosis": "0.0"},
        {"image_id": "ISIC_0000002", "melanoma": "0.0", "seborrheic_keratosis": "1.0"},
        {"image_id": "ISIC_0000003", "melanoma": "0.0", "seborrheic_keratosis": "0.0"},
        {"image_id": "ISIC_0000004", "melanoma": "1.0", "seborrheic_keratosis": "1.0"},
        {"image_id": "ISIC_0000005", "melanoma": "0.5", "seborrheic_keratosis": "0.0"},
    ])
    for i in range(1, 6):
        jpeg(tmp_path / "images" / f"ISIC_000000{i}.jpg")
    assert detect_layout(tmp_path) == "isic2017"
    items, rejected = read_source(tmp_path)
    assert labels_of(items) == {"ISIC_0000001": ("malignant", "melanoma"),
                                "ISIC_0000002": ("benign", "benign keratosis"),
                                "ISIC_0000003": ("benign", "nevus")}
    got = reasons(rejected)
    assert got["ISIC-2017_Part3_GroundTruth.csv row 5 (image_id ISIC_0000004)"] == \
        "both melanoma and seborrheic_keratosis set"
    assert "other than 0/1" in got["ISIC-2017_Part3_GroundTruth.csv row 6 (image_id "
                                   "ISIC_0000005)"]


def test_isic2017_clinical_metadata_files_are_joined(tmp_path: Path) -> None:
    write_csv(tmp_path / "ISIC-2017_Training_Part3_GroundTruth.csv", [
        {"image_id": f"ISIC_000000{i}", "melanoma": "0.0", "seborrheic_keratosis": "0.0"}
        for i in (1, 2, 3)])
    write_csv(tmp_path / "ISIC-2017_Training_Data_metadata.csv", [
        {"image_id": "ISIC_0000001", "age_approximate": "55", "sex": "female"},
        {"image_id": "ISIC_0000002", "age_approximate": "unknown", "sex": "male"}])
    for i in (1, 2, 3):
        jpeg(tmp_path / f"ISIC_000000{i}.jpg")
    items, _ = read_source(tmp_path)
    got = subgroup_columns(items.set_index("isic_id").sort_index())
    assert got["age_years"].to_list() == ["55", "", ""]
    assert got["sex"].to_list() == ["female", "male", ""]


@pytest.mark.parametrize("benign, malignant", [("benign", "malignant"), ("0", "1"),
                                                ("0.0", "1.0")])
def test_isic2016_has_no_header_and_either_label_style(tmp_path: Path, benign, malignant):
    (tmp_path / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv").write_text(
        f"ISIC_0000000,{benign}\nISIC_0000001,{malignant}\nISIC_0000002,maybe\n")
    for i in range(3):
        jpeg(tmp_path / f"ISIC_000000{i}.jpg")
    assert detect_layout(tmp_path) == "isic2016"
    items, rejected = read_source(tmp_path)
    assert labels_of(items) == {"ISIC_0000000": ("benign", ""),
                                "ISIC_0000001": ("malignant", "")}
    assert reasons(rejected) == {
        "ISBI2016_ISIC_Part3_Training_GroundTruth.csv row 3 (image ISIC_0000002)":
            "unknown ISIC 2016 label 'maybe'"}


def test_isic2020_train_csv_keeps_patients_for_grouping(tmp_path: Path) -> None:
    base = {"sex": "male", "age_approx": "45.0", "anatom_site_general_challenge": "torso"}
    write_csv(tmp_path / "train.csv", [
        {"image_name": "ISIC_2637011", "patient_id": "IP_7279968", **base,
         "diagnosis": "unknown", "benign_malignant": "benign", "target": "0"},
        {"image_name": "ISIC_0015719", "patient_id": "IP_7279968", **base,
         "diagnosis": "melanoma", "benign_malignant": "malignant", "target": "1"},
        {"image_name": "ISIC_0052212", "patient_id": "IP_2842074", **base,
         "diagnosis": "nevus", "benign_malignant": "benign", "target": "0"},
    ])
    for name in ("ISIC_2637011", "ISIC_0015719", "ISIC_0052212"):
        jpeg(tmp_path / "train" / f"{name}.jpg")
    assert detect_layout(tmp_path) == "isic2020"
    items, rejected = read_source(tmp_path)
    assert rejected.empty
    assert labels_of(items) == {"ISIC_2637011": ("benign", ""),
                                "ISIC_0015719": ("malignant", "melanoma"),
                                "ISIC_0052212": ("benign", "nevus")}
    assert items.set_index("isic_id")["patient_id"].to_dict() == {
        "ISIC_2637011": "IP_7279968", "ISIC_0015719": "IP_7279968",
        "ISIC_0052212": "IP_2842074"}
    assert "anatom_site_general_challenge" in items  # kept for subgroup metrics


def test_real_isic2017_dev_folder() -> None:
    if not ISIC2017_DEV.is_dir():
        pytest.skip(f"not present: {ISIC2017_DEV}")
    assert detect_layout(ISIC2017_DEV) == "isic2017"
    items, rejected = read_source(ISIC2017_DEV)
    assert rejected.empty
    assert items["diagnosis"].value_counts().to_dict() == {
        "nevus": 1108, "benign keratosis": 296, "melanoma": 290}
    clinical = subgroup_columns(items)
    assert (clinical["age_years"] != "").mean() > 0.9 and (clinical["sex"] != "").mean() > 0.9
