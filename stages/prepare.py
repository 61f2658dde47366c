"""Stage prepare: decode every image once → data/processed/prepared/<split>-NNNNN.npz shards.

Decoding is the slow part of the pipeline, so it happens here only, on all cores, streaming
a chunk at a time (memory stays flat however many images there are). An image that cannot
be decoded is listed in data/interim/rejected.csv and the rest go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.errors import run_stage
from stages.core.images import ImageError, load_image
from stages.core.params import load_params, number
from stages.core.reports import write_rejected
from stages.core.shards import write_meta, write_split

RAW_DIR = Path("data/raw")
SPLIT_FILE = Path("data/interim/split.csv")
OUT_DIR = Path("data/processed/prepared")
REJECTED_FILE = Path("data/interim/rejected.csv")
SPLITS = ("train", "val", "test")


def decode(path: Path, size: int) -> np.ndarray | str:
    """The image, or the reason it cannot be used (a string crosses process borders cleanly)."""
    try:
        return load_image(path, size)
    except ImageError as err:
        return str(err)


def decoded_items(
    rows: pd.DataFrame, size: int, pool, rejected: list[dict], progress: str
) -> Iterator[tuple[np.ndarray, int, str]]:
    paths = [RAW_DIR / name for name in rows["image"]]
    results = pool.imap(partial(decode, size=size), paths, chunksize=16)
    for done, (result, label, isic_id, name) in enumerate(
        zip(results, rows["label_index"], rows["isic_id"], rows["image"], strict=True), 1
    ):
        if isinstance(result, str):
            rejected.append({"item": name, "reason": result})
        else:
            yield result, int(label), isic_id
        if done % 500 == 0 or done == len(rows):
            print(f"  {progress}: {done}/{len(rows)} images decoded", flush=True)


def main() -> None:
    params = load_params()
    size = number(params, "prepare.size", 16, 1024, integer=True)
    shard_size = number(params, "prepare.shard_size", 1, 1_000_000, integer=True)
    frame = pd.read_csv(SPLIT_FILE, dtype=str, keep_default_na=False)
    classes = sorted(frame["label"].unique())
    frame["label_index"] = frame["label"].map(classes.index)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*.npz"):
        old.unlink()
    rejected: list[dict] = []
    counts = {}
    with Pool(min(os.cpu_count() or 1, 8)) as pool:
        for split in SPLITS:
            rows = frame[frame["split"] == split]
            items = decoded_items(rows, size, pool, rejected, split)
            counts[split] = write_split(OUT_DIR, split, items, shard_size)
    write_meta(OUT_DIR, {"classes": classes, "image_size": size, "shard_size": shard_size,
                         "counts": counts})
    write_rejected(pd.DataFrame(rejected), REJECTED_FILE, sum(counts.values()),
                   number(params, "prepare.max_rejected_fraction", 0.0, 1.0))
    print(f"prepared {counts} at {size}x{size} px into {OUT_DIR}")


if __name__ == "__main__":
    run_stage("prepare", main)
