"""Stage download: any data source → data/raw/ in the ISIC Archive (isic-cli) layout.

data.source picks the source: `synthetic` (our generator, offline, the default), `local` (a
folder in isic-cli, HAM10000 or ISIC challenge layout) or `isic` (the archive via isic-cli).
Whatever the source, data/raw holds <isic_id>.<ext> images, a canonical metadata.csv,
attribution.txt and licenses/, and rejected.csv listing every item left out and why.
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


def write_raw(items: pd.DataFrame, source_dir: Path, out_dir: Path) -> None:
    """Copy the kept images as <isic_id><ext> and write the canonical metadata beside them."""
    for isic_id, image_path in zip(items["isic_id"], items["image_path"], strict=True):
        src = Path(image_path)
        _link_or_copy(src, out_dir / f"{isic_id}{src.suffix.lower()}")
    items.drop(columns="image_path").to_csv(out_dir / "metadata.csv", index=False)
    # CC-BY images must travel with their attribution and licence texts.
    if (source_dir / "attribution.txt").exists():
        shutil.copy2(source_dir / "attribution.txt", out_dir / "attribution.txt")
    if (source_dir / "licenses").is_dir():
        shutil.copytree(source_dir / "licenses", out_dir / "licenses")


def import_folder(source_dir: Path, layout: str, out_dir: Path, max_rejected: float) -> None:
    items, rejected = local.read_source(source_dir, layout)
    write_raw(items, source_dir, out_dir)
    write_rejected(rejected, out_dir / "rejected.csv", len(items), max_rejected,
                   key="data.max_rejected_fraction")
    print(f"{len(items)} images from {source_dir} ({layout}) written to {out_dir}")


def main() -> None:
    params = stage_params("download")
    source = choice(params, "data.source", ("synthetic", "local", "isic"))
    max_rejected = number(params, "data.max_rejected_fraction", 0.0, 1.0)
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
        write_rejected(pd.DataFrame(), RAW_DIR / "rejected.csv", len(frame), max_rejected,
                       key="data.max_rejected_fraction")
        print(f"{len(frame)} synthetic images written to {RAW_DIR}")
    elif source == "local":
        path = get(params, "data.local.path")
        if not path or not Path(path).is_dir():
            raise PipelineError(f"params.yaml: data.local.path {path!r} is not a folder")
        import_folder(Path(path), get(params, "data.local.layout"), RAW_DIR, max_rejected)
    else:
        cache = isic_archive.download(
            search=get(params, "data.isic.search") or "",
            collections=str(get(params, "data.isic.collections") or ""),
            limit=number(params, "data.isic.limit", 0, 10_000_000, integer=True),
        )
        import_folder(cache, "isic-cli", RAW_DIR, max_rejected)


if __name__ == "__main__":
    run_stage("download", main)
