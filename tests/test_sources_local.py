"""Tests for stages.core.labels and stages.core.sources.local (each layout built in tmp_path)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from stages.core.labels import challenge_labels, ham10000_labels, isic_labels
from stages.core.sources.local import CANONICAL, detect_layout, read_source

REAL_UDA1 = Path(__file__).resolve().parents[2] / "shared/data/isic-uda1-dev"


def jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", (8, 8), (120, 80, 60)).save(path, format=kind)


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def reasons(rejected: pd.DataFrame) -> dict[str, str]:
    return dict(zip(rejected["item"], rejected["reason"], strict=True))


def labels_of(items: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {r.isic_id: (r.benign_malignant, r.diagnosis) for r in items.itertuples()}


# ---------------------------------------------------------------- isic-cli


def isic_row(isic_id: str, bm: str, dx: str) -> dict[str, str]:
    return {"isic_id": isic_id, "attribution": "Anonymous", "copyright_license": "CC-0",
            "age_approx": "40", "benign_malignant": bm, "diagnosis": dx}


def test_real_isic_cli_folder() -> None:
    if not REAL_UDA1.is_dir():
        pytest.skip(f"real isic-cli example folder not present: {REAL_UDA1}")
    assert detect_layout(REAL_UDA1) == "isic-cli"
    items, rejected = read_source(REAL_UDA1)
    assert len(items) == 400 and rejected.empty
    counts = items.groupby(["benign_malignant", "diagnosis"]).size().to_dict()
    # 286 benign: 284 nevus + 2 rows whose diagnosis is blank in the source (kept: the
    # benign/malignant label is still known); 114 malignant, all melanoma.
    assert counts == {("benign", "nevus"): 284, ("benign", ""): 2, ("malignant", "melanoma"): 114}
    assert (items["benign_malignant"] == "benign").sum() == 286
    assert list(items.columns[:7]) == CANONICAL and items.columns[-1] == "image_path"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in items["image_path"])


def test_isic_cli_layout(tmp_path: Path) -> None:
    write_csv(tmp_path / "metadata.csv", [
        isic_row("ISIC_0000001", "benign", "nevus"),
        isic_row("ISIC_0000002", "malignant", "melanoma"),
        isic_row("ISIC_0000003", "benign", "seborrheic keratosis"),
        isic_row("ISIC_0000004", "", "basal cell carcinoma"),  # blank bm implied by the class
    ])
    for name in ("ISIC_0000001.jpg", "ISIC_0000002.JPEG", "ISIC_0000003.png", "ISIC_0000004.jpg"):
        jpeg(tmp_path / name)
    # Not images, never reported.
    (tmp_path / "attribution.txt").write_text("Anonymous, CC-0\n")
    (tmp_path / "licenses").mkdir()
    (tmp_path / "licenses" / "CC-0.txt").write_text("cc0")
    (tmp_path / "README").write_text("readme")

    assert detect_layout(tmp_path) == "isic-cli"
    items, rejected = read_source(tmp_path)
    assert rejected.empty
    assert list(items.columns) == [*CANONICAL, "age_approx", "image_path"]
    assert labels_of(items) == {
        "ISIC_0000001": ("benign", "nevus"), "ISIC_0000002": ("malignant", "melanoma"),
        "ISIC_0000003": ("benign", "benign keratosis"),
        "ISIC_0000004": ("malignant", "basal cell carcinoma"),
    }
    assert items.loc[1, "image_path"] == str(tmp_path.resolve() / "ISIC_0000002.JPEG")
    assert set(items["attribution"]) == {"Anonymous"} and set(items["lesion_id"]) == {""}


def test_isic_cli_bad_cases_are_rejected_with_reasons(tmp_path: Path) -> None:
    write_csv(tmp_path / "metadata.csv", [
        isic_row("ISIC_1", "benign", "nevus"),            # row 2: fine
        isic_row("ISIC_2", "malignant", "melanoma"),      # row 3: image missing
        isic_row("ISIC_1", "malignant", "melanoma"),      # row 4: duplicate of row 2
        isic_row("ISIC_4", "", ""),                       # row 5: blank label
        isic_row("ISIC_5", "benign", "banana"),           # row 6: unknown diagnosis
        isic_row("ISIC_6", "maybe", "nevus"),             # row 7: unknown benign_malignant
        isic_row("ISIC_7", "malignant", "melanoma"),      # row 8: fine
    ])
    for stem in ("ISIC_1", "ISIC_4", "ISIC_5", "ISIC_6", "ISIC_7", "ISIC_orphan"):
        jpeg(tmp_path / f"{stem}.jpg")
    jpeg(tmp_path / "ISIC_7.png")  # second file for the same id

    items, rejected = read_source(tmp_path)
    assert labels_of(items) == {"ISIC_1": ("benign", "nevus"), "ISIC_7": ("malignant", "melanoma")}
    assert reasons(rejected) == {
        "metadata.csv row 3 (isic_id ISIC_2)": "image file missing (no ISIC_2.jpg/.jpeg/.png)",
        "metadata.csv row 4 (isic_id ISIC_1)": "duplicate isic_id (kept metadata.csv row 2)",
        "metadata.csv row 5 (isic_id ISIC_4)": "blank label (no benign_malignant, no diagnosis)",
        "metadata.csv row 6 (isic_id ISIC_5)": "unknown diagnosis 'banana'",
        "metadata.csv row 7 (isic_id ISIC_6)": "unknown benign_malignant 'maybe'",
        "ISIC_orphan.jpg": "image has no metadata row",
        "ISIC_7.png": "another image file for the same id is used (ISIC_7.jpg)",
    }


def test_hierarchical_schema_mapping() -> None:
    rows = [  # diagnosis_1, diagnosis_2, diagnosis_3, diagnosis_4
        ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "Melanoma Invasive", ""),
        ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "Melanoma in situ", ""),
        ("Benign", "Benign melanocytic proliferations", "Nevus", "Nevus, Spitz"),
        ("Benign", "Benign epidermal proliferations", "Pigmented benign keratosis", ""),
        ("Indeterminate", "Indeterminate epidermal proliferations",
         "Solar or actinic keratosis", ""),
        ("Malignant", "Malignant epidermal proliferations", "Squamous cell carcinoma, NOS", ""),
        ("Malignant", "Malignant adnexal epithelial proliferations - Follicular",
         "Basal cell carcinoma", "Basal cell carcinoma, Nodular"),
        ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic", "Dermatofibroma", ""),
        ("Benign", "Benign soft tissue proliferations - Vascular", "Hemangioma", ""),
        ("Benign", "Benign melanocytic proliferations", "Lentigo simplex", ""),
        ("Benign", "Benign melanocytic proliferations", "", ""),  # ambiguous group, no level 3
        ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "", ""),
        ("Benign", "", "", ""),
        ("Indeterminate", "", "", ""),
        ("Benign", "Made-up group", "", ""),
        ("Benign", "Benign melanocytic proliferations", "Made-up lesion", ""),
        ("Sort of", "", "", ""),
    ]
    meta = pd.DataFrame(rows, columns=["diagnosis_1", "diagnosis_2", "diagnosis_3", "diagnosis_4"])
    out = isic_labels(meta)
    assert list(out.itertuples(index=False, name=None)) == [
        ("malignant", "melanoma", ""), ("malignant", "melanoma", ""), ("benign", "nevus", ""),
        ("benign", "benign keratosis", ""), ("", "actinic keratosis", ""),
        ("malignant", "squamous cell carcinoma", ""), ("malignant", "basal cell carcinoma", ""),
        ("benign", "dermatofibroma", ""), ("benign", "vascular lesion", ""),
        ("benign", "other", ""), ("benign", "", ""), ("malignant", "melanoma", ""),
        ("benign", "", ""),
        ("", "", "blank label (no benign_malignant, no diagnosis)"),
        ("", "", "unknown diagnosis_2 'Made-up group'"),
        ("", "", "unknown diagnosis_3 'Made-up lesion'"),
        ("", "", "unknown diagnosis_1 'Sort of'"),
    ]


def test_hierarchical_schema_end_to_end(tmp_path: Path) -> None:
    write_csv(tmp_path / "metadata.csv", [
        {"isic_id": "ISIC_1", "attribution": "A", "copyright_license": "CC-BY",
         "diagnosis_1": "Malignant",
         "diagnosis_2": "Malignant melanocytic proliferations (Melanoma)",
         "diagnosis_3": "Melanoma in situ", "lesion_id": "IL_1", "patient_id": "IP_1"},
        {"isic_id": "ISIC_2", "attribution": "A", "copyright_license": "CC-BY",
         "diagnosis_1": "Benign", "diagnosis_2": "Benign melanocytic proliferations",
         "diagnosis_3": "Nevus", "lesion_id": "", "patient_id": ""},
    ])
    jpeg(tmp_path / "ISIC_1.jpg")
    jpeg(tmp_path / "ISIC_2.jpg")
    items, rejected = read_source(tmp_path, layout="isic-cli")
    assert rejected.empty
    assert labels_of(items) == {"ISIC_1": ("malignant", "melanoma"), "ISIC_2": ("benign", "nevus")}
    assert items.loc[0, ["lesion_id", "patient_id"]].tolist() == ["IL_1", "IP_1"]
    assert "diagnosis_3" in items.columns  # original columns kept after the canonical ones


# ---------------------------------------------------------------- HAM10000


def test_ham10000_split_across_part_folders(tmp_path: Path) -> None:
    dx = {"ISIC_0024306": "nv", "ISIC_0024307": "mel", "ISIC_0024308": "bcc",
          "ISIC_0024309": "akiec", "ISIC_0024310": "bkl", "ISIC_0024311": "df",
          "ISIC_0024312": "vasc", "ISIC_0024313": "xyz", "ISIC_0024314": "nv"}
    write_csv(tmp_path / "HAM10000_metadata.csv", [
        {"lesion_id": f"HAM_{i:07d}", "image_id": image_id, "dx": code, "dx_type": "histo",
         "age": "50.0", "sex": "male", "localization": "back"}
        for i, (image_id, code) in enumerate(dx.items())
    ])
    for i, image_id in enumerate(list(dx)[:-1]):  # ISIC_0024314 has no image
        jpeg(tmp_path / f"HAM10000_images_part_{1 + i % 2}" / f"{image_id}.jpg")
    jpeg(tmp_path / "HAM10000_images_part_2" / "ISIC_9999999.jpg")  # orphan
    (tmp_path / "LICENSE").write_text("CC-BY-NC")

    assert detect_layout(tmp_path) == "ham10000"
    items, rejected = read_source(tmp_path)
    assert labels_of(items) == {
        "ISIC_0024306": ("benign", "nevus"), "ISIC_0024307": ("malignant", "melanoma"),
        "ISIC_0024308": ("malignant", "basal cell carcinoma"),
        "ISIC_0024309": ("malignant", "actinic keratosis"),
        "ISIC_0024310": ("benign", "benign keratosis"),
        "ISIC_0024311": ("benign", "dermatofibroma"),
        "ISIC_0024312": ("benign", "vascular lesion"),
    }
    assert items.loc[0, "lesion_id"] == "HAM_0000000"
    assert items.loc[1, "image_path"].endswith("HAM10000_images_part_2/ISIC_0024307.jpg")
    assert "image_id" not in items.columns and "dx" in items.columns
    assert reasons(rejected) == {
        "HAM10000_metadata.csv row 9 (image_id ISIC_0024313)": "unknown dx code 'xyz'",
        "HAM10000_metadata.csv row 10 (image_id ISIC_0024314)":
            "image file missing (no ISIC_0024314.jpg/.jpeg/.png)",
        "HAM10000_images_part_2/ISIC_9999999.jpg": "image has no metadata row",
    }


def test_ham10000_labels_unit() -> None:
    out = ham10000_labels(pd.Series(["mel", "NV", "", "akiec"]))
    assert out["benign_malignant"].tolist() == ["malignant", "benign", "", "malignant"]
    assert out["reason"].tolist()[2] == "blank label (no benign_malignant, no diagnosis)"


# ---------------------------------------------------------------- challenge


CODES_2018 = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
CODES_2019 = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def onehot(image: str, codes: list[str], hot: dict[str, str]) -> dict[str, str]:
    return {"image": image, **{c: hot.get(c, "0.0") for c in codes}}


def test_challenge_2018_with_bad_onehot_rows(tmp_path: Path) -> None:
    write_csv(tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv", [
        onehot("ISIC_0024306", CODES_2018, {"NV": "1.0"}),
        onehot("ISIC_0024307", CODES_2018, {"AKIEC": "1.0"}),
        onehot("ISIC_0024308", CODES_2018, {"MEL": "1.0", "NV": "1.0"}),
        onehot("ISIC_0024309", CODES_2018, {}),
        onehot("ISIC_0024310", CODES_2018, {"BKL": "0.5"}),
    ])
    folder = tmp_path / "ISIC2018_Task3_Training_Input"
    for n in range(24306, 24311):
        jpeg(folder / f"ISIC_00{n}.jpg")
    (folder / "ATTRIBUTION.txt").write_text("x")
    (folder / "LICENSE.txt").write_text("x")

    assert detect_layout(tmp_path) == "challenge"
    items, rejected = read_source(tmp_path)
    assert labels_of(items) == {"ISIC_0024306": ("benign", "nevus"),
                                "ISIC_0024307": ("malignant", "actinic keratosis")}
    assert set(items["attribution"]) == {""} and set(items["copyright_license"]) == {""}
    gt = "ISIC2018_Task3_Training_GroundTruth.csv"
    assert reasons(rejected) == {
        f"{gt} row 4 (image ISIC_0024308)": "one-hot row has 2 classes set",
        f"{gt} row 5 (image ISIC_0024309)": "one-hot row has 0 classes set",
        f"{gt} row 6 (image ISIC_0024310)": "one-hot row has values other than 0/1",
    }


def test_challenge_2019_merges_metadata(tmp_path: Path) -> None:
    write_csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv", [
        onehot("ISIC_0000000", CODES_2019, {"NV": "1.0"}),
        onehot("ISIC_0000001_downsampled", CODES_2019, {"SCC": "1.0"}),
        onehot("ISIC_0000002", CODES_2019, {"UNK": "1.0"}),
    ])
    write_csv(tmp_path / "ISIC_2019_Training_Metadata.csv", [
        {"image": "ISIC_0000000", "age_approx": "55", "anatom_site_general": "anterior torso",
         "lesion_id": "BCN_0000001", "sex": "female"},
        {"image": "ISIC_0000001_downsampled", "age_approx": "30", "anatom_site_general": "",
         "lesion_id": "", "sex": "male"},
    ])
    for name in ("ISIC_0000000", "ISIC_0000001_downsampled", "ISIC_0000002"):
        jpeg(tmp_path / "ISIC_2019_Training_Input" / f"{name}.jpg")

    items, rejected = read_source(tmp_path)
    assert rejected.empty
    assert labels_of(items) == {"ISIC_0000000": ("benign", "nevus"),
                                "ISIC_0000001": ("malignant", "squamous cell carcinoma"),
                                "ISIC_0000002": ("", "other")}
    assert items["lesion_id"].tolist() == ["BCN_0000001", "", ""]
    assert items.loc[1, "image_path"].endswith("ISIC_0000001_downsampled.jpg")
    assert "age_approx" in items.columns and "image" not in items.columns


def test_challenge_labels_unit() -> None:
    frame = pd.DataFrame([{"MEL": "0", "NV": "0", "BCC": "1"}, {"MEL": "x", "NV": "1", "BCC": "0"}])
    out = challenge_labels(frame)
    assert out.iloc[0].tolist() == ["malignant", "basal cell carcinoma", ""]
    assert out.iloc[1].tolist() == ["", "", "one-hot row has values other than 0/1"]


# ---------------------------------------------------------------- detection and speed


def test_detect_layout_errors_on_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unrecognized dataset layout") as err:
        detect_layout(tmp_path)
    assert str(tmp_path) in str(err.value) and "metadata.csv" in str(err.value)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        detect_layout(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown layout"):
        read_source(tmp_path, layout="kaggle")


def test_large_folder_is_fast(tmp_path: Path) -> None:
    n = 12_000
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    pd.DataFrame({"isic_id": ids, "benign_malignant": "benign", "diagnosis": "nevus"}).to_csv(
        tmp_path / "metadata.csv", index=False)
    for image_id in ids:  # listing never opens the files, so empty files will do
        (tmp_path / f"{image_id}.jpg").touch()
    start = time.perf_counter()
    items, rejected = read_source(tmp_path)
    assert len(items) == n and rejected.empty
    assert time.perf_counter() - start < 5


def test_canonical_vocabulary_reads_back_as_itself():
    """download writes canonical names into data/raw/metadata.csv; split reads them again."""
    from stages.core.labels import DIAGNOSES, isic_labels

    meta = pd.DataFrame({"isic_id": [f"I{i}" for i in range(len(DIAGNOSES))],
                         "benign_malignant": [""] * len(DIAGNOSES), "diagnosis": DIAGNOSES})
    labels = isic_labels(meta)
    assert list(labels["diagnosis"]) == list(DIAGNOSES)
    assert (labels["reason"] == "").all()
