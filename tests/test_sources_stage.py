"""Every source layout through the download stage, and HAM10000's lesion grouping in split.

tests/test_sources_local.py checks the readers; here each folder goes through download.main()
into data/raw, as `dvc repro` runs it, and the ISIC Archive source runs with isic-cli's
download replaced by a folder in its layout (no network here).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from stages import download
from stages.core.sources import isic_archive
from stages.core.sources.local import read_source
from stages.split import assign_splits, link_groups


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), (150, 100, 80)).save(path)


def write_params(root: Path, params: dict, **data) -> None:
    params["data"].update(data)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def isic_cli_folder(folder: Path, n: int = 4) -> Path:
    """What `isic image download` leaves: images, metadata.csv, attribution.txt, licenses/."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    for isic_id in ids:
        image(folder / f"{isic_id}.jpg")
    pd.DataFrame({"isic_id": ids, "attribution": "Memorial Sloan Kettering",
                  "copyright_license": ["CC-BY", "CC-0"] * (n // 2),
                  "diagnosis_1": "Benign", "diagnosis_2": "Benign melanocytic proliferations",
                  "diagnosis_3": "Nevus"}).to_csv(folder / "metadata.csv", index=False)
    (folder / "attribution.txt").write_text("ISIC_0000000: Memorial Sloan Kettering (CC-BY)\n")
    (folder / "licenses").mkdir()
    (folder / "licenses/CC-BY.txt").write_text("Attribution 4.0 International\n")
    (folder / "licenses/CC-0.txt").write_text("CC0 1.0 Universal\n")
    return folder


def test_isic_source_carries_attribution_and_licenses_into_data_raw(in_tmp_repo, params,
                                                                   monkeypatch):
    calls = []

    def fake_isic_cli(search: str, collections: str, limit: int) -> Path:
        calls.append((search, collections, limit))
        return isic_cli_folder(in_tmp_repo / ".cache/isic/query")

    monkeypatch.setattr(isic_archive, "download", fake_isic_cli)
    write_params(in_tmp_repo, params, source="isic",
                 isic={"search": "diagnosis_3:Nevus", "collections": "66", "limit": 4})
    download.main()
    raw = in_tmp_repo / "data/raw"
    assert calls == [("diagnosis_3:Nevus", "66", 4)]
    assert (raw / "attribution.txt").read_text().startswith("ISIC_0000000: Memorial")
    assert sorted(p.name for p in (raw / "licenses").iterdir()) == ["CC-0.txt", "CC-BY.txt"]
    meta = pd.read_csv(raw / "metadata.csv")
    assert set(meta["copyright_license"]) == {"CC-BY", "CC-0"}
    assert set(meta["diagnosis"]) == {"nevus"}
    # isic-cli's folder is a cache outside data/ (kept for a rerun); data/ holds data/raw.
    assert sorted(p.name for p in (in_tmp_repo / "data").iterdir()) == ["raw"]


def _ham(folder: Path, images_in: str) -> Path:
    rows = []
    for i in range(6):
        image_id = f"ISIC_{24306 + i:07d}"
        part = {"root": "", "parts": f"HAM10000_images_part_{1 + i % 2}/"}[images_in]
        image(folder / f"{part}{image_id}.jpg")
        rows.append({"lesion_id": f"HAM_{i // 2:07d}", "image_id": image_id,
                     "dx": ("nv", "mel", "bkl")[i % 3], "dx_type": "histo", "age": "45.0",
                     "sex": "female", "localization": "back"})
    pd.DataFrame(rows).to_csv(folder / "HAM10000_metadata.csv", index=False)
    return folder


def _challenge(folder: Path, year: int) -> Path:
    codes = (["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"] if year == 2018 else
             ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"])
    names = [f"ISIC_{i:07d}" + ("_downsampled" if year == 2019 and i == 1 else "")
             for i in range(4)]
    truth = pd.DataFrame([{"image": n, **{c: float(c == ("NV", "MEL")[k % 2]) for c in codes}}
                          for k, n in enumerate(names)])
    truth.to_csv(folder / f"ISIC{year}_Training_GroundTruth.csv", index=False)
    for name in names:
        image(folder / f"ISIC{year}_Training_Input" / f"{name}.jpg")
    return folder


LAYOUTS = {
    "isic-cli": (lambda f: isic_cli_folder(f), [f"ISIC_{i:07d}" for i in range(4)]),
    "ham10000, part folders": (lambda f: _ham(f, "parts"),
                               [f"ISIC_{24306 + i:07d}" for i in range(6)]),
    "ham10000, one folder": (lambda f: _ham(f, "root"),
                             [f"ISIC_{24306 + i:07d}" for i in range(6)]),
    "ISIC 2018 challenge": (lambda f: _challenge(f, 2018), [f"ISIC_{i:07d}" for i in range(4)]),
    "ISIC 2019 challenge": (lambda f: _challenge(f, 2019), [f"ISIC_{i:07d}" for i in range(4)]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_becomes_the_isic_layout_in_data_raw(layout, in_tmp_repo, params,
                                                         tmp_path):
    build, ids = LAYOUTS[layout]
    (tmp_path / "source").mkdir()
    source = build(tmp_path / "source")
    write_params(in_tmp_repo, params, source="local", local={"path": str(source),
                                                              "layout": "auto"})
    download.main()
    raw = in_tmp_repo / "data/raw"
    meta = pd.read_csv(raw / "metadata.csv", dtype=str, keep_default_na=False)
    assert sorted(meta["isic_id"]) == ids
    assert sorted(p.stem for p in raw.glob("*.jpg")) == ids  # <isic_id>.jpg, flat
    assert (meta["benign_malignant"] != "").all() and (meta["diagnosis"] != "").all()
    assert pd.read_csv(raw / "rejected.csv").empty
    # split re-reads data/raw as an isic-cli folder: the canonical labels survive the trip
    items, rejected = read_source(raw, "isic-cli")
    assert rejected.empty and sorted(items["isic_id"]) == ids


def test_ham10000_lesions_never_straddle_splits(tmp_path):
    """HAM10000 has up to 6 images of one lesion; the split must keep them together."""
    rows = []
    for lesion in range(60):
        for k in range(1 + lesion % 4):  # 1 to 4 images per lesion
            image_id = f"ISIC_{lesion:05d}{k:02d}"
            image(tmp_path / f"HAM10000_images_part_{1 + lesion % 2}" / f"{image_id}.jpg")
            rows.append({"lesion_id": f"HAM_{lesion:07d}", "image_id": image_id,
                         "dx": ("nv", "nv", "mel", "bkl")[lesion % 4]})
    pd.DataFrame(rows).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)

    items, rejected = read_source(tmp_path)
    assert rejected.empty and len(items) == len(rows)
    frame = pd.DataFrame({"isic_id": items["isic_id"], "label": items["diagnosis"],
                          "group": link_groups(items)})
    frame["split"] = assign_splits(frame, val=0.15, test=0.2, seed=0)
    frame["lesion_id"] = items["lesion_id"]
    assert (frame.groupby("lesion_id")["split"].nunique() == 1).all()
    assert set(frame["split"]) == {"train", "val", "test"}
    assert frame.groupby("split")["label"].nunique().min() == 3  # every class in every split
