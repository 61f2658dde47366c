"""Stage download: any data source → data/raw/ in the ISIC Archive (isic-cli) layout.

data.source picks the source: `synthetic` (our generator, offline, the default), `local` (a
folder in isic-cli, HAM10000 or ISIC challenge layout) or `isic` (the archive via isic-cli).
Whatever the source, data/raw holds <isic_id>.<ext> images, a canonical metadata.csv,
attribution.txt and licenses/, and rejected.csv listing every item left out and why.

data.extra_train adds other local folders (any layout) whose images only ever train: their
metadata rows carry train_only=1, split gives them the `train_only` part, and no fold
validates, tests or scores on them. An image already in the data (same isic_id) is rejected.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from stages.core.cli import run_stage
from stages.core.errors import PipelineError
from stages.core.params import choice, get, number, stage_params
from stages.core.paths import RAW_DIR
from stages.core.reports import write_rejected
from stages.core.sources import isic_archive, local, synthetic


def _link_or_copy(src: Path, dst: Path) -> None:
    # A hard link costs no space when the source sits on the same disk; DVC caches a copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_images(items: pd.DataFrame, source_dir: Path, out_dir: Path,
                attribution: str = "attribution.txt") -> None:
    """Copy the kept images as <isic_id><ext>, with the folder's attribution and licences."""
    for isic_id, image_path in zip(items["isic_id"], items["image_path"], strict=True):
        src = Path(image_path)
        _link_or_copy(src, out_dir / f"{isic_id}{src.suffix.lower()}")
    # CC-BY images must travel with their attribution and licence texts (HAM10000 and the
    # ISIC 2017 folder spell it ATTRIBUTION.txt).
    for text in source_dir.iterdir():
        if text.name.lower() == "attribution.txt" and text.is_file():
            shutil.copy2(text, out_dir / attribution)
    if (source_dir / "licenses").is_dir():
        shutil.copytree(source_dir / "licenses", out_dir / "licenses", dirs_exist_ok=True)


def import_folder(source_dir: Path, layout: str, out_dir: Path) -> pd.DataFrame:
    """The folder's images and canonical metadata.csv into out_dir; returns what it rejected."""
    items, rejected = local.read_source(source_dir, layout)
    copy_images(items, source_dir, out_dir)
    items.drop(columns="image_path").to_csv(out_dir / "metadata.csv", index=False)
    print(f"{len(items)} images from {source_dir} ({layout}) written to {out_dir}")
    return rejected


def add_train_only(folders: list[Path], out_dir: Path) -> pd.DataFrame:
    """Each folder's images into out_dir, their rows appended to metadata.csv with
    train_only=1; returns what was rejected (an isic_id seen before is kept once, the first)."""
    meta = pd.read_csv(out_dir / "metadata.csv", dtype=str, keep_default_na=False)
    known = set(meta["isic_id"])
    rejected, extra = [], []
    for folder in folders:
        items, bad = local.read_source(folder)
        seen = items["isic_id"].isin(known)
        known |= set(items["isic_id"])
        rejected += [bad.assign(item=f"{folder}: " + bad["item"]), pd.DataFrame({
            "item": f"{folder}: " + items.loc[seen, "isic_id"],
            "reason": "already in the data (same isic_id): kept once, where first read"})]
        items = items[~seen]
        copy_images(items, folder, out_dir, attribution=f"attribution-{folder.name}.txt")
        extra.append(items.drop(columns="image_path").assign(train_only="1"))
        print(f"{len(items)} training-only images from {folder} added to {out_dir}")
    pd.concat([meta.assign(train_only=""), *extra]).to_csv(out_dir / "metadata.csv",
                                                           index=False)
    return pd.concat(rejected)


def extra_folders(params: dict) -> list[Path]:
    folders = get(params, "data.extra_train") or []
    if not isinstance(folders, list):
        raise PipelineError(f"params.yaml: data.extra_train must be a list of folders, "
                            f"got {folders!r}")
    for folder in folders:
        if not Path(str(folder)).is_dir():
            raise PipelineError(f"params.yaml: data.extra_train: {folder!r} is not a folder")
    return [Path(str(folder)).resolve() for folder in folders]


def main() -> None:
    params = stage_params("download")
    source = choice(params, "data.source", ("synthetic", "local", "isic"))
    max_rejected = number(params, "data.max_rejected_fraction", 0.0, 1.0)
    extra = extra_folders(params)
    if RAW_DIR.exists():
        shutil.rmtree(RAW_DIR)
    RAW_DIR.mkdir(parents=True)
    if source == "synthetic":
        frame = synthetic.generate(
            RAW_DIR,
            count=number(params, "data.synthetic.count", 2, 10_000_000, integer=True),
            size=number(params, "data.synthetic.size", 32, 8192, integer=True),
            malignant_fraction=number(params, "data.synthetic.malignant_fraction", 0.0, 1.0),
            repeat_fraction=number(params, "data.synthetic.repeat_fraction", 0.0, 1.0),
            seed=get(params, "seed"),
        )
        rejected = pd.DataFrame()
        print(f"{len(frame)} synthetic images written to {RAW_DIR}")
    elif source == "local":
        path = get(params, "data.local.path")
        if not path or not Path(path).is_dir():
            raise PipelineError(f"params.yaml: data.local.path {path!r} is not a folder")
        rejected = import_folder(Path(path).resolve(), get(params, "data.local.layout"),
                                 RAW_DIR)
    else:
        cache = isic_archive.download(
            search=get(params, "data.isic.search") or "",
            collections=str(get(params, "data.isic.collections") or ""),
            limit=number(params, "data.isic.limit", 0, 10_000_000, integer=True),
        )
        rejected = import_folder(cache, "isic-cli", RAW_DIR)
    if extra:
        rejected = pd.concat([rejected, add_train_only(extra, RAW_DIR)])
    kept = len(pd.read_csv(RAW_DIR / "metadata.csv", dtype=str))
    write_rejected(rejected, RAW_DIR / "rejected.csv", kept, max_rejected,
                   key="data.max_rejected_fraction")


if __name__ == "__main__":
    run_stage("download", main)
