"""Stage finetune@<backbone>: phase 2 → models/<backbone>/model.keras.

Unfreezes the top `unfreeze` layers of a pretrained backbone (or all) and trains on at a lower
learning rate; EarlyStopping on validation AUC keeps the best epoch's weights, and
ReduceLROnPlateau halves the rate when validation stalls.
"""

from __future__ import annotations

import keras

from stages.core.classifier import (
    compile_classifier,
    load_model,
    model_card,
    unfreeze_backbone,
    write_model,
)
from stages.core.errors import run_stage
from stages.core.params import get, load_params, model_config
from stages.core.paths import model_dir, parse_target, training_log_dir
from stages.core.training import fit_logged, seed_everything, training_data


def main(backbone: str, fold: str) -> None:
    params = load_params()
    cfg = model_config(params, backbone)
    ft = cfg.finetune
    seed_everything(get(params, "seed"))
    train, val, meta = training_data(ft.batch_size, get(params, "seed"), fold)
    out_dir = model_dir(backbone, fold)
    model, _ = load_model(out_dir / "head.keras")
    if cfg.weights is not None:
        unfrozen = unfreeze_backbone(model, ft.unfreeze)
        print(f"finetune@{backbone}-{fold}: {unfrozen} backbone layers trainable", flush=True)
    compile_classifier(model, ft.lr, len(meta["classes"]))
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=ft.patience,
                                      restore_best_weights=True, verbose=1),
        keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.5,
                                          patience=max(1, ft.patience // 2), verbose=1),
    ]
    fit_logged(model, train, val, ft.epochs, training_log_dir(backbone, fold, "finetune"),
               callbacks)
    write_model(model, out_dir / "model.keras",
                model_card(cfg, meta["image_size"], meta["classes"]))


if __name__ == "__main__":
    run_stage("finetune", main, *parse_target(__doc__.splitlines()[0]))
