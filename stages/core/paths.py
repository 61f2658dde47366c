"""Where each stage writes, per backbone and fold; dvc.yaml declares the same paths.

A fold is `holdout` (one train/val/test split) or a cross-validation fold number, so every
model, metrics file and plot sits under <backbone>/<fold>/.
"""

from __future__ import annotations

from pathlib import Path

HOLDOUT = "holdout"  # the fold name of a single train / val / test split
RAW_DIR = Path("data/raw")
SPLIT_FILE = Path("data/interim/split.csv")
PREPARED_DIR = Path("data/processed/prepared")
AUGMENTED_DIR = Path("data/processed/augmented")
SUMMARY_FILE = Path("metrics/summary.json")


def model_dir(backbone: str, fold: str) -> Path:
    return Path("models") / backbone / str(fold)


def training_log_dir(backbone: str, fold: str, phase: str) -> Path:
    return Path("metrics/training") / backbone / str(fold) / phase


def metrics_file(backbone: str, fold: str) -> Path:
    return Path("metrics/backbones") / backbone / f"{fold}.json"


def plots_dir(backbone: str, fold: str) -> Path:
    return Path("metrics/plots") / backbone / str(fold)


def predictions_file(backbone: str, fold: str) -> Path:
    return Path("metrics/predictions") / backbone / f"{fold}.csv"


def parse_target(description: str) -> tuple[str, str]:
    """`python -m stages.<stage> BACKBONE [FOLD]`, as dvc.yaml calls the per-model stages."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("backbone", help="a key under `models:` in params.yaml")
    parser.add_argument("fold", nargs="?", default=HOLDOUT,
                        help=f"{HOLDOUT} (default) or a cross-validation fold number")
    args = parser.parse_args()
    return args.backbone, args.fold
