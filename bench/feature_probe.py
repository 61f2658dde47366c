"""Which frozen features, for the `solver: logistic` models? A probe on a real multi-class folder.

    python bench/feature_probe.py ../shared/data/isic2017-dev --exclude data/interim/split.csv

Decodes each image once with the pipeline's decoder at `--size`, turns it into ImageNet
EfficientNet-Lite0/1/2 features (the last layer's global average, or the averages of the
ends of stages 5, 6 and 7 and the last layer concatenated: "multi-layer"; optionally
averaged over the 4 flips of each image), and scores the pipeline's own logistic head
(core/linear_head.py) by stratified 5-fold cross-validation on the pooled out-of-fold
predictions: each class's one-vs-rest AUC, their mean, and the ISIC 2017 ranking score (the
mean of the melanoma and seborrheic keratosis AUCs). `--exclude` names a split.csv whose
`lockbox` rows are left out, so the probe never sees the images that judge the final choice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from stages.core import lite
from stages.core.images import load_image
from stages.core.linear_head import fit_linear_head
from stages.core.sources.local import read_source

STAGE_ENDS = ("block5c_add", "block6d_add", "block7a_project_bn", "top_activation")


def extractor(variant: str, size: int, multi_layer: bool):
    import keras

    base = lite.build_efficientnet_lite(variant, (size, size, 3))
    lite.load_imagenet_weights(base, variant)
    names = STAGE_ENDS if multi_layer else ("top_activation",)
    # Lite1/2 have more blocks per stage: take each stage's last block by prefix.
    layers = {layer.name: layer for layer in base.layers}
    ends = []
    for name in names:
        prefix = name.split("_")[0][:6]
        if name in layers or prefix == "top_ac":
            ends.append(layers[name])
        else:
            ends.append([layer for layer in base.layers if layer.name.startswith(prefix)
                         and layer.name.endswith(("_add", "_project_bn"))][-1])
    pooled = [keras.layers.GlobalAveragePooling2D()(layer.output) for layer in ends]
    out = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate()(pooled)
    return keras.Model(base.input, out)


def features(model, images: np.ndarray, flips: bool) -> np.ndarray:
    views = [images] + ([images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]
                        if flips else [])
    return np.mean([model.predict(np.ascontiguousarray(v), batch_size=32, verbose=0)
                    for v in views], axis=0)


def oof_probs(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    out = np.zeros((len(y), n_classes))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        kernel, bias, _ = fit_linear_head(x[train], y[train], np.arange(len(train)).astype(str),
                                          n_classes)
        logits = x[test] @ kernel + bias
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out[test] = e / e.sum(axis=1, keepdims=True)
    return out


def report(name: str, y: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    aucs = {c: roc_auc_score(y == i, probs[:, i]) for i, c in enumerate(classes)}
    isic = [aucs[c] for c in ("melanoma", "benign keratosis") if c in aucs]
    print(f"| {name} | " + " | ".join(f"{aucs[c]:.3f}" for c in classes)
          + f" | {np.mean(list(aucs.values())):.3f} | {np.mean(isic):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--exclude", type=Path, help="split.csv whose lockbox rows to leave out")
    parser.add_argument("--variants", nargs="+", default=["lite0", "lite1", "lite2"])
    parser.add_argument("--flips", action="store_true", help="also try 4-flip features")
    args = parser.parse_args()
    items, _ = read_source(args.folder)
    if args.exclude:
        split = pd.read_csv(args.exclude, dtype=str, keep_default_na=False)
        items = items[~items["isic_id"].isin(split.loc[split["split"] == "lockbox", "isic_id"])]
    items = items[items["diagnosis"] != ""]
    classes = sorted(items["diagnosis"].unique())
    y = items["diagnosis"].map(classes.index).to_numpy()
    images = np.stack([load_image(p, args.size) for p in items["image_path"]]).astype("float32")
    print(f"{len(y)} images, {args.size} px; pooled 5-fold out-of-fold one-vs-rest ROC AUC\n")
    print("| features | " + " | ".join(classes) + " | mean | ISIC 2017 (mel, SK) |")
    print("|---|" + "---|" * (len(classes) + 2))
    ensemble: dict[str, list[np.ndarray]] = {}
    for variant in args.variants:
        for multi in (False, True):
            for flips in (False, True) if args.flips else (False,):
                name = f"{variant}, {'multi-layer' if multi else 'last layer'}" + (
                    ", 4 flips" if flips else "")
                x = features(extractor(variant, args.size, multi), images, flips)
                probs = oof_probs(x, y, len(classes))
                report(name, y, probs, classes)
                ensemble.setdefault(f"{multi}-{flips}", []).append(probs)
    for key, members in ensemble.items():
        multi, flips = key.split("-")
        report(f"mean of {'+'.join(args.variants)}, "
               f"{'multi-layer' if multi == 'True' else 'last layer'}"
               + (", 4 flips" if flips == "True" else ""), y, np.mean(members, axis=0), classes)


if __name__ == "__main__":
    main()
