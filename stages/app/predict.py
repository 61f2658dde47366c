"""Classify lesion photos with a trained model: `python -m stages.app.predict IMAGE_OR_FOLDER...`.

By default the served model of the last `dvc repro` (models/served.json: the validated fold
ensemble, calibrated, with its referral threshold and out-of-distribution guard); --backbone
NAME or --model PATH picks one fold model instead. Prints each image's class probabilities,
predicted class, referral decision and out-of-distribution flag as a table, CSV or JSON,
then whether the batch differs from the images the decision was validated on (core/shift.py;
--adjust-prior shows probabilities re-weighted to the batch's estimated class prior);
--isic-csv also writes the ISIC challenge submission layout. A model with clinical inputs
(core/clinical.py) is given each photo's age, sex and site from --clinical CSV, or from a
*metadata*.csv inside a folder named (rows matched by file name without suffix; photos
without a row, or without the model's fields, are answered as photos without clinical
data). A file that cannot be read is
reported on stderr (one line: the file and why) and the others still run; the exit code is
non-zero only when no image at all could be classified.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from stages.core.cli import run_stage
from stages.core.errors import DataError
from stages.core.images import ImageError
from stages.core.predictor import Predictor, model_path
from stages.core.shards import CLINICAL_COLUMNS
from stages.core.subgroups import subgroup_columns
from stages.core.submission import write_submission

# What a folder is expanded to; a file named on the command line is tried whatever its name.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CHUNK = 256  # images decoded and classified at a time


def expand(paths: list[Path]) -> list[Path]:
    """Files as given; folders → their image files (recursively, sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def decode_all(predictor: Predictor, files: list[Path]) -> tuple[list[Path], np.ndarray | None]:
    """The files that decoded and their pixels; each failure is one line on stderr."""
    good, images = [], []
    for path in files:
        if not path.is_file():
            print(f"{path}: skipped, file not found", file=sys.stderr)
            continue
        try:
            images.append(predictor.decode(path))
            good.append(path)
        except ImageError as err:
            print(f"{path}: skipped, {err}", file=sys.stderr)
    return good, np.stack(images) if images else None


def verdict(row: dict) -> str:
    """What a row says: the class and the referral decision, or that it is not a lesion."""
    if row["out_of_distribution"]["flagged"]:
        return "NOT LIKE A LESION PHOTO (out of distribution): no class given"
    refer = row.get("refer")
    if refer is None:
        return row["predicted"]
    side = "above" if refer["above_threshold"] else "below"
    return f"{row['predicted']}; {side} the referral threshold"


def _probability(row: dict, name: str, digits: int) -> str:
    """A class probability as text; empty for a photo flagged out of distribution."""
    return f"{row['probabilities'][name]:.{digits}f}" if "probabilities" in row else ""


def format_table(classes: list[str], rows: list[dict]) -> str:
    header = ["image", *classes, "verdict"]
    body = [[r["image"], *(_probability(r, c, 4) or "–" for c in classes), verdict(r)]
            for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    # Image names left-aligned, numbers right-aligned: the usual way to read a table.
    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i in (0, len(cells) - 1) else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def format_csv(classes: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", *classes, "predicted", "refer", "out_of_distribution"])
    for r in rows:
        refer = r.get("refer")
        writer.writerow([r["image"], *(_probability(r, c, 6) for c in classes),
                         r.get("predicted", ""),
                         "" if refer is None else int(refer["above_threshold"]),
                         int(r["out_of_distribution"]["flagged"])])
    return out.getvalue().rstrip("\n")


def format_shift(shift: dict, adjusted: bool) -> str:
    """The batch's shift check as lines: the verdict, then each sign against its reference."""
    lines = ["", f"batch: {shift['message']}"]
    for sign in shift.get("signs", []):
        reference = ("" if sign["reference"] is None
                     else f"reference {sign['reference']:.3f}, ")
        against = (f"{reference}batch 99.75 % interval "
                   f"{sign['interval'][0]:.3f}–{sign['interval'][1]:.3f}" if "interval" in sign
                   else f"{reference}p = {sign['p_value']:.2g}")
        lines.append(f"  {'OUTSIDE' if sign['outside'] else 'ok':7} {sign['sign']}: "
                     f"{sign['batch']:.3f} ({against})")
    if adjusted:
        lines.append("  probabilities adjusted to the batch's estimated prior; referral decided "
                     "on the unadjusted ones, which its guarantee is about")
    return "\n".join(lines)


ID_COLUMNS = ("isic_id", "image", "image_id", "image_name")


def read_clinical_csv(source: Path | BinaryIO, name: str | None = None) -> pd.DataFrame:
    """A metadata CSV (a file, or an upload called `name`) as sources come with (isic-cli
    metadata.csv, HAM10000_metadata.csv, the ISIC 2017/2019 *metadata*.csv, ISIC 2020
    train.csv): sex, age_years and site per image id (the image file's name without its
    suffix); unknown values are ""."""
    name = name or str(source)
    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{name}: cannot read it as a CSV ({err})") from None
    key = next((c for c in ID_COLUMNS if c in table), None)
    if key is None:
        raise DataError(f"{name}: no image id column (one of {', '.join(ID_COLUMNS)}): "
                        "name the column holding each image's file name without suffix")
    found = subgroup_columns(table)[list(CLINICAL_COLUMNS)]
    found.index = table[key].str.strip().map(lambda name: Path(name).stem)
    return found[~found.index.duplicated()]


def clinical_sources(args: argparse.Namespace) -> list[Path]:
    """--clinical, else the *metadata*.csv files directly inside the folders named."""
    if args.clinical:
        return [args.clinical]
    return sorted(p for folder in args.images if folder.is_dir()
                  for p in folder.glob("*.csv") if "metadata" in p.name.lower())


def rows_for(known: pd.DataFrame | None, files: list[Path]) -> pd.DataFrame | None:
    """Each file's clinical data (by file name without suffix; "" where not known)."""
    if known is None:
        return None
    return known.reindex([Path(f).stem for f in files]).fillna("").reset_index(drop=True)


def main(args: argparse.Namespace) -> int:
    path = args.model or model_path(args.backbone)
    predictor = Predictor.load(path)
    files = expand(args.images)
    sources = clinical_sources(args) if predictor.clinical_inputs else []
    known = None
    if sources:  # the first file that has an image wins
        known = pd.concat([read_clinical_csv(p) for p in sources])
        known = known[~known.index.duplicated()]
    if args.clinical and not predictor.clinical_inputs:
        print(f"predict: {predictor.name} uses no clinical data; --clinical ignored",
              file=sys.stderr)
    good: list[Path] = []
    chunks: list[np.ndarray] = []
    # A chunk at a time, so a folder of 100,000 photos never sits decoded in memory at once.
    for start in range(0, len(files), CHUNK):
        decoded, images = decode_all(predictor, files[start:start + CHUNK])
        if images is not None:
            good += decoded
            chunks.append(np.column_stack(predictor.assess(images, args.tta,
                                                           rows_for(known, decoded))))
    if not good:
        print(f"predict: none of the {len(files)} file(s) could be classified", file=sys.stderr)
        return 1
    assessed = np.concatenate(chunks)
    probs, ood = assessed[:, :-1], assessed[:, -1]
    answers, shift = predictor.batch_results(probs, ood, args.adjust_prior)
    rows = [{"image": str(f), **a} for f, a in zip(good, answers, strict=True)]
    classes = predictor.classes
    if args.format == "json":
        print(json.dumps({"model": predictor.name, "tta": args.tta,
                          "clinical_inputs": predictor.clinical_inputs,
                          "clinical_from": [str(p) for p in sources],
                          "decision": predictor.decision, "prior_adjusted": args.adjust_prior,
                          "shift": shift, "predictions": rows}, indent=2))
    elif args.format == "csv":
        print(format_csv(classes, rows))
    else:
        print(f"model: {predictor.name} ({path}){', test-time augmentation' if args.tta else ''}")
        if predictor.decision:
            print(f"referral: {predictor.decision}")
        if predictor.clinical_inputs:
            given = ", ".join(map(str, sources)) or "none found: answered without"
            print(f"clinical data ({', '.join(predictor.clinical_inputs)}): {given}")
        print(format_table(classes, rows))
    if shift is not None and "signs" in shift and args.format != "json":  # big enough
        print(format_shift(shift, args.adjust_prior),
              file=sys.stdout if args.format == "table" else sys.stderr)
    if args.isic_csv:
        write_submission(args.isic_csv, [f.stem for f in good], probs, classes)
        print(f"wrote {len(good)} rows to {args.isic_csv}", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stages.app.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, help="a served .json card or a model.keras file "
                                                  "(model.json beside it)")
    which.add_argument("--backbone", help="one fold model of backbone NAME (default: the "
                                          "served model, models/served.json)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--isic-csv", type=Path, metavar="OUT.csv",
                        help="also write the ISIC challenge submission CSV (every image's "
                             "calibrated probabilities, flagged ones too: a challenge scores "
                             "them all; with the card's class biases its arg-max is not the "
                             "predicted class, which --format csv gives)")
    parser.add_argument("--adjust-prior", action="store_true",
                        help="show probabilities adjusted to the class prior EM estimates on "
                             "this batch (Saerens 2002); the referral is unchanged")
    parser.add_argument("--clinical", type=Path, metavar="METADATA.csv",
                        help="age, sex and site per image id for a model with clinical "
                             "inputs (default: a *metadata*.csv in a folder named)")
    parser.add_argument("--tta", action="store_true",
                        help="average over flips and 90° rotations (8x slower)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    # sys.exit inside: run_stage turns user errors into one line, the exit code passes through.
    run_stage("predict", lambda args: sys.exit(main(args)), parse_args())
