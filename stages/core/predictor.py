"""The served model ready to use: which to load, how an image reaches it, what comes out.

predict (the command line), serve (the web app), export and the latency benchmark all go
through this, so they decode with the very function prepare used (`images.load_image`) at the
size and with the preprocessing written in the card, and answer alike: the mean of the
members' probabilities, calibrated, the referral decision, and the out-of-distribution flag.
By default that is models/served.json (compare: the validated fold ensemble); --model
model.keras or --backbone NAME load one fold model (uncalibrated, no referral threshold).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import keras
import numpy as np
import pandas as pd

from stages.core.calibration import apply_temperature, decision_statement, refer_score
from stages.core.class_decision import decide
from stages.core.clinical import with_clinical
from stages.core.errors import PipelineError
from stages.core.images import Preprocessing, load_image
from stages.core.inference import probs_and_features
from stages.core.model_io import load_members, load_model, read_card
from stages.core.ood import PERCENTILE as OOD_PERCENTILE
from stages.core.ood_extractor import PhotoGuard
from stages.core.paths import GUARD_CARD, HOLDOUT, MODELS_DIR, SERVED_CARD
from stages.core.shift import adjust_to_batch_prior, check_batch
from stages.core.tta import tta_predict


class ModelNotFoundError(PipelineError, FileNotFoundError):
    """No trained model where one was asked for; the message says how to get one."""


def model_path(backbone: str | None = None, models_dir: Path = MODELS_DIR) -> Path:
    """models/served.json; with a backbone name, that backbone's first fold model."""
    if backbone in (None, "served"):
        path = models_dir / SERVED_CARD.name
        if not path.exists():
            raise ModelNotFoundError(
                f"{path} not found: run `dvc repro` (or `dvc pull`) to train and compare the "
                "models first, or name one with --model PATH / --backbone NAME")
        return path
    found = sorted((models_dir / backbone).glob("*/model.keras"))
    if not found:
        known = ", ".join(available_backbones(models_dir)) or "none yet"
        raise ModelNotFoundError(
            f"no trained model for backbone '{backbone}' (trained: {known}); "
            f"run `dvc repro finetune@{backbone}-{HOLDOUT}` or pick another")
    return found[0]


def available_backbones(models_dir: Path = MODELS_DIR) -> list[str]:
    """Backbones with a finished (fine-tuned) model on disk, by name."""
    if not models_dir.is_dir():
        return []
    return sorted({p.parent.parent.name for p in models_dir.glob("*/*/model.keras")
                   if p.with_suffix(".json").exists()})


def find_guard(card: dict, path: Path, image_size: int) -> PhotoGuard | None:
    """The OOD guard a model answers with: a served card's (its paths relative to the
    repository), an exported model's (beside it), or for one fold model in the repository
    the guard stage's; None where there is none."""
    if path.suffix == ".json":
        spec, base = card.get("ood"), path.parent.parent
    elif "ood" in card:
        spec, base = card["ood"], path.parent
    else:  # models/<backbone>/<fold>/model.keras
        parents = path.resolve().parents
        base = parents[3] if len(parents) > 3 else Path("/nonexistent")
        spec = (json.loads((base / GUARD_CARD).read_text()) if (base / GUARD_CARD).exists()
                else None)
    return PhotoGuard.load(spec, base / spec["file"], image_size) if spec else None


@dataclass
class Predictor:
    members: list[keras.Model]
    card: dict  # served.json, or one model's card (then no calibration and no decision)
    guard: PhotoGuard | None = None
    # Each member's clinical half (its card's "clinical", core/clinical.py), or None.
    clinical: list[dict | None] = field(default_factory=list)
    # What prepare applied, from the card (an older card without it: both steps off); read
    # here so that a card this code cannot follow fails at load, not at the first photo.
    preprocessing: Preprocessing = field(init=False)

    def __post_init__(self):
        self.preprocessing = Preprocessing.from_dict(self.card.get("preprocessing"))
        if "class_bias" in self.card.get("calibration", {}):
            raise PipelineError(
                f"{self.name}: its card puts the class biases on the probabilities, as this "
                "pipeline did before they decided the class only; rerun `dvc repro compare` "
                "(and export) to rewrite it")
        self._run = probs_and_features(self.members)

    @classmethod
    def load(cls, path: Path, with_guard: bool = True) -> Predictor:
        """A served card (.json with members), one model.keras, or an exported folder
        (models/export, as `dvc artifacts get` fetches it), with its OOD guard (unless
        `with_guard` is False: a caller that only wants probabilities)."""
        path = Path(path)
        if path.is_dir():
            path = path / "model.keras"
        if not path.exists():
            raise ModelNotFoundError(f"{path} not found: run `dvc repro` (or `dvc pull`) first")
        if path.suffix == ".json":
            card = json.loads(path.read_text())
            root = path.parent.parent  # member paths are relative to the repository
            paths = [root / m["model"] for m in card["members"]]
            loaded = load_members(paths)
            clinical = [read_card(p).get("clinical") for p in paths]
        else:
            model, card = load_model(path)
            loaded, clinical = [model], [card.get("clinical")]
        guard = find_guard(card, path, int(card["image_size"])) if with_guard else None
        predictor = cls(loaded, card, guard, clinical)
        # One call on a blank image builds the compiled predict functions now, so the first
        # real request is not the slow one.
        predictor.assess(np.zeros((1, predictor.image_size, predictor.image_size, 3), np.uint8))
        return predictor

    @property
    def name(self) -> str:
        return self.card.get("name", self.members[0].name)

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def image_size(self) -> int:
        return int(self.card["image_size"])

    @property
    def temperature(self) -> float:
        calibration = self.card.get("calibration", {})
        # An exported served graph applies its temperature itself.
        return 1.0 if calibration.get("inside_graph") else float(
            calibration.get("temperature", 1.0))

    @property
    def class_bias(self) -> list[float] | None:
        """The balanced-accuracy decision rule's biases (core/class_decision.py), if any: they
        decide the predicted class, never in an exported graph."""
        return self.card.get("decision", {}).get("class_bias")

    def decode(self, source: str | Path | bytes | BinaryIO, size: int | None = None) -> np.ndarray:
        """The model's input for one file or upload (at another `size` for display); raises
        images.ImageError if unusable."""
        return load_image(source, size or self.image_size, self.preprocessing)

    @property
    def clinical_inputs(self) -> list[str]:
        """The clinical data the model uses when given (age, sex, site; [] for none)."""
        used = {i for entry in self.clinical if entry for i in entry["inputs"]}
        return [i for i in ("age", "sex", "site") if i in used]

    def assess(self, images: np.ndarray, tta: bool = False,
               clinical: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated class probabilities (n, classes), out-of-distribution scores (n,)) for a
        uint8 batch; a score above 1 is out of distribution (NaN: no guard was fitted).
        `clinical`: each image's sex, age_years, site (rows in the images' order, "" where
        unknown; None: nothing known), for members with clinical inputs."""
        scores = self.guard.score(images) if self.guard else np.full(len(images), np.nan)
        return self.predict(images, tta, clinical), scores

    def predict(self, images: np.ndarray, tta: bool = False,
                clinical: pd.DataFrame | None = None) -> np.ndarray:
        """The calibrated class probabilities alone (assess adds the OOD scores)."""
        probs = [with_clinical(tta_predict(model, images) if tta else p, entry, clinical)
                 for model, entry, (p, _) in zip(
                     self.members, self.clinical or [None] * len(self.members),
                     self._run(images.astype(np.float32)), strict=True)]
        return apply_temperature(np.mean(probs, axis=0), self.temperature)

    def batch_results(self, probs: np.ndarray, ood_scores: np.ndarray,
                      adjust_prior: bool = False) -> tuple[list[dict], dict | None]:
        """Each image's answer (`result`) and whether the batch differs from the images the
        decision was validated on (core/shift.py; None for a card without that reference,
        e.g. one fold model). `adjust_prior`: probabilities re-weighted to the batch's
        estimated class prior, the referral still decided on the unadjusted ones."""
        has_reference = "shift_reference" in self.card
        shift = check_batch(probs, ood_scores, self.card) if has_reference else None
        shown = probs
        if adjust_prior:
            if not has_reference:
                raise PipelineError(
                    "adjusting to the batch's prior needs the served card (models/served.json) "
                    "with its evaluation images' profile: rerun `dvc repro compare`")
            shown = adjust_to_batch_prior(probs, self.card, ood_scores)
        rows = [self.result(p, o, refer_from=q)
                for p, o, q in zip(shown, ood_scores, probs, strict=True)]
        return rows, shift

    @property
    def decision(self) -> str | None:
        """The referral decision in words (what it promises), when the card has one."""
        return decision_statement(self.card) if self.card.get("decision") else None

    def result(self, probs: np.ndarray, ood_score: float = float("nan"),
               refer_from: np.ndarray | None = None) -> dict:
        """One image's answer: probabilities, predicted class and the referral decision (when
        the card has a threshold), and the out-of-distribution flag. A flagged photo gets only
        the flag and why: nothing a client could act on as if it were a lesion's answer.
        `refer_from`: the probabilities the referral is decided on, when `probs` were
        adjusted to a batch's prior (the threshold's guarantee is for the unadjusted ones)."""
        flagged = bool(ood_score > 1.0) if not np.isnan(ood_score) else False
        out: dict = {"out_of_distribution": {
            "score": None if np.isnan(ood_score) else float(ood_score), "flagged": flagged}}
        if flagged:
            out["out_of_distribution"]["why"] = (
                f"the photo lies farther from the training images than {OOD_PERCENTILE:g} % "
                f"of validation lesions do (score {ood_score:.2f} > 1): no class, referral "
                "decision or heatmap is given; use a dermoscopic photo of a lesion")
            return out
        out |= {"probabilities": {c: float(p) for c, p in zip(self.classes, probs, strict=True)},
                "predicted": self.classes[int(decide(probs[None], self.class_bias)[0])]}
        decision = self.card.get("decision")
        if decision:
            basis = probs if refer_from is None else refer_from
            score = float(refer_score(basis[None], self.classes)[0])
            out["refer"] = {"score": score, "threshold": decision["threshold"],
                            "above_threshold": score >= decision["threshold"]}
        return out
