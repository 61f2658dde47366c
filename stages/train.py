"""Stage train@<backbone>-<fold>: phase 1 of transfer learning → models/<b>/<fold>/head.keras.

A pretrained backbone is frozen and only the new head learns, so large early gradients from
a random head cannot wreck the ImageNet features; a backbone without pretrained weights
trains whole. Curves go to metrics/training/<b>/<fold>/train (DVCLive). An interrupted run
resumes from its last completed epoch (see core/training.py).
"""

from __future__ import annotations

from dataclasses import asdict

from stages.core.classifier import (
    build_classifier,
    compile_classifier,
    model_card,
    split_at_pool,
    write_model,
)
from stages.core.cli import parse_target, run_stage
from stages.core.hardware import set_up
from stages.core.params import get, load_params, model_config
from stages.core.paths import (
    AUGMENTED_DIR,
    PREPARED_DIR,
    model_dir,
    training_log_dir,
)
from stages.core.training import (
    Checkpoints,
    backbone_features,
    backup_root,
    fingerprint,
    fit_resumable,
    seed_everything,
    training_data,
)


def main(backbone: str, fold: str) -> None:
    params = load_params()
    hardware = set_up(params)  # first: a cluster's strategy must exist before other TF work
    cfg = model_config(params, backbone)
    seed = get(params, "seed")
    seed_everything(seed)
    train, val, meta = training_data(fold)
    classes = meta["classes"]
    with hardware.strategy.scope():
        model = build_classifier(cfg, meta["image_size"], len(classes))
        fitted = model
        if cfg.weights is not None:
            # A frozen backbone turns each image into the same features in every epoch
            # (augment varied the images once, offline), so compute them once and fit the
            # head on them: the same training for one backbone pass instead of `epochs`.
            extractor, fitted = split_at_pool(model)
            train, val = (backbone_features(extractor, split, cfg.train.batch_size)
                          for split in (train, val))
        compile_classifier(fitted, cfg.train.lr, len(classes))
    trainable = sum(int(w.shape.num_elements() or 0) for w in fitted.trainable_weights)
    print(f"train@{backbone}-{fold}: {cfg.arch}, weights={cfg.weights}, {trainable:,} trainable "
          f"parameters, {cfg.train.epochs} epochs; {hardware.describe()}", flush=True)
    # Exactly what dvc.yaml lists for this stage: a change to any of it starts afresh.
    run_params = {"seed": seed, "compute": params["compute"], "fold": fold, "arch": cfg.arch,
                  "weights": cfg.weights, "head": asdict(cfg.head), "train": asdict(cfg.train)}
    checkpoints = Checkpoints("train", f"{backbone}-{fold}",
                              fingerprint(run_params, [PREPARED_DIR, AUGMENTED_DIR]),
                              backup_root(hardware))
    fit_resumable(fitted, train, val, len(classes), cfg.train, seed, checkpoints,
                  f"train@{backbone}-{fold}", hardware)
    if not hardware.is_chief:
        return
    write_model(model, model_dir(backbone, fold) / "head.keras",
                model_card(cfg, meta["image_size"], classes,
                           meta.get("preprocessing")))
    checkpoints.finish(training_log_dir(backbone, fold, "train"))


if __name__ == "__main__":
    run_stage("train", main, *parse_target(__doc__.splitlines()[0]))
