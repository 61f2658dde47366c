"""A trained model ready to use: which one to load, how an image reaches it, what comes out.

predict (the command line), serve (the web app) and the latency benchmark all go through
this, so they decode with the very function prepare used (`images.load_image`) at the size
and with the preprocessing (border crop, colour constancy) written in the model card, and
none of them can drift from what the model was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import keras
import numpy as np

from stages.core.errors import PipelineError
from stages.core.images import Preprocessing, load_image
from stages.core.inference import as_predict
from stages.core.model_io import load_model
from stages.core.paths import HOLDOUT, MODELS_DIR, SUMMARY_FILE
from stages.core.tta import tta_predict


class ModelNotFoundError(PipelineError, FileNotFoundError):
    """No trained model where one was asked for; the message says how to get one."""


def read_summary(path: Path = SUMMARY_FILE) -> dict:
    if not path.exists():
        raise ModelNotFoundError(
            f"{path} not found: run `dvc repro` (or `dvc pull`) to train and compare the "
            "models first, or name one with --model PATH / --backbone NAME")
    return json.loads(path.read_text())


def model_path(
    backbone: str | None = None,
    models_dir: Path = MODELS_DIR,
    summary_path: Path = SUMMARY_FILE,
) -> Path:
    """models/<backbone>/<fold>/model.keras; with no backbone (or "best"), the best one in
    summary. The fold served is the one compare names (the holdout model, or with
    cross-validation the first fold's)."""
    summary = read_summary(summary_path) if backbone in (None, "best") or \
        summary_path.exists() else {}
    if backbone in (None, "best"):
        backbone = summary["best"]
    path = models_dir / backbone / summary.get("serving_fold", HOLDOUT) / "model.keras"
    if not path.exists():
        known = ", ".join(available_backbones(models_dir)) or "none yet"
        raise ModelNotFoundError(
            f"no trained model for backbone '{backbone}' ({path} missing; trained: {known}); "
            f"run `dvc repro finetune@{backbone}` or pick another")
    return path


def available_backbones(models_dir: Path = MODELS_DIR) -> list[str]:
    """Backbones with a finished (fine-tuned) model on disk, by name."""
    if not models_dir.is_dir():
        return []
    return sorted({p.parent.parent.name for p in models_dir.glob("*/*/model.keras")
                   if p.with_suffix(".json").exists()})


@dataclass
class Predictor:
    model: keras.Model
    card: dict  # the model card: name, arch, weights, image_size, classes, preprocessing
    # What prepare applied, from the card (an older card without it: both steps off); read
    # here so that a card this code cannot follow fails at load, not at the first photo.
    preprocessing: Preprocessing = field(init=False)

    def __post_init__(self):
        self.preprocessing = Preprocessing.from_dict(self.card.get("preprocessing"))

    @classmethod
    def load(cls, path: Path) -> Predictor:
        model, card = load_model(path)
        predictor = cls(model, card)
        # One call on a blank image builds the compiled predict function now, so the first
        # real request is not the slow one.
        predictor.predict(np.zeros((1, predictor.image_size, predictor.image_size, 3), np.uint8))
        return predictor

    @property
    def name(self) -> str:
        return self.card.get("name", self.model.name)

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def image_size(self) -> int:
        return int(self.card["image_size"])

    def decode(self, source: str | Path | bytes | BinaryIO, size: int | None = None) -> np.ndarray:
        """The model's input for one file or upload (at another `size` for display); raises
        images.ImageError if unusable."""
        return load_image(source, size or self.image_size, self.preprocessing)

    def predict(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        """Class probabilities (n, classes) for a uint8 batch (n, size, size, 3)."""
        if tta:
            return tta_predict(self.model, images)
        return as_predict(self.model)(images.astype(np.float32))

    def result(self, probs: np.ndarray) -> dict:
        """One image's probabilities as {probabilities: {class: p}, predicted: class}."""
        return {"probabilities": {c: float(p) for c, p in zip(self.classes, probs, strict=True)},
                "predicted": self.classes[int(np.argmax(probs))]}
