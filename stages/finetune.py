"""Stage finetune@<backbone>-<fold>: phase 2 → models/<backbone>/<fold>/model.keras.

Unfreezes the top `unfreeze` layers of a pretrained backbone (or all) and trains on at a lower
learning rate; EarlyStopping on validation AUC keeps the best epoch's weights, and
ReduceLROnPlateau halves the rate when validation stalls. An interrupted run resumes from its
last completed epoch, these callbacks' counters included (core/checkpoints.py).

With `finetune.epochs: 0` (the frozen-feature models) the head model is the model: it is
copied as it is, without starting TensorFlow, which would cost more than the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stages.core.cli import parse_target, run_stage
from stages.core.errors import MissingInputError
from stages.core.files import atomic_path, write_json
from stages.core.params import finetune_config, stage_params, weights_setting
from stages.core.paths import model_dir, training_log_dir


def keep_head(head_path: Path, model_path: Path, train_log: Path, log_dir: Path) -> None:
    """model.keras (+ its card) := head.keras, a training summary that says so, and the
    model's one training curve (the train stage's) as this stage's."""
    if not head_path.exists():
        raise MissingInputError(f"{head_path} not found: run `dvc repro` (or `dvc pull`) first")
    for source, target in ((head_path, model_path),
                           (head_path.with_suffix(".json"), model_path.with_suffix(".json"))):
        with atomic_path(target, suffix=target.suffix) as tmp:
            shutil.copyfile(source, tmp)
    write_json(log_dir / "metrics.json", {"epochs": 0})
    curves = log_dir / "plots" / "metrics"
    shutil.rmtree(curves, ignore_errors=True)
    if (train_log / "plots" / "metrics").is_dir():
        shutil.copytree(train_log / "plots" / "metrics", curves)
    curves.mkdir(parents=True, exist_ok=True)


def fine_tune(backbone: str, fold: str, params: dict, head_path: Path) -> None:
    import keras

    from stages.core.classifier import compile_classifier, unfreeze_backbone
    from stages.core.hardware import Hardware
    from stages.core.model_io import load_model
    from stages.core.phase import Built, Phase, run_phase
    from stages.core.shards import Split

    ft = finetune_config(params, backbone)
    pretrained = weights_setting(params, backbone) is not None

    def build(train: Split, val: Split, meta: dict, hardware: Hardware) -> Built:
        model, card = load_model(head_path)
        card.pop("linear_head", None)  # the backbone trains: the features change
        note = "the whole model trains"
        if pretrained:
            note = f"{unfreeze_backbone(model, ft.unfreeze)} backbone layers trainable"
        compile_classifier(model, ft.lr)
        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=ft.patience,
                                          restore_best_weights=True, verbose=1),
            keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.5,
                                              patience=max(1, ft.patience // 2), verbose=1),
        ]
        return Built(model, card, train, val, callbacks=callbacks, note=note)

    run_phase(Phase("finetune", "model.keras", ft, inputs=(head_path,)), backbone, fold,
              params, build)


def main(backbone: str, fold: str) -> None:
    params = stage_params("finetune", {"backbone": backbone, "fold": fold})
    head_path = model_dir(backbone, fold) / "head.keras"
    if finetune_config(params, backbone).epochs == 0:
        keep_head(head_path, model_dir(backbone, fold) / "model.keras",
                  training_log_dir(backbone, fold, "train"),
                  training_log_dir(backbone, fold, "finetune"))
        print(f"finetune@{backbone}-{fold}: finetune.epochs is 0, the head model is the model",
              flush=True)
    else:
        fine_tune(backbone, fold, params, head_path)


if __name__ == "__main__":
    run_stage("finetune", main, *parse_target(__doc__.splitlines()[0]))
