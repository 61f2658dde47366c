"""A small real-data model for the slow tests of decisions (shift, adaptation): pooled
ImageNet Lite0 features of 128 px ISIC images and a logistic head, calibrated and given a
guaranteed referral threshold on its out-of-fold predictions, as compare would."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from stages.core.calibration import apply_temperature, fit_temperature, guaranteed_threshold
from stages.core.images import load_image
from stages.core.ood_extractor import build_extractor
from stages.core.shift import reference_profile

SIZE = 128
CLASSES = ["benign", "malignant"]


def malignant(frame: pd.DataFrame) -> np.ndarray:
    return (frame["benign_malignant"] == "malignant").to_numpy().astype(int)


@dataclass
class LesionModel:
    card: dict  # as compare writes it: calibration, decision, shift reference
    head: LogisticRegression
    extractor: object

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        images = np.stack([load_image(p, SIZE) for p in frame["image_path"]])
        return self.extractor.predict(images.astype("float32"), batch_size=32, verbose=0)

    def probs(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities, as the served card gives them."""
        return apply_temperature(self.head.predict_proba(self.features(frame)),
                                 self.card["calibration"]["temperature"])


def fit_lesion_model(train: pd.DataFrame) -> LesionModel:
    model = LesionModel({}, LogisticRegression(C=0.1, max_iter=2000), build_extractor(SIZE))
    features, labels = model.features(train), malignant(train)
    oof = cross_val_predict(model.head, features, labels, cv=5, method="predict_proba")
    temperature = round(fit_temperature(labels, oof), 4)
    calibrated = apply_temperature(oof, temperature)
    threshold = guaranteed_threshold(labels == 1, calibrated[:, 1], 0.85, 0.95).threshold
    model.card = {"name": "Lite0 128 px + logistic", "classes": CLASSES,
                  "calibration": {"method": "temperature", "temperature": temperature},
                  "decision": {"refer_classes": ["malignant"], "threshold": threshold,
                               "target_sensitivity": 0.85, "confidence": 0.95},
                  "shift_reference": reference_profile(calibrated, CLASSES, threshold)}
    model.head.fit(features, labels)
    return model
