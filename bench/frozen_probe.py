"""How good are frozen ImageNet Lite0 features on a folder of real images? A quick probe.

    python bench/frozen_probe.py ../shared/data/isic-uda1-dev --size 224

Decodes every image of the folder with images.load_image (the pipeline's one decoder) under
each preprocessing setting (plain, Shades of Gray, border crop + Shades of Gray), turns it
into ImageNet EfficientNet-Lite0 features (global average pooling, no fine-tuning) and scores
a logistic regression on them by stratified 5-fold cross-validation, three shuffles: the
pooled out-of-fold ROC AUC, mean over shuffles. Minutes on a CPU instead of a training run,
so it is how the prepare.crop_border / prepare.color_constancy defaults were chosen. Binary
folders only (benign vs malignant).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stages.core import lite
from stages.core.images import Preprocessing, load_image
from stages.core.sources.local import read_source

SETTINGS = {"plain": (False, "none"), "shades_of_gray": (False, "shades_of_gray"),
            "crop + shades_of_gray": (True, "shades_of_gray")}


def probe_auc(features: np.ndarray, labels: np.ndarray, shuffles: int = 3) -> float:
    aucs = []
    for seed in range(shuffles):
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        scores = cross_val_predict(classifier, features, labels, cv=folds,
                                   method="predict_proba")[:, 1]
        aucs.append(roc_auc_score(labels, scores))
    return float(np.mean(aucs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    items, _ = read_source(args.folder)
    labels = (items["benign_malignant"] == "malignant").to_numpy().astype(int)
    base = lite.build_efficientnet_lite("lite0", (args.size, args.size, 3), include_top=False,
                                          pooling="avg")
    lite.load_imagenet_weights(base, "lite0")
    print(f"{len(labels)} images ({labels.sum()} malignant), {args.size} px", flush=True)
    for name, (crop, colour) in SETTINGS.items():
        images = np.stack([load_image(path, args.size, Preprocessing(crop, colour))
                           for path in items["image_path"]])
        features = base.predict(images.astype("float32"), batch_size=32, verbose=0)
        print(f"{name:>22}: frozen-feature probe ROC AUC {probe_auc(features, labels):.3f}",
              flush=True)


if __name__ == "__main__":
    main()
