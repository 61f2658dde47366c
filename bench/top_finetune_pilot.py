"""Pilot for issue #26 item 3: does fine-tuning the top of a frozen Lite backbone, on its
activations computed once per image and view, beat the frozen logistic head? One backbone,
one fixed recipe (no choice made on the test folds), development folds only.

    python bench/top_finetune_pilot.py uda1                  # a profile in profiles/
    python bench/top_finetune_pilot.py uda1 --tune top       # only the top conv

Clones this repository beside it (so the profile's ../shared/data paths hold), runs the
profile's `download → split → prepare` there, and for each cross-validation fold (its lockbox
is never read):
- runs the multi-scale backbone once over every image in its 8 dihedral views, keeping the
  four pooled layers and the map that feeds the tuned layers (`--tune`);
- baseline: the profile's head, `linear_head.fit_linear_head` on the identity view's features
  (the four pooled layers: what the `lite*_ms_frozen` models fit);
- tuned: the same head as the starting point, then the tuned layers (their BatchNorm
  statistics kept) and the head trained together with Adam for `--epochs`, each epoch on one random
  dihedral view of every training image;
and scores each on the fold's test images (identity view). It prints the pooled out-of-fold
ROC AUC (the pipeline's: of the positive class, or the mean over classes) of each, and each
variant's paired difference from the frozen head with a 95 % bootstrap interval (2,000
resamples within each class, core/metrics.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stages.app.profile import cpu_model
from stages.core.linear_head import fit_linear_head
from stages.core.metrics import bootstrap_intervals, interval_scores
from stages.core.paths import PREPARED_DIR
from stages.core.shards import Split, fold_parts, read_meta, read_split
from stages.core.softmax import softmax

REPO = Path(__file__).resolve().parents[1]
VIEWS = 8


def dihedral(images: np.ndarray, view: int) -> np.ndarray:
    """View 0 is the image; 1-3 its rotations by 90°; 4-7 those of its mirror image."""
    out = images[:, :, ::-1] if view >= 4 else images
    return np.rot90(out, view % 4, axes=(1, 2))


def prepare_workspace(name: str) -> Path:
    workdir = REPO.parent / f"{REPO.name}-pilot-{name}"
    shutil.rmtree(workdir, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
    code = ("import sys; from stages.app.profile import profile_params, write_params; "
            "write_params(profile_params(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", code, name], cwd=workdir, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q", "prepare"], cwd=workdir,
                   check=True)
    return workdir


# What --tune trains: the layers, in order (a plain chain: no skip connection), the index of
# the multi-scale input (stage 5, 6, 7 ends, top) that feeds them, and the layers whose pooled
# outputs are features (the rest of the four stay frozen).
TUNED = {
    "top": (["top_conv", "top_bn", "top_activation"], 2, ["top_activation"]),
    "stage7": (["block7a_expand_conv", "block7a_expand_bn", "block7a_expand_activation",
                "block7a_dwconv", "block7a_bn", "block7a_activation", "block7a_project_conv",
                "block7a_project_bn", "top_conv", "top_bn", "top_activation"], 1,
               ["block7a_project_bn", "top_activation"]),
}


def activations(base, images: np.ndarray, sources: set[int],
                ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(the four pooled layers the frozen models fit (n, views, d), float32; {multi-scale
    input index: the maps that feed tuned layers (n, views, h, w, c)}, float16 to fit in
    memory). One backbone pass serves every --tune variant."""
    import keras

    trunk = keras.Model(base.input, base.get_layer("multi_scale").input)
    pooled, maps = [], {source: [] for source in sources}
    for view in range(VIEWS):
        outputs = [trunk.predict_on_batch(dihedral(images[i:i + 64], view))
                   for i in range(0, len(images), 64)]
        layers = [np.concatenate(parts) for parts in zip(*outputs, strict=True)]
        pooled.append(np.hstack([layer.mean((1, 2)) for layer in layers]))
        for source in sources:
            maps[source].append(layers[source].astype(np.float16))
        print(f"  view {view + 1}/{VIEWS} done", flush=True)
    return np.stack(pooled, 1), {source: np.stack(m, 1) for source, m in maps.items()}


def tuned_model(base, tune: str, n_frozen: int, kernel: np.ndarray, bias: np.ndarray):
    """[the frozen pooled layers, the map feeding the tuned layers] → softmax: the tuned
    layers trainable from ImageNet's weights, their BatchNorm statistics kept."""
    import keras

    chain, _, taps = TUNED[tune]
    maps = keras.Input(base.get_layer(chain[0]).input.shape[1:], name="maps")
    frozen = keras.Input((n_frozen,), name="pooled")
    x, pooled = maps, [frozen]
    for name in chain:
        layer = base.get_layer(name)
        copy = layer.__class__.from_config(layer.get_config())
        x = copy(x)
        copy.set_weights(layer.get_weights())
        if name in taps:
            pooled.append(keras.layers.GlobalAveragePooling2D()(x))
    features = keras.layers.Concatenate()(pooled)
    head = keras.layers.Dense(len(bias), activation="softmax")
    model = keras.Model([frozen, maps], head(features))
    head.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a profile in profiles/")
    parser.add_argument("--arch", default="efficientnet_lite0_ms")
    parser.add_argument("--tune", nargs="+", choices=sorted(TUNED), default=["top", "stage7"],
                        help="top: the top 1x1 conv; stage7: the last MBConv block and the top")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--limit", type=int, help="the first N images of each part (a smoke "
                        "test of this script, not a measurement)")
    args = parser.parse_args()
    started = time.monotonic()
    workdir = prepare_workspace(args.name)
    os.chdir(workdir)  # the same code as here; its data
    import keras

    from stages.core.backbones import build_base

    keras.utils.set_random_seed(0)
    meta = read_meta(PREPARED_DIR)
    parts = list(meta["counts"])
    data = {part: read_split(PREPARED_DIR, part) for part in parts}
    if args.limit:
        data = {p: Split(*(x[:args.limit] for x in (d.images, d.labels, d.ids)))
                for p, d in data.items()}
    images = np.concatenate([data[p].images for p in parts])
    print(f"{args.name}: {len(images)} images x {VIEWS} views through {args.arch}", flush=True)
    base = build_base(args.arch, images.shape[1:], "imagenet")
    pooled_all, maps = activations(base, images, {TUNED[tune][1] for tune in args.tune})
    offsets = np.cumsum([0] + [len(data[p].labels) for p in parts])
    rows = {p: slice(offsets[i], offsets[i + 1]) for i, p in enumerate(parts)}
    classes = meta["classes"]
    rngs = {tune: np.random.default_rng(0) for tune in args.tune}  # each variant's views
    labels_oof, probs_oof = [], {"frozen": [], **{tune: [] for tune in args.tune}}
    for fold in sorted(int(p[4:]) for p in parts if p.startswith("fold")):
        split = fold_parts(str(fold), parts)
        train = [*split.train, split.val]
        idx = np.concatenate([np.arange(len(images))[rows[p]] for p in train])
        test = np.arange(len(images))[rows[split.test]]
        labels = np.concatenate([data[p].labels for p in train])
        ids = np.concatenate([data[p].ids for p in train])
        only = np.concatenate([np.full(len(data[p].labels), p == "train_only") for p in train])
        features = pooled_all[:, 0]
        head = fit_linear_head(features[idx], labels, ids, len(classes), train_only=only)
        probs = {"frozen": softmax(features[test] @ head.kernel + head.bias)}
        for tune in args.tune:
            _, source, taps = TUNED[tune]
            n_tuned = sum(base.get_layer(name).output.shape[-1] for name in taps)
            frozen = pooled_all[:, :, :-n_tuned]
            model = tuned_model(base, tune, frozen.shape[2], head.kernel, head.bias)
            model.compile(keras.optimizers.Adam(args.lr), "sparse_categorical_crossentropy")
            for _ in range(args.epochs):
                view = rngs[tune].integers(0, VIEWS, len(idx))
                model.fit([frozen[idx, view], maps[source][idx, view].astype(np.float32)],
                          labels, batch_size=64, epochs=1, shuffle=True, verbose=0)
            probs[tune] = np.asarray(model.predict_on_batch(
                [frozen[test, 0], maps[source][test, 0].astype(np.float32)]))
        test_labels = data[split.test].labels
        print(f"fold {fold}: ROC AUC " + ", ".join(
            f"{name} {roc_auc(test_labels, p, classes):.3f}" for name, p in probs.items()),
            flush=True)
        labels_oof.append(test_labels)
        for name, p in probs.items():
            probs_oof[name].append(p)
    y = np.concatenate(labels_oof)
    oof = {name: np.concatenate(p) for name, p in probs_oof.items()}
    print(f"\n{args.name}, {args.arch}, {len(y)} out-of-fold images, CPU {cpu_model()}, "
          f"{time.monotonic() - started:.0f} s; tuned: {args.epochs} epochs, lr {args.lr}")
    print(f"ROC AUC frozen head {roc_auc(y, oof['frozen'], classes):.3f}")
    for tune in args.tune:
        def gain(ix: np.ndarray, tune: str = tune) -> dict[str, float]:
            return {"gain": roc_auc(y[ix], oof[tune][ix], classes)
                    - roc_auc(y[ix], oof["frozen"][ix], classes)}

        ci = bootstrap_intervals(y, gain, 2000, 0)
        print(f"tuned {tune}: {roc_auc(y, oof[tune], classes):.3f}; tuned - frozen "
              f"{gain(np.arange(len(y)))['gain']:+.3f} "
              f"(95 % CI {ci['gain_ci_low']:+.3f} to {ci['gain_ci_high']:+.3f})")
    shutil.rmtree(workdir, ignore_errors=True)


def roc_auc(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> float:
    """The pipeline's ROC AUC: of the positive class, or the mean over classes."""
    return interval_scores(labels, probs, classes)["roc_auc"]


if __name__ == "__main__":
    main()
