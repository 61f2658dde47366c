"""Stage prepare: decode every image once → data/processed/prepared/<split>-NNNNN.npz shards.

Decoding is the slow part of the pipeline, so it happens here only, on all cores, streaming:
worker processes decode (JPEGs at reduced scale, see core/images.py), the main process
writes each shard as soon as it is full, so memory holds one shard of small images however
many images there are. An image that cannot be decoded is listed in data/interim/rejected.csv
and the rest go on; the stage stops only past prepare.max_rejected_fraction. The optional
dermoscopy corrections (prepare.crop_border, prepare.color_constancy) happen in load_image;
meta.json records them as "preprocessing", and train/finetune copy that into the model card.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.cli import run_stage
from stages.core.errors import PipelineError
from stages.core.hardware import usable_cores
from stages.core.images import COLOR_CONSTANCY, PLAIN, ImageError, Preprocessing, load_image
from stages.core.params import choice, flag, number, stage_params
from stages.core.paths import PREPARE_REJECTED_FILE, PREPARED_DIR, RAW_DIR, SPLIT_FILE
from stages.core.progress import Progress
from stages.core.reports import check_rejected, write_report
from stages.core.shards import EmptySplitError, write_meta, write_split
from stages.core.worklog import work

MAX_KEY = "prepare.max_rejected_fraction"


def decode(path: Path, size: int, steps: Preprocessing = PLAIN) -> np.ndarray | str:
    """The image, or the reason it cannot be used (a string crosses process borders cleanly)."""
    try:
        return load_image(path, size, steps)
    except ImageError as err:
        return str(err)


def preprocessing(params: dict) -> Preprocessing:
    """prepare.crop_border and prepare.color_constancy, checked (errors name the key)."""
    return Preprocessing(crop_border=flag(params, "prepare.crop_border"),
                         color_constancy=choice(params, "prepare.color_constancy",
                                                COLOR_CONSTANCY))


def decoded_items(
    rows: pd.DataFrame, size: int, steps: Preprocessing, pool, rejected: list[dict],
    split: str,
) -> Iterator[tuple[np.ndarray, int, str]]:
    """(image, label, id) in split.csv order; each failure appended to `rejected` instead."""
    paths = [RAW_DIR / name for name in rows["image"]]
    # imap keeps the order and hands results over as they come: nothing piles up here.
    results = pool.imap(partial(decode, size=size, steps=steps), paths, chunksize=16)
    progress = Progress(f"prepare {split}: decoding", len(rows))
    for result, label, isic_id, name in zip(
        results, rows["label_index"], rows["isic_id"], rows["image"], strict=True
    ):
        if isinstance(result, str):
            rejected.append({"item": name, "reason": result})
        else:
            yield result, int(label), isic_id
        progress.advance()
    progress.close()


def main() -> None:
    params = stage_params("prepare")
    size = number(params, "prepare.size", 16, 1024, integer=True)
    shard_size = number(params, "prepare.shard_size", 1, 1_000_000, integer=True)
    max_rejected = number(params, MAX_KEY, 0.0, 1.0)
    steps = preprocessing(params)
    frame = pd.read_csv(SPLIT_FILE, dtype=str, keep_default_na=False)
    classes = sorted(frame["label"].unique())
    frame["label_index"] = frame["label"].map(classes.index)

    PREPARED_DIR.mkdir(parents=True, exist_ok=True)
    for old in PREPARED_DIR.glob("*.npz"):
        old.unlink()
    rejected: list[dict] = []
    counts: dict[str, int] = {}
    with Pool(usable_cores()) as pool, work("decode and resize"):
        for split in sorted(frame["split"].unique()):  # train/val/test, or fold0..foldK-1
            rows = frame[frame["split"] == split]
            items = decoded_items(rows, size, steps, pool, rejected, split)
            try:
                counts[split] = write_split(PREPARED_DIR, split, items, shard_size)
            except EmptySplitError:
                counts[split] = 0  # every image of this split was rejected
    # The report comes first, so that whatever stops the stage below, it names every item.
    write_report(pd.DataFrame(rejected), PREPARE_REJECTED_FILE)
    check_rejected(len(rejected), sum(counts.values()), max_rejected, PREPARE_REJECTED_FILE,
                   MAX_KEY)
    empty = [split for split, n in counts.items() if n == 0]
    if empty:
        raise PipelineError(f"no usable images left in the {' and '.join(empty)} split(s); "
                            f"see {PREPARE_REJECTED_FILE}")
    write_meta(PREPARED_DIR, {"classes": classes, "image_size": size, "shard_size": shard_size,
                         "counts": counts, "preprocessing": steps.to_dict()})
    print(f"prepared {counts} at {size}x{size} px, {steps}, into {PREPARED_DIR}")


if __name__ == "__main__":
    run_stage("prepare", main)
