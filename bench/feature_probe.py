"""Which frozen features and which linear head, for the `solver: logistic` models? A probe on
a real folder, on the development images only.

    python bench/feature_probe.py ../shared/data/isic2017-dev --exclude data/interim/split.csv

Decodes each image once with the pipeline's decoder at `--size`, turns each of its eight
flips/rotations (core/tta.py) into pooled ImageNet features of the registered backbones
(`--backbones`, default the multi-scale Lite0/1/2), cached in `--cache`, and scores the
pipeline's own logistic head (core/linear_head.py) by 5-fold cross-validation grouped by
lesion/patient, on the pooled out-of-fold predictions: each class's one-vs-rest AUC, their
mean, the ISIC 2017 ranking score (mean of the melanoma and seborrheic keratosis AUCs) and
balanced multiclass accuracy at the arg-max (ISIC 2018's metric). Variants: one view or the
mean features of all eight (head.views: 8); class weights none or balanced (on eight views);
each backbone alone and the mean of their probabilities (the served ensemble's rule).
`--exclude` names a split.csv whose `lockbox` rows are left out, so the probe never sees the
images that judge the final choice. `--one-view` keeps the first view only, scored with class
weights none and balanced: an eighth of the backbone work, for comparing `--size` (HAM10000's
600×450 photos at 256, 384 and 512 px).

`--inputs` instead compares, for the first backbone and one view, what goes in and how it is
pooled: plain; Shades of Gray colour constancy (prepare.color_constancy); a central 80 % crop
(decoded at size / 0.8, the middle `size` pixels kept); the mean of plain and crop features
(a two-crop view); global max and generalised-mean (GeM, p = 3) pooling instead of the
average; and the mean of the plain and Shades-of-Gray models' probabilities.

`--extra FOLDER ...` instead scores one view (class weights none) without and with those
folders' images added to every fold's fit, never scored (data.extra_train): only images of the
data's classes and ids, lesions and patients not in the data are added.

`--heads` instead compares, for the first backbone, one view and class weights none (with the
`--extra` images in every fit, if given), the pipeline's logistic head with other learners on
the same standardised features (OTHER_HEADS: shrinkage LDA, a one-hidden-layer MLP, an RBF
SVM), each alone and averaged with the logistic head.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from stages.core.backbones import build_base
from stages.core.images import PLAIN, Preprocessing, load_image
from stages.core.inference import as_predict
from stages.core.linear_head import fit_linear_head, softmax
from stages.core.sources.local import read_source
from stages.core.tta import TRANSFORMS
from stages.split import link_groups, unusable_train_only


def view_features(arch: str, images: np.ndarray, cache: Path, views: int = 8) -> np.ndarray:
    """(views, n, d) pooled features of `arch` (ImageNet weights), cached on disk."""
    if cache.exists():
        return np.load(cache)["features"]
    import keras

    base = build_base(arch, images.shape[1:], "imagenet")
    extractor = as_predict(keras.Sequential([base, keras.layers.GlobalAveragePooling2D()]), 32)
    out = np.stack([extractor(np.ascontiguousarray(view(images)))
                    for view in list(TRANSFORMS.values())[:views]])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=out)
    return out


def pooled_maps(arch: str, images: np.ndarray, cache: Path) -> dict[str, np.ndarray]:
    """{"avg", "max", "gem"}: one view's (n, d) features of `arch` under three global poolings
    of its last feature map, cached on disk."""
    if cache.exists():
        return dict(np.load(cache))
    base = as_predict(build_base(arch, images.shape[1:], "imagenet"), 32)
    pooled: dict[str, list[np.ndarray]] = {"avg": [], "max": [], "gem": []}
    for start in range(0, len(images), 64):  # pooled per batch: all maps would take GBs
        maps = base(images[start:start + 64])
        pooled["avg"].append(maps.mean(axis=(1, 2)))
        pooled["max"].append(maps.max(axis=(1, 2)))
        pooled["gem"].append(np.cbrt(np.mean(np.maximum(maps, 0) ** 3, axis=(1, 2))))
    out = {name: np.concatenate(parts) for name, parts in pooled.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def compare_inputs(arch: str, paths: list[str], size: int, cache: Path, score) -> None:
    """The --inputs rows (module docstring), each scored by `score(name, features or probs)`."""
    def decoded(steps: Preprocessing = PLAIN, crop: float = 1.0) -> np.ndarray:
        full = round(size / crop)
        edge = (full - size) // 2
        return np.stack([load_image(p, full, steps)[edge:edge + size, edge:edge + size]
                         for p in paths]).astype("float32")

    plain = pooled_maps(arch, decoded(), cache / "plain.npz")
    gray = pooled_maps(arch, decoded(Preprocessing(color_constancy="shades_of_gray")),
                       cache / "shades_of_gray.npz")
    crop = pooled_maps(arch, decoded(crop=0.8), cache / "crop80.npz")
    score("plain (average pooling)", plain["avg"])
    score("Shades of Gray", gray["avg"])
    score("central 80 % crop", crop["avg"])
    score("mean of plain and crop features (two crops)", (plain["avg"] + crop["avg"]) / 2)
    score("global max pooling", plain["max"])
    score("GeM pooling, p = 3", plain["gem"])
    score("mean of plain and Shades-of-Gray probabilities", plain["avg"], gray["avg"])


# --heads: other scikit-learn learners on the same standardised features.
OTHER_HEADS = {
    "shrinkage LDA (Ledoit-Wolf)": lambda: LinearDiscriminantAnalysis(solver="lsqr",
                                                                     shrinkage="auto"),
    "MLP, 256 hidden units, alpha 1, early stopping": lambda: MLPClassifier(
        (256,), alpha=1.0, early_stopping=True, max_iter=300, random_state=0),
    "RBF SVM, C 1, sigmoid-calibrated": lambda: CalibratedClassifierCV(SVC(), ensemble=False),
}


def oof_probs(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int,
              class_weight: str | None, extra: tuple | None = None,
              learner=None) -> np.ndarray:
    """Pooled out-of-fold probabilities of the pipeline's logistic head, or of `learner()`
    on standardised features; `extra` (x, y, groups) joins every fold's fit and, as in the
    pipeline, no inner score."""
    out = np.zeros((len(y), n_classes))
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    for train, test in folds.split(x, y, groups):
        fit = (x[train], y[train], groups[train])
        if extra is not None:
            fit = tuple(np.concatenate([a, b]) for a, b in zip(fit, extra, strict=True))
        if learner is not None:
            out[test] = make_pipeline(StandardScaler(), learner()).fit(
                fit[0], fit[1]).predict_proba(x[test])
            continue
        kernel, bias, *_ = fit_linear_head(*fit, n_classes, class_weight,
                                          np.arange(len(fit[1])) >= len(train))
        out[test] = softmax(x[test] @ kernel + bias)
    return out


def group_ids(items: pd.DataFrame) -> np.ndarray:
    """Lesion, else patient, else image: what must not straddle folds."""
    groups = items["lesion_id"].where(items["lesion_id"] != "", items["patient_id"])
    return groups.where(groups != "", items["isic_id"]).to_numpy().astype(object)


def extra_items(folders: list[Path], data: pd.DataFrame) -> pd.DataFrame:
    """The folders' labelled images that split would keep as training-only: a new id, and no
    lesion, patient or class the data lacks (split.unusable_train_only, the one rule)."""
    extra = pd.concat([read_source(folder)[0] for folder in folders], ignore_index=True)
    extra = extra[(extra["diagnosis"] != "") & ~extra["isic_id"].isin(data["isic_id"])
                  & ~extra["isic_id"].duplicated()]
    both = pd.concat([data, extra], ignore_index=True)
    frame = pd.DataFrame({"label": both["diagnosis"], "group": link_groups(both)})
    train_only = pd.Series(np.arange(len(both)) >= len(data))
    keep = (unusable_train_only(frame, train_only) == "")[train_only].to_numpy()
    return extra[keep]


def report(name: str, y: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    aucs = {c: roc_auc_score(y == i, probs[:, i]) for i, c in enumerate(classes)}
    isic = [aucs[c] for c in ("melanoma", "benign keratosis") if c in aucs]
    bma = balanced_accuracy_score(y, probs.argmax(axis=1))
    print(f"| {name} | " + " | ".join(f"{aucs[c]:.3f}" for c in classes)
          + f" | {np.mean(list(aucs.values())):.3f} | {np.mean(isic):.3f} | {bma:.3f} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--exclude", type=Path, help="split.csv whose lockbox rows to leave out")
    parser.add_argument("--backbones", nargs="+", default=[
        "efficientnet_lite0_ms", "efficientnet_lite1_ms", "efficientnet_lite2_ms"])
    parser.add_argument("--cache", type=Path, default=Path(".cache/feature_probe"))
    parser.add_argument("--one-view", action="store_true",
                        help="only the 1-view rows, with class weights none and balanced (8x "
                             "less backbone work: for comparing --size)")
    parser.add_argument("--extra", type=Path, nargs="+",
                        help="folders whose images join every fold's fit (docstring)")
    parser.add_argument("--heads", action="store_true",
                        help="compare heads for the first backbone, one view (docstring)")
    parser.add_argument("--inputs", action="store_true",
                        help="compare inputs and poolings for the first backbone (docstring)")
    args = parser.parse_args()
    items, _ = read_source(args.folder)
    if args.exclude:
        split = pd.read_csv(args.exclude, dtype=str, keep_default_na=False)
        items = items[~items["isic_id"].isin(split.loc[split["split"] == "lockbox", "isic_id"])]
    items = items[items["diagnosis"] != ""]
    classes = sorted(items["diagnosis"].unique())
    y = items["diagnosis"].map(classes.index).to_numpy()
    groups = group_ids(items)
    print(f"{len(y)} images, {args.size} px; pooled 5-fold out-of-fold (grouped) one-vs-rest "
          "ROC AUC, balanced accuracy at the arg-max\n")
    print("| features, head | " + " | ".join(classes) + " | mean | ISIC 2017 | BMA |")
    print("|---|" + "---|" * (len(classes) + 3))
    tag = f"{args.folder.name}-{args.size}-{len(y)}"
    if args.inputs:
        def score(name: str, *members: np.ndarray) -> None:
            probs = [oof_probs(x, y, groups, len(classes), None) for x in members]
            report(f"{args.backbones[0]}, 1 view: {name}", y, np.mean(probs, axis=0), classes)

        compare_inputs(args.backbones[0], list(items["image_path"]), args.size,
                       args.cache / f"{tag}-{args.backbones[0]}-inputs", score)
        return
    images = np.stack([load_image(p, args.size) for p in items["image_path"]]).astype("float32")
    computed = 1 if args.one_view or args.extra or args.heads else 8
    archs = args.backbones[:1] if args.heads else args.backbones
    feats = {arch: view_features(arch, images, args.cache / f"{tag}-{arch}-{computed}v.npz",
                                 computed) for arch in archs}
    if args.heads:
        compare_heads(args, items, classes, y, groups, feats[archs[0]][0])
        return
    if args.extra:
        compare_extra(args, items, classes, y, groups, feats)
        return
    # Views first (on the data's own class frequencies), then class weights (on 8 views, or the
    # one with --one-view).
    rows = ((1, None), (1, "balanced")) if args.one_view else \
        ((1, None), (8, None), (8, "balanced"))
    for views, weight in rows:
        name = f"{views} view{'s' if views > 1 else ''}, class weights {weight or 'none'}"
        members = {arch: f[0] if views == 1 else f.mean(axis=0) for arch, f in feats.items()}
        probs = {}
        for arch, x in members.items():
            probs[arch] = oof_probs(x, y, groups, len(classes), weight)
            report(f"{arch}, {name}", y, probs[arch], classes)
        if len(members) > 1:
            report(f"mean of the {len(members)}, {name}", y,
                   np.mean(list(probs.values()), axis=0), classes)


def extra_fits(args, items: pd.DataFrame, classes: list[str], archs: list[str],
               ) -> dict[str, tuple]:
    """{backbone: (features, labels, groups)} of the --extra images, one view."""
    extra = extra_items(args.extra, items)
    images = np.stack([load_image(p, args.size) for p in extra["image_path"]]).astype("float32")
    tag = "+".join(f.name for f in args.extra)
    print(f"\n{len(extra)} extra images from {tag}: "
          + ", ".join(f"{c} {n}" for c, n in extra["diagnosis"].value_counts().items()) + "\n")
    return {arch: (view_features(arch, images, args.cache /
                                 f"{tag}-{args.size}-{len(extra)}-{arch}-1v.npz", 1)[0],
                   extra["diagnosis"].map(classes.index).to_numpy(), group_ids(extra))
            for arch in archs}


def compare_heads(args, items: pd.DataFrame, classes: list[str], y: np.ndarray,
                  groups: np.ndarray, x: np.ndarray) -> None:
    """The --heads rows: the first backbone, one view, class weights none; the pipeline's
    logistic head beside OTHER_HEADS, alone and averaged with it."""
    arch = args.backbones[0]
    extra = extra_fits(args, items, classes, [arch])[arch] if args.extra else None
    logistic = oof_probs(x, y, groups, len(classes), None, extra)
    report(f"{arch}, 1 view: logistic regression, C by inner CV (the pipeline's)", y,
           logistic, classes)
    for name, learner in OTHER_HEADS.items():
        probs = oof_probs(x, y, groups, len(classes), None, extra, learner)
        report(f"{arch}, 1 view: {name}", y, probs, classes)
        report(f"{arch}, 1 view: mean of logistic and {name}", y, (logistic + probs) / 2,
               classes)


def compare_extra(args, items: pd.DataFrame, classes: list[str], y: np.ndarray,
                  groups: np.ndarray, feats: dict[str, np.ndarray]) -> None:
    """The --extra rows: each backbone and the mean of their probabilities, one view, class
    weights none, without and with the extra images in every fold's fit."""
    fits = extra_fits(args, items, classes, list(feats))
    tag = "+".join(f.name for f in args.extra)
    for name, with_extra in (("without", False), ("with", True)):
        probs = {arch: oof_probs(f[0], y, groups, len(classes), None,
                                 fits[arch] if with_extra else None)
                 for arch, f in feats.items()}
        for arch, p in probs.items():
            report(f"{arch}, 1 view, {name} {tag}", y, p, classes)
        if len(probs) > 1:
            report(f"mean of the {len(probs)}, 1 view, {name} {tag}", y,
                   np.mean(list(probs.values()), axis=0), classes)


if __name__ == "__main__":
    main()
