"""Read a local dataset folder (isic-cli, HAM10000 or ISIC challenge layout) into canonical items.

``read_source`` never drops anything silently: every metadata row or image file it leaves out
gets one row in ``rejected`` with the reason. It is vectorized and lists each folder once
(os.scandir), so 10,000+ images cost no per-row filesystem calls.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pandas as pd

from stages.core.errors import DataError, MissingInputError, PipelineError
from stages.core.labels import (
    CHALLENGE_CODES,
    challenge_labels,
    ham10000_labels,
    isic2016_labels,
    isic2017_labels,
    isic_labels,
)

CANONICAL = ["isic_id", "benign_malignant", "diagnosis", "lesion_id", "patient_id",
             "attribution", "copyright_license"]
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
LAYOUTS = ("isic-cli", "ham10000", "challenge", "isic2016", "isic2017", "isic2020")
ISIC_ID = re.compile(r"^ISIC_\d{7}$")


def _csv_files(folder: Path) -> dict[Path, list[str]]:
    """Top-level *.csv files of `folder` -> their header (first row, stripped)."""
    headers = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(".csv"):
            with open(entry.path, newline="", encoding="utf-8-sig", errors="replace") as handle:
                headers[Path(entry.path)] = [c.strip() for c in next(csv.reader(handle), [])]
    return headers


def _is_ham(header: list[str]) -> bool:
    return {"image_id", "dx"} <= set(header)


def _is_ground_truth(header: list[str]) -> bool:
    return "image" in header and sum(c.upper() in CHALLENGE_CODES for c in header) >= 2


def _is_isic2017(header: list[str]) -> bool:
    return {"image_id", "melanoma", "seborrheic_keratosis"} <= set(header)


def _is_isic2020(header: list[str]) -> bool:
    return {"image_name", "patient_id", "benign_malignant"} <= set(header)


def _is_isic2016(header: list[str]) -> bool:
    """No header: the first row is already `ISIC_0000000,benign` (or 0/1)."""
    return len(header) == 2 and bool(ISIC_ID.match(header[0])) and header[1].lower() in (
        "benign", "malignant", "0", "1", "0.0", "1.0")


def detect_layout(path: Path) -> str:
    """The layout of the dataset folder `path`, from its CSV files (see LAYOUTS)."""
    path = Path(path)
    if not path.is_dir():
        raise MissingInputError(f"{path}: not a folder (expected a dataset folder)")
    headers = _csv_files(path)
    if "isic_id" in headers.get(path / "metadata.csv", []):
        return "isic-cli"
    if any(_is_ham(h) for h in headers.values()):
        return "ham10000"
    for layout, test in (("isic2017", _is_isic2017), ("isic2020", _is_isic2020),
                         ("isic2016", _is_isic2016)):
        if any(test(h) for h in headers.values()):
            return layout
    if any(_is_ground_truth(h) for h in headers.values()):
        return "challenge"
    found = ", ".join(p.name for p in headers) or "no CSV file"
    raise DataError(
        f"{path}: unrecognized dataset layout (found {found}). Expected one of: metadata.csv "
        "with an isic_id column (isic-cli); HAM10000_metadata.csv with image_id,dx "
        "(ham10000); a ground-truth CSV with an image column and one-hot class columns such "
        "as MEL,NV,BCC (ISIC 2018/2019 challenge); image_id,melanoma,seborrheic_keratosis "
        "(ISIC 2017); ISIC_xxxxxxx,benign|malignant without a header (ISIC 2016); train.csv "
        "with image_name,patient_id,...,benign_malignant (SIIM-ISIC 2020)")


def _list_images(root: Path, subfolders: bool) -> pd.DataFrame:
    """Image files in `root` (and one level of subfolders): columns stem, rel, path.

    Sorted root first, then subfolders by name, so "first file wins" is deterministic.
    """
    rows: list[tuple[str, str, str]] = []
    folders = [(root, "")]
    while folders:
        folder, prefix = folders.pop(0)
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            if entry.is_file() and ext.lower() in IMAGE_EXTS:
                rows.append((stem, prefix + entry.name, entry.path))
        if subfolders and folder == root:
            folders += [(Path(e.path), e.name + "/") for e in entries if e.is_dir()]
    return pd.DataFrame(rows, columns=["stem", "rel", "path"], dtype=object)


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[column].fillna("").astype(str).str.strip().astype(object)


def _read_csv(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A metadata CSV as text (ids like "0012" and one-hot "1.0" must survive untouched).

    Returns (rows, rejected). A row with more fields than the header (an unquoted comma in a
    free-text column, say) cannot be read without guessing which field is which, so it is
    rejected; a shorter row is padded with blanks, as spreadsheets write them.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            records = list(csv.reader(handle))
    except UnicodeDecodeError as err:
        raise PipelineError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); "
                            "save it as UTF-8") from err
    except csv.Error as err:
        raise PipelineError(f"{path}: not a readable CSV file ({err})") from err
    if not records or not any(records[0]):
        raise PipelineError(f"{path}: empty CSV file, no header row")
    header = [c.strip() for c in records[0]]
    rows, where, bad = [], [], []
    for number, record in enumerate(records[1:], start=2):  # CSV row numbers, header = 1
        if not any(field.strip() for field in record):
            continue  # blank line
        if len(record) > len(header):
            bad.append({"item": f"{path.name} row {number}",
                        "reason": f"row has {len(record)} fields, the header has {len(header)}"})
            continue
        rows.append(record + [""] * (len(header) - len(record)))
        where.append(f"{path.name} row {number}")
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame["_where"] = where
    return frame, pd.DataFrame(bad, columns=["item", "reason"])


def _assemble(meta: pd.DataFrame, keys: pd.Series, ids: pd.Series, labels: pd.DataFrame,
              id_label: str, images: pd.DataFrame, drop: list[str], bad_rows: pd.DataFrame,
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join metadata rows to image files and split them into (items, rejected).

    keys: image file stems to look up; ids: canonical isic_id (usually the same).
    All four share meta's index. Each left-out row gets the first reason that applies, so it
    is reported once.
    """
    first_img = images.drop_duplicates("stem")
    path_of = pd.Series(first_img["path"].values, index=first_img["stem"].values, dtype=object)
    first_row = pd.Series(meta["_where"].values, index=ids.values)
    first_row = first_row[~first_row.index.duplicated()]

    reason = pd.Series("", index=meta.index, dtype=object)
    checks = [
        (ids == "", f"blank {id_label}"),
        ((ids != "") & ids.duplicated(), "duplicate " + id_label + " (kept "
         + ids.map(first_row).fillna("").astype(str) + ")"),
        (labels["reason"] != "", labels["reason"]),
        (~keys.isin(path_of.index), "image file missing (no " + keys + ".jpg/.jpeg/.png)"),
    ]
    for bad, why in checks:
        reason = reason.mask((reason == "") & bad, why)

    label = (" (" + id_label + " " + keys + ")").where(keys != "", "")
    rejected_rows = pd.DataFrame({"item": meta["_where"] + label, "reason": reason})
    rejected_rows = rejected_rows[reason != ""]

    # Image files nobody asked for, and second files for one id (e.g. x.jpg and x.png).
    orphan = ~images["stem"].isin(set(keys))
    spare = images["stem"].duplicated() & ~orphan
    kept_rel = images.drop_duplicates("stem").set_index("stem")["rel"]
    rejected_files = pd.concat([
        pd.DataFrame({"item": images["rel"][orphan], "reason": "image has no metadata row"}),
        pd.DataFrame({"item": images["rel"][spare],
                      "reason": "another image file for the same id is used ("
                      + images["stem"][spare].map(kept_rel).astype(str) + ")"}),
    ])

    ok = reason == ""
    items = pd.DataFrame({"isic_id": ids[ok]})
    items["benign_malignant"] = labels["benign_malignant"][ok]
    items["diagnosis"] = labels["diagnosis"][ok]
    for column in CANONICAL[3:]:
        items[column] = _text(meta, column)[ok]
    extras = [c for c in meta.columns if c not in [*CANONICAL, *drop, "_where", "image_path"]]
    items = pd.concat([items, meta.loc[ok, extras]], axis=1)
    items["image_path"] = keys[ok].map(path_of)
    rejected = pd.concat([bad_rows, rejected_rows, rejected_files], ignore_index=True)
    return items.reset_index(drop=True).astype(str), rejected.astype(str)


def _read_isic_cli(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    meta, bad_rows = _read_csv(path / "metadata.csv")
    ids = _text(meta, "isic_id")
    return _assemble(meta, ids, ids, isic_labels(meta), "isic_id",
                     _list_images(path, subfolders=False), [], bad_rows)


def _read_ham10000(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    found = [p for p, h in _csv_files(path).items() if _is_ham(h)]
    if not found:
        raise DataError(f"{path}: no HAM10000 metadata CSV (a CSV with image_id and dx)")
    meta, bad_rows = _read_csv(found[0])
    ids = _text(meta, "image_id")
    return _assemble(meta, ids, ids, ham10000_labels(meta["dx"]), "image_id",
                     _list_images(path, subfolders=True), ["image_id"], bad_rows)


def _read_challenge(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    headers = _csv_files(path)
    found = [p for p, h in headers.items() if _is_ground_truth(h)]
    if not found:
        raise DataError(f"{path}: no ground-truth CSV (an image column + one-hot classes)")
    parts = [_read_csv(p) for p in found]
    truth = pd.concat([rows for rows, _ in parts], ignore_index=True)
    bad_rows = pd.concat([bad for _, bad in parts], ignore_index=True)
    # Optional ISIC 2019 *Metadata*.csv (image, age_approx, anatom_site_general, lesion_id, sex)
    truth = _with_metadata_files(truth, headers, "image")
    keys = _text(truth, "image")
    # ISIC 2019 names some images "<isic_id>_downsampled"; the canonical id drops the suffix.
    ids = keys.str.removesuffix("_downsampled")
    codes = [c for c in truth.columns if c.upper() in CHALLENGE_CODES]
    return _assemble(truth, keys, ids, challenge_labels(truth[codes]), "image",
                     _list_images(path, subfolders=True), ["image"], bad_rows)


def _first_csv(path: Path, test, what: str) -> Path:
    found = [p for p, h in _csv_files(path).items() if test(h)]
    if not found:
        raise DataError(f"{path}: no {what}")
    return found[0]


def _with_metadata_files(truth: pd.DataFrame, headers: dict[Path, list[str]], key: str,
                         ) -> pd.DataFrame:
    """`truth` joined with the clinical columns of the folder's *metadata*.csv files (ISIC
    2019's image,age_approx,..., ISIC 2017's image_id,age_approximate,sex), where present."""
    extra = [_read_csv(p)[0].drop(columns="_where") for p, h in headers.items()
             if "metadata" in p.name.lower() and key in h and not _is_ground_truth(h)
             and not _is_isic2017(h)]
    if not extra:
        return truth
    info = pd.concat(extra, ignore_index=True).drop_duplicates(key)
    info = info.drop(columns=[c for c in info.columns if c in truth and c != key])
    return truth.merge(info, on=key, how="left", validate="many_to_one").fillna("")


def _read_isic2017(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    meta, bad_rows = _read_csv(_first_csv(path, _is_isic2017, "ISIC 2017 ground truth CSV "
                                          "(image_id,melanoma,seborrheic_keratosis)"))
    # The challenge's ISIC-2017_*_Data_metadata.csv: image_id, age_approximate, sex
    meta = _with_metadata_files(meta, _csv_files(path), "image_id")
    ids = _text(meta, "image_id")
    return _assemble(meta, ids, ids, isic2017_labels(meta), "image_id",
                     _list_images(path, subfolders=True), ["image_id"], bad_rows)


def _read_isic2016(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    found = _first_csv(path, _is_isic2016, "ISIC 2016 ground truth CSV (ISIC_xxxxxxx,label)")
    with open(found, newline="", encoding="utf-8-sig") as handle:  # no header row
        width = len(next(csv.reader(handle)))
    tmp = pd.read_csv(found, header=None, dtype=str, keep_default_na=False)
    if width != 2 or tmp.shape[1] != 2:
        raise DataError(f"{found}: expected two columns (image id, label)")
    meta = tmp.rename(columns={0: "image", 1: "label"}).astype(object)
    meta["_where"] = [f"{found.name} row {n}" for n in range(1, len(meta) + 1)]
    ids = _text(meta, "image")
    return _assemble(meta, ids, ids, isic2016_labels(meta["label"]), "image",
                     _list_images(path, subfolders=True), ["image", "label"],
                     pd.DataFrame(columns=["item", "reason"]))


def _read_isic2020(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    meta, bad_rows = _read_csv(_first_csv(path, _is_isic2020, "SIIM-ISIC 2020 train.csv "
                                          "(image_name,patient_id,...,benign_malignant)"))
    ids = _text(meta, "image_name")
    # Its `diagnosis` uses the archive's legacy names ("unknown" for most benign images).
    return _assemble(meta, ids, ids, isic_labels(meta), "image_name",
                     _list_images(path, subfolders=True), ["image_name", "target"], bad_rows)


def read_source(path: Path, layout: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a dataset folder into (items, rejected).

    items: CANONICAL columns, then the source's other columns, then ``image_path`` (absolute).
    rejected: columns ``item`` (a file name relative to `path`, or "<csv> row N (<id> X)"
    where N is the line in the CSV, header = 1) and ``reason``.
    """
    path = Path(path).resolve()
    if layout == "auto":
        layout = detect_layout(path)
    readers = {"isic-cli": _read_isic_cli, "ham10000": _read_ham10000,
               "challenge": _read_challenge, "isic2016": _read_isic2016,
               "isic2017": _read_isic2017, "isic2020": _read_isic2020}
    if layout not in readers:
        raise DataError(f"unknown layout {layout!r}: expected 'auto' or one of {LAYOUTS}")
    return readers[layout](path)
