"""Stage guard: the out-of-distribution guard every served model uses (core/ood.py).

Features of every prepared image in the guard's fixed feature space (core/ood_extractor.py:
ImageNet EfficientNet-Lite, whatever the served model is), computed once and cached. The
threshold is set on out-of-fold distances: with cross-validation each fold's images against
the other folds' (and the training-only images); with a holdout split the validation images
against the training ones. Writes models/guard/ (ood.npz, guard.json) and metrics/guard.json:
the share of held-out lesions flagged (cross-fitted, or the test images), the lockbox's, and
which of the photos in data/external/not_lesions (a cat, coffee, ...) are flagged.
"""

from __future__ import annotations

import json

import numpy as np

from stages.core.cli import run_stage
from stages.core.feature_cache import cached_features, part_features
from stages.core.files import write_json
from stages.core.images import load_image
from stages.core.ood import (
    PERCENTILE,
    guard_from,
    held_out_flagged,
    out_of_fold_distances,
)
from stages.core.ood_extractor import build_extractor
from stages.core.params import choice, number, stage_params
from stages.core.paths import (
    GUARD_CARD,
    GUARD_FILE,
    GUARD_METRICS,
    HOLDOUT,
    LOCKBOX,
    NOT_LESIONS_DIR,
    PREPARED_DIR,
    TRAIN_ONLY,
)
from stages.core.shards import read_meta
from stages.core.worklog import work


def fold_of_each_part(parts: list[str]) -> tuple[dict[str, int], str]:
    """The fold number each prepared part gets for the out-of-fold distances (-1: only ever
    a neighbour; absent: not used to fit), and which part the threshold is scored on."""
    if "train" in parts:  # holdout: validation against training; test is the held-out check
        return {"train": -1, TRAIN_ONLY: -1, "val": 0}, "test"
    folds = {p: int(p.removeprefix("fold")) for p in parts if p.startswith("fold")}
    return folds | {TRAIN_ONLY: -1}, ""


def main() -> None:
    params = stage_params("guard")
    variant = choice(params, "guard.extractor", ("lite0", "lite1", "lite2"))
    size = number(params, "guard.size", 32, 1024, integer=True)
    meta = read_meta(PREPARED_DIR)
    parts = list(meta["counts"])
    assigned, test_part = fold_of_each_part(parts)
    assigned = {p: k for p, k in assigned.items() if p in parts}
    extractor = build_extractor(int(meta["image_size"]), variant, size)
    features = part_features(extractor, PREPARED_DIR, list(assigned)).images
    folds = np.concatenate([np.full(meta["counts"][p], k) for p, k in assigned.items()])
    with work("OOD guard"):
        distances = out_of_fold_distances(features, folds)
        guard = guard_from(features, distances)
        guard.save(GUARD_FILE)
        rates = {"held_out_flagged": (held_out_flagged(distances, folds) if not test_part
                                      else None)}
        for part in (test_part, LOCKBOX):
            if part in parts:
                unseen = part_features(extractor, PREPARED_DIR, [part]).images
                rates[f"{part}_flagged"] = float(np.mean(guard.score(unseen) > 1.0))
        if test_part:
            rates["held_out_flagged"] = rates.pop(f"{test_part}_flagged")
        photos = sorted(p for p in NOT_LESIONS_DIR.iterdir() if p.suffix != ".md")
        probe = np.stack([load_image(p, int(meta["image_size"])) for p in photos])
        scores = guard.score(cached_features(extractor, probe))
    card = {"extractor": variant, "size": size, "file": str(GUARD_FILE),
            "percentile": PERCENTILE, "reference_images": int(len(guard.reference)),
            "threshold": round(guard.threshold, 6)}
    write_json(GUARD_CARD, card)
    summary = {**{k: round(v, 4) for k, v in rates.items()},
               "how": "cross-fitted over the folds" if not test_part else "the test images",
               "not_lesions_flagged": int(np.sum(scores > 1.0)),
               "not_lesions": {p.stem: round(float(s), 3) for p, s in zip(photos, scores,
                                                                           strict=True)}}
    write_json(GUARD_METRICS, summary)
    print(f"guard ({variant} at {size} px, {HOLDOUT if test_part else 'cross-validation'}): "
          + json.dumps(summary))


if __name__ == "__main__":
    run_stage("guard", main)
