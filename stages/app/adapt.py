"""Adapt the served model's decision to a new site: `python -m stages.app.adapt FOLDER --site NAME`.

FOLDER holds labelled images from where the model is used, in any layout `download` reads
(isic-cli, HAM10000, the ISIC challenges' CSVs). The network is untouched: calibration and
the referral threshold are refitted on these images (core/adaptation.py) and written as a new
served card, models/served-<site>.json, next to the original (which stays); use it with
`predict --model models/served-<site>.json`. The report gives what the original decision
did on these images and what the adapted one achieves there (cross-fitted, 95 % intervals);
--check FOLDER2 scores both on other labelled images that took no part in the fit. Images
that cannot be used (unreadable, a label outside the model's classes, flagged out of
distribution) are skipped and listed in models/served-<site>.rejected.csv.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.adaptation import adapt_card, site_folds
from stages.core.calibration import (
    apply_temperature,
    decision_statement,
    malignant_classes,
    malignant_needed,
    refer_score,
)
from stages.core.cli import run_stage
from stages.core.errors import PipelineError
from stages.core.files import write_json
from stages.core.images import ImageError
from stages.core.paths import SERVED_CARD
from stages.core.predictor import Predictor
from stages.core.reports import write_report
from stages.core.served import Predictions, decision_with_intervals
from stages.core.shards import CLINICAL_COLUMNS
from stages.core.sources.local import read_source
from stages.core.subgroups import subgroup_columns

CHUNK = 256


def read_labelled(folder: Path, layout: str, predictor: Predictor
                  ) -> tuple[Predictions, pd.Series, pd.DataFrame]:
    """The folder's usable images as (predictions of the card's model, lesion of each image,
    what was skipped and why)."""
    items, rejected = read_source(folder, layout)
    classes = predictor.classes
    column = "benign_malignant" if classes == ["benign", "malignant"] else "diagnosis"
    outside = ~items[column].isin(classes)
    skipped = [rejected] + [pd.DataFrame({
        "item": items.loc[outside, "image_path"],
        "reason": "label '" + items.loc[outside, column].astype(str)
                  + f"' is not one of the model's classes ({', '.join(classes)})"})]
    items = items[~outside]
    kept, images = [], []
    for row, path in zip(items.index, items["image_path"], strict=True):
        try:
            images.append(predictor.decode(path))
            kept.append(row)
        except ImageError as err:
            skipped.append(pd.DataFrame({"item": [path], "reason": [str(err)]}))
    if not kept:
        raise PipelineError(f"{folder}: no usable labelled image; see the skipped ones above")
    items = items.loc[kept]
    # a model with clinical inputs gets the folder's own age, sex and site (core/clinical.py)
    clinical = subgroup_columns(items)[list(CLINICAL_COLUMNS)].reset_index(drop=True)
    probs, ood = zip(*(predictor.assess(np.stack(images[i:i + CHUNK]), False,
                                        clinical.iloc[i:i + CHUNK].reset_index(drop=True))
                       for i in range(0, len(images), CHUNK)), strict=True)
    probs, ood = np.concatenate(probs), np.concatenate(ood)
    flagged = np.nan_to_num(ood, nan=0.0) > 1.0
    skipped.append(pd.DataFrame({"item": items.loc[flagged, "image_path"],
                                 "reason": [f"flagged out of distribution (score {s:.2f})"
                                            for s in ood[flagged]]}))
    items = items[~flagged]
    labels = items[column].map(classes.index).to_numpy()
    # an image without a lesion id is its own lesion
    lesion = items["lesion_id"] if "lesion_id" in items else pd.Series("", index=items.index)
    groups = lesion.fillna("").astype(str).where(lambda ids: ids != "", items["isic_id"])
    return (Predictions(items["isic_id"].to_numpy(), labels, probs[~flagged],
                        np.zeros(len(labels), int)), groups, pd.concat(skipped))


def describe(scores: dict) -> str:
    def ci(key: str) -> str:
        low, high = scores.get(f"{key}_ci_low"), scores.get(f"{key}_ci_high")
        return f"{scores[key]:.3f}" + (f" ({low:.3f}–{high:.3f})" if low is not None else "")
    return f"sensitivity {ci('sensitivity')}, specificity {ci('specificity')}"


def score_decisions(cards: dict[str, dict], predictor: Predictor, folder: Path, layout: str,
                    resamples: int, seed: int) -> None:
    """Each card's decision on another labelled folder (the --check images)."""
    check, _, skipped = read_labelled(folder, layout, predictor)
    malignant = np.isin(check.labels, malignant_classes(predictor.classes))
    print(f"\ncheck on {folder}: {len(check.labels)} images ({int(malignant.sum())} malignant), "
          f"{len(skipped)} skipped")
    base = predictor.temperature
    for name, card in cards.items():
        ratio = card["calibration"]["temperature"] / base  # temperatures compose
        probs = apply_temperature(check.probs, ratio)
        refer = refer_score(probs, predictor.classes) >= card["decision"]["threshold"]
        print(f"  {name:9} threshold {card['decision']['threshold']:.4f}: "
              f"{describe(decision_with_intervals(malignant, refer, resamples, seed))}")


def main(args: argparse.Namespace) -> None:
    predictor = Predictor.load(args.model)
    card = predictor.card
    if "decision" not in card:
        raise PipelineError(f"{args.model} has no referral decision to adapt: use the served "
                            "card (models/served.json)")
    site = re.sub(r"[^A-Za-z0-9_.-]+", "-", args.site).strip("-") or "site"
    out = Path(args.model).with_name(f"served-{site}.json")
    site_images, groups, skipped = read_labelled(args.folder, args.layout, predictor)
    malignant = np.isin(site_images.labels, malignant_classes(predictor.classes))
    if malignant.all() or not malignant.any():
        raise PipelineError(
            f"{args.folder}: {int(malignant.sum())} of {len(malignant)} usable images are "
            "malignant; adapting the threshold needs labelled malignant and benign images")
    site_images.groups[:] = site_folds(site_images.labels, groups, args.folds, args.seed)
    write_report(skipped, out.with_suffix(".rejected.csv"))
    adapted = adapt_card(card, site_images, args.site, args.bootstrap, args.seed)
    write_json(out, adapted)
    info, referral = adapted["adapted"], adapted["estimate"]["referral"]
    needed = (malignant_needed(referral["target_sensitivity"], referral["confidence"])
              if referral.get("confidence") else None)
    print(f"{args.site}: {info['images']} labelled images, {info['malignant']} malignant"
          + (f" (the guarantee needs at least {needed})" if needed else ""))
    print(f"  original threshold {info['original']['threshold']:.4f} here: "
          f"{describe(info['original']['here'])}")
    print(f"  adapted  threshold {adapted['decision']['threshold']:.4f}, cross-fitted here: "
          f"{describe(referral)}")
    print(f"  the adapted threshold {decision_statement(adapted)}")
    print(f"wrote {out} (the original {args.model} is unchanged); "
          f"use it: python -m stages.app.predict --model {out} IMAGES")
    if args.check:
        score_decisions({"original": card, "adapted": adapted}, predictor, args.check,
                        args.layout, args.bootstrap, args.seed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.app.adapt",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="labelled images from the new site")
    parser.add_argument("--site", required=True, help="a name for the site (in the file name)")
    parser.add_argument("--model", type=Path, default=SERVED_CARD,
                        help=f"the served card to adapt (default {SERVED_CARD})")
    parser.add_argument("--layout", default="auto", help="the folder's layout (default: auto)")
    parser.add_argument("--check", type=Path, metavar="FOLDER2",
                        help="other labelled images to score both decisions on")
    parser.add_argument("--folds", type=int, default=5, help="cross-fitting folds (default 5)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples for intervals")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_stage("adapt", main, parse_args())
