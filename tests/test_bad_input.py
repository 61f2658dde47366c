"""Bad input through the real stages: every bad item is reported by name with its reason, the
stage goes on, and it stops with one clear line only past the threshold or with nothing left.

Each test builds its bad files itself (tests/bad_files.py) in a temporary folder and runs the
stage there as dvc would: `python -m stages.<name>` with that folder as working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from stages.core.shards import read_split
from tests import bad_files
from tests.conftest import REPO


def run_stage(name: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def write_params(root: Path, params: dict, **sections) -> None:
    for dotted, value in sections.items():
        node = params
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def rejected(path: Path) -> dict[str, str]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(frame["item"], frame["reason"], strict=True))


def one_line_error(result: subprocess.CompletedProcess, stage: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{stage}: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------- download (source: local)


def isic_folder(folder: Path, rows: list[dict], images: list[str], extra_csv: str = "") -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    if extra_csv:
        with (folder / "metadata.csv").open("a") as handle:
            handle.write(extra_csv)
    for name in images:
        (folder / name).write_bytes(bad_files.encode(bad_files.lesion((32, 24))))
    return folder


def good_rows(n: int) -> list[dict]:
    return [{"isic_id": f"ISIC_{i:07d}", "benign_malignant": ("benign", "malignant")[i % 2],
             "diagnosis": ("nevus", "melanoma")[i % 2]} for i in range(n)]


def test_download_lists_every_bad_row_and_file_and_goes_on(in_tmp_repo, params, tmp_path,
                                                           capsys):
    rows = good_rows(10) + [
        {"isic_id": "ISIC_0000100", "benign_malignant": "benign", "diagnosis": "nevus"},
        {"isic_id": "ISIC_0000001", "benign_malignant": "benign", "diagnosis": "nevus"},
        {"isic_id": "ISIC_0000102", "benign_malignant": "", "diagnosis": ""},
        {"isic_id": "ISIC_0000103", "benign_malignant": "benign", "diagnosis": "banana"},
    ]
    images = [f"ISIC_{i:07d}.jpg" for i in range(10)] + [
        "ISIC_0000102.jpg", "ISIC_0000103.jpg", "ISIC_0000104.jpg", "ISIC_0000200.jpg"]
    source = isic_folder(tmp_path / "src", rows, images,
                         extra_csv="ISIC_0000104,benign,nevus,with an unquoted, comma\n")
    write_params(in_tmp_repo, params, data__source="local", data__max_rejected_fraction=0.5,
                 data__local={"path": str(source), "layout": "auto"})
    from stages import download

    download.main()
    assert rejected(in_tmp_repo / "data/raw/rejected.csv") == {
        "metadata.csv row 12 (isic_id ISIC_0000100)":
            "image file missing (no ISIC_0000100.jpg/.jpeg/.png)",
        "metadata.csv row 13 (isic_id ISIC_0000001)": "duplicate isic_id (kept metadata.csv row 3)",
        "metadata.csv row 14 (isic_id ISIC_0000102)":
            "blank label (no benign_malignant, no diagnosis)",
        "metadata.csv row 15 (isic_id ISIC_0000103)": "unknown diagnosis 'banana'",
        "metadata.csv row 16": "row has 5 fields, the header has 3",
        "ISIC_0000104.jpg": "image has no metadata row",
        "ISIC_0000200.jpg": "image has no metadata row",
    }
    raw = pd.read_csv(in_tmp_repo / "data/raw/metadata.csv")
    assert sorted(raw["isic_id"]) == [f"ISIC_{i:07d}" for i in range(10)]
    out = capsys.readouterr().out
    assert "7 items rejected" in out and "image has no metadata row  (e.g." in out


def test_download_past_the_threshold_stops_with_one_line(tmp_path, params):
    source = isic_folder(tmp_path / "src", good_rows(4), ["ISIC_0000000.jpg", "ISIC_0000001.jpg",
                                                          "ISIC_0000002.jpg"])
    write_params(tmp_path, params, data__source="local", data__max_rejected_fraction=0.2,
                 data__local={"path": str(source), "layout": "auto"})
    line = one_line_error(run_stage("download", tmp_path), "download")
    assert "1 of 4 items rejected (25.0%)" in line and "data/raw/rejected.csv" in line
    assert len(rejected(tmp_path / "data/raw/rejected.csv")) == 1  # the report is there


def test_download_with_nothing_usable_says_so(tmp_path, params):
    source = isic_folder(tmp_path / "src", good_rows(3), [])
    write_params(tmp_path, params, data__source="local", data__max_rejected_fraction=1.0,
                 data__local={"path": str(source), "layout": "auto"})
    line = one_line_error(run_stage("download", tmp_path), "download")
    assert "no usable items left" in line


# ---------------------------------------------------------------- prepare


def raw_and_split(root: Path, files: dict[str, bytes | None], splits: dict[str, str]) -> None:
    """data/raw/<name> for each file (None: listed in split.csv but absent on disk)."""
    raw = root / "data/raw"
    raw.mkdir(parents=True)
    for name, data in files.items():
        if data is not None:
            (raw / name).write_bytes(data)
    (root / "data/interim").mkdir(parents=True)
    pd.DataFrame({
        "isic_id": [Path(n).stem for n in files], "image": list(files),
        "label": [("benign", "malignant")[i % 2] for i in range(len(files))],
        "group": [f"g{i}" for i in range(len(files))],
        "split": [splits.get(n, "train") for n in files],
    }).to_csv(root / "data/interim/split.csv", index=False)


BAD_IMAGES = {
    "empty.jpg": (b"", "empty file (0 bytes)"),
    "truncated.jpg": (bad_files.truncated_jpeg(), "corrupt or truncated image"),
    "corrupt.jpg": (bad_files.corrupt_jpeg(), "corrupt or truncated image"),
    "text.jpg": (b"isic_id,diagnosis\nISIC_1,nevus\n", "not an image Pillow can read"),
    "bomb.png": (bad_files.png_bomb(), "too many pixels"),
    "missing.jpg": (None, "image file missing"),
}


def test_prepare_rejects_bad_images_converts_odd_ones_and_goes_on(tmp_path, params):
    good = {f"lesion{i}.jpg": bad_files.encode(bad_files.lesion(seed=i)) for i in range(6)}
    odd = {**bad_files.colour_modes(), "exif6.jpg": bad_files.exif_rotated(6),
           "exif8.jpg": bad_files.exif_rotated(8), "huge.jpg": bad_files.huge_jpeg()}
    bad = {name: data for name, (data, _) in BAD_IMAGES.items()}
    splits = {"lesion0.jpg": "val", "lesion1.jpg": "val", "lesion2.jpg": "test",
              "lesion3.jpg": "test", "empty.jpg": "val", "bomb.png": "test"}
    raw_and_split(tmp_path, {**good, **odd, **bad}, splits)
    write_params(tmp_path, params, prepare__size=32, prepare__shard_size=4,
                 prepare__max_rejected_fraction=0.5)

    result = run_stage("prepare", tmp_path)
    assert result.returncode == 0, result.stderr
    reasons = rejected(tmp_path / "data/interim/rejected.csv")
    assert set(reasons) == set(BAD_IMAGES)
    for name, (_, why) in BAD_IMAGES.items():
        assert reasons[name].startswith(why), (name, reasons[name])
    assert "6 items rejected" in result.stdout and "too many pixels" in result.stdout

    prepared = tmp_path / "data/processed/prepared"
    kept = {split: read_split(prepared, split) for split in ("train", "val", "test")}
    assert sorted(i for s in kept.values() for i in s.ids) == sorted(
        Path(n).stem for n in {**good, **odd})
    train = kept["train"]
    assert len(list(prepared.glob("train-*.npz"))) == -(-len(train.ids) // 4)  # 4 per shard
    for name in ("exif6", "exif8"):  # upright: red on the left, blue on the right
        image = train.images[list(train.ids).index(name)].astype(int)
        assert image[16, 2, 0] > 200 and image[16, 29, 2] > 200, name
    assert not list(tmp_path.rglob("*.tmp*"))


def test_prepare_past_the_threshold_stops_with_one_line_after_the_report(tmp_path, params):
    files = {f"lesion{i}.jpg": bad_files.encode(bad_files.lesion(seed=i)) for i in range(9)}
    files["truncated.jpg"] = bad_files.truncated_jpeg()
    raw_and_split(tmp_path, files, {"lesion0.jpg": "val", "lesion1.jpg": "test"})
    write_params(tmp_path, params, prepare__size=16, prepare__max_rejected_fraction=0.05)
    line = one_line_error(run_stage("prepare", tmp_path), "prepare")
    assert line == ("prepare: 1 of 10 items rejected (10.0%), more than "
                    "prepare.max_rejected_fraction=0.05; fix the input (see "
                    "data/interim/rejected.csv) or raise prepare.max_rejected_fraction in "
                    "params.yaml")
    assert list(rejected(tmp_path / "data/interim/rejected.csv")) == ["truncated.jpg"]


def test_prepare_with_a_split_left_empty_names_it(tmp_path, params):
    files = {f"lesion{i}.jpg": bad_files.encode(bad_files.lesion(seed=i)) for i in range(4)}
    files["val_bad.jpg"] = b"not a jpeg"
    raw_and_split(tmp_path, files, {"val_bad.jpg": "val", "lesion0.jpg": "test"})
    write_params(tmp_path, params, prepare__size=16, prepare__max_rejected_fraction=0.5)
    line = one_line_error(run_stage("prepare", tmp_path), "prepare")
    assert "no usable images left in the val split" in line
    assert list(rejected(tmp_path / "data/interim/rejected.csv")) == ["val_bad.jpg"]


# ---------------------------------------------------------------- split


def test_split_names_a_class_too_small_to_split(tmp_path, params):
    rows = [{"isic_id": f"ISIC_{i:07d}", "benign_malignant": "benign",
             "diagnosis": "nevus" if i < 10 else "dermatofibroma"} for i in range(12)]
    isic_folder(tmp_path / "data/raw", rows, [f"{row['isic_id']}.jpg" for row in rows])
    write_params(tmp_path, params, task="multiclass")
    line = one_line_error(run_stage("split", tmp_path), "split")
    assert "'dermatofibroma' has 2 lesion/patient group(s)" in line and "'nevus'" not in line
