"""Stage finetune@<backbone>: phase 2 → models/<backbone>/model.keras.

Unfreezes the top `unfreeze` layers of a pretrained backbone (or all) and trains on at a lower
learning rate; EarlyStopping on validation AUC keeps the best epoch's weights, and
ReduceLROnPlateau halves the rate when validation stalls. An interrupted run resumes from its
last completed epoch, these callbacks' counters included (see core/training.py).
"""

from __future__ import annotations

from dataclasses import asdict

import keras

from stages.core.classifier import (
    compile_classifier,
    load_model,
    model_card,
    unfreeze_backbone,
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
    ft = cfg.finetune
    seed = get(params, "seed")
    seed_everything(seed)
    train, val, meta = training_data(fold)
    head_path = model_dir(backbone, fold) / "head.keras"
    with hardware.strategy.scope():
        model, _ = load_model(head_path)
        if cfg.weights is not None:
            unfrozen = unfreeze_backbone(model, ft.unfreeze)
            print(f"finetune@{backbone}-{fold}: {unfrozen} backbone layers trainable; "
                  f"{hardware.describe()}", flush=True)
        compile_classifier(model, ft.lr, len(meta["classes"]))
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=ft.patience,
                                      restore_best_weights=True, verbose=1),
        keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.5,
                                          patience=max(1, ft.patience // 2), verbose=1),
    ]
    # Exactly what dvc.yaml lists for this stage: a change to any of it starts afresh.
    run_params = {"seed": seed, "compute": params["compute"], "fold": fold,
                  "weights": cfg.weights, "finetune": asdict(ft)}
    checkpoints = Checkpoints("finetune", f"{backbone}-{fold}", fingerprint(
        run_params, [head_path, PREPARED_DIR, AUGMENTED_DIR]), backup_root(hardware))
    fit_resumable(model, train, val, len(meta["classes"]), ft, seed, checkpoints,
                  f"finetune@{backbone}-{fold}", hardware, callbacks)
    if not hardware.is_chief:
        return
    write_model(model, model_dir(backbone, fold) / "model.keras",
                model_card(cfg, meta["image_size"], meta["classes"],
                           meta.get("preprocessing")))
    checkpoints.finish(training_log_dir(backbone, fold, "finetune"))


if __name__ == "__main__":
    run_stage("finetune", main, *parse_target(__doc__.splitlines()[0]))
