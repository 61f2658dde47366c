"""Where each stage writes, per backbone and fold; dvc.yaml declares the same paths.

A fold is `holdout` (one train/val/test split) or a cross-validation fold number. train,
finetune and evaluate run once per backbone for all its folds, so each writes one folder per
backbone (dvc.yaml's outs) with one file or folder per fold inside.
"""

from __future__ import annotations

from pathlib import Path

HOLDOUT = "holdout"  # the fold name of a single train / val / test split
LOCKBOX = "lockbox"  # the split part set aside from all training and choosing (split.lockbox)
# The split part of data.extra_train's images: in every fold's training set, never validated,
# tested, calibrated on or scored (external data, as in the ISIC challenges' "with external
# data" entries).
TRAIN_ONLY = "train_only"
RAW_DIR = Path("data/raw")
SPLIT_FILE = Path("data/interim/split.csv")
SPLIT_REJECTED_FILE = Path("data/interim/split_rejected.csv")
SPLIT_COUNTS_FILE = Path("metrics/split.json")
PREPARED_DIR = Path("data/processed/prepared")
PREPARE_REJECTED_FILE = Path("data/interim/rejected.csv")
AUGMENTED_DIR = Path("data/processed/augmented")
FEATURES_DIR = Path("data/processed/features")  # features@<backbone>: frozen features per part
MODELS_DIR = Path("models")
EXPORT_DIR = MODELS_DIR / "export"
SUMMARY_FILE = Path("metrics/summary.json")
LEADERBOARD_FILE = Path("metrics/leaderboard.md")
BACKUP_ROOT = Path(".cache/backup")  # training state between epochs, outside DVC's outputs


def model_dir(backbone: str, fold: str) -> Path:
    """A fold's served-ready model.keras (finetune@<backbone> writes models/<backbone>/)."""
    return MODELS_DIR / backbone / str(fold)


def head_file(backbone: str, fold: str) -> Path:
    """A fold's phase-1 model (train@<backbone> writes models/heads/<backbone>/)."""
    return MODELS_DIR / "heads" / backbone / str(fold) / "head.keras"


def features_dir(backbone: str) -> Path:
    return FEATURES_DIR / backbone


def training_summary_file(backbone: str, phase: str, fold: str) -> Path:
    """A training phase's final figures (DVCLive's metrics.json) of one fold."""
    return Path("metrics/training") / backbone / phase / f"{fold}.json"


def plots_dir(backbone: str, kind: str) -> Path:
    """One kind of plot of a backbone, one file (or a training phase's curves: one folder)
    per fold: dvc.yaml gives each kind its axes."""
    return Path("metrics/plots") / backbone / kind


def metrics_file(backbone: str, fold: str) -> Path:
    return Path("metrics/backbones") / backbone / f"{fold}.json"


def predictions_file(backbone: str, fold: str, part: str = "test") -> Path:
    """A fold model's probabilities on its test images, or (part="val") its validation ones,
    which calibration and the decision threshold are fitted on."""
    return Path("metrics/predictions") / backbone / str(fold) / f"{part}.csv"


def subgroups_file(backbone: str, fold: str) -> Path:
    return Path("metrics/subgroups") / backbone / f"{fold}.json"


SERVED_SUBGROUPS = Path("metrics/subgroups/served.json")


GUARD_DIR = MODELS_DIR / "guard"  # guard: the OOD guard every served model uses
GUARD_FILE = GUARD_DIR / "ood.npz"
GUARD_CARD = GUARD_DIR / "guard.json"  # its feature space and threshold
GUARD_METRICS = Path("metrics/guard.json")
NOT_LESIONS_DIR = Path("data/external/not_lesions")  # photos the guard must flag
SERVED_CARD = MODELS_DIR / "served.json"  # compare: the model predict/serve/export use
MODEL_CARD = MODELS_DIR / "MODEL_CARD.md"  # compare: the served model's card for people
SPLIT_METRICS = Path("metrics/split.json")  # split: images per split and class
CALIBRATION_PLOT = Path("metrics/plots/served/reliability.json")
ROC_OVERLAY_PLOT = Path("metrics/plots/roc_all.json")  # every model's ROC in one chart
