"""Stage finetune@<backbone>: phase 2 → models/<backbone>/<fold>/model.keras, every fold.

Unfreezes the top `unfreeze` layers of a pretrained backbone (or all) and trains on at a lower
learning rate; EarlyStopping on validation AUC keeps the best epoch's weights, and
ReduceLROnPlateau halves the rate when validation stalls. An interrupted run resumes from its
last completed epoch, these callbacks' counters included (core/checkpoints.py).

With `finetune.cache_trunk: true` the layers below the unfrozen ones run once per image and
the epochs train the top on their cached activations (core/frozen_trunk.py).

With `finetune.epochs: 0` (the frozen-feature models) the head model is the model: it is
copied as it is, without starting TensorFlow, which would cost more than the copy. One process
does every fold (`folds`), as train does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stages.core.cli import parse_target, run_stage
from stages.core.errors import MissingInputError
from stages.core.files import atomic_path, write_json
from stages.core.params import (
    ParamsError,
    finetune_config,
    fold_names,
    stage_params,
    weights_setting,
)
from stages.core.paths import head_file, model_dir, plots_dir, training_summary_file


def keep_head(backbone: str, fold: str) -> None:
    """model.keras (+ its card) := head.keras, a training summary that says so, and the
    model's one training curve (the train stage's) as this stage's."""
    head_path, model_path = head_file(backbone, fold), model_dir(backbone, fold) / "model.keras"
    if not head_path.exists():
        raise MissingInputError(f"{head_path} not found: run `dvc repro` (or `dvc pull`) first")
    for source, target in ((head_path, model_path),
                           (head_path.with_suffix(".json"), model_path.with_suffix(".json"))):
        with atomic_path(target, suffix=target.suffix) as tmp:
            shutil.copyfile(source, tmp)
    write_json(training_summary_file(backbone, "finetune", fold), {"epochs": 0})
    train_curves = plots_dir(backbone, "train") / fold
    with atomic_path(plots_dir(backbone, "finetune") / fold) as tmp:
        if train_curves.is_dir():
            shutil.copytree(train_curves, tmp)
        else:
            tmp.mkdir()


def fine_tune(backbone: str, fold: str, params: dict, head_path: Path) -> None:
    import keras

    from stages.core.classifier import compile_classifier, unfreeze_backbone
    from stages.core.clinical import ClinicalEncoding
    from stages.core.clinical_branch import ClinicalBranch, joined_model
    from stages.core.fold_data import backbone_features
    from stages.core.frozen_trunk import split_at_trunk
    from stages.core.hardware import Hardware
    from stages.core.model_io import load_model
    from stages.core.phase import Built, Phase, run_phase
    from stages.core.shards import Split

    ft = finetune_config(params, backbone)
    pretrained = weights_setting(params, backbone) is not None
    if ft.cache_trunk and not pretrained:
        raise ParamsError(f"params.yaml: 'models.{backbone}.finetune.cache_trunk: true' needs "
                          "a pretrained backbone (weights): without one the whole model trains")

    def build(train: Split, val: Split, meta: dict, hardware: Hardware) -> Built:
        model, card = load_model(head_path)
        card.pop("linear_head", None)  # the backbone trains: the features change
        note = "the whole model trains"
        if pretrained:
            note = f"{unfreeze_backbone(model, ft.unfreeze)} backbone layers trainable"
        fitted, branch = model, None
        if ft.cache_trunk:
            trunk, fitted = split_at_trunk(model)
            train, val = (backbone_features(trunk, split, ft.batch_size)
                          for split in (train, val))
            note += (f", on the frozen trunk's activations ({trunk.output_shape[-1]:,} per "
                     "image, computed once)")
        if card.get("clinical"):  # its clinical half trains on from train's
            encoding = ClinicalEncoding.from_card(card["clinical"])
            branch = ClinicalBranch.of(encoding, train, val)
            fitted = joined_model(fitted, len(encoding.names),
                                  card["clinical"]["coefficients"])
            note += f", with its clinical branch ({', '.join(encoding.inputs)})"
        compile_classifier(fitted, ft.lr)
        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=ft.patience,
                                          restore_best_weights=True, verbose=1),
            keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.5,
                                              patience=max(1, ft.patience // 2), verbose=1),
        ]
        return Built(model, card, train, val, fitted=fitted, callbacks=callbacks, note=note,
                     clinical=branch)

    run_phase(Phase("finetune", model_dir(backbone, fold) / "model.keras", ft,
                    inputs=(head_path,)), backbone, fold, params, build)


def main(backbone: str, fold: str | None = None) -> None:
    """Every fold of `backbone` (or just `fold`)."""
    params = stage_params("finetune", {"backbone": backbone})
    folds = fold_names(params, fold)
    if finetune_config(params, backbone).epochs == 0:
        for name in folds:
            keep_head(backbone, name)
        print(f"finetune@{backbone}: finetune.epochs is 0, the head model is the model "
              f"(folds {', '.join(folds)})", flush=True)
        return
    from stages.core.checkpoints import drop_backups

    for name in folds:
        fine_tune(backbone, name, params, head_file(backbone, name))
    drop_backups("finetune", backbone)


if __name__ == "__main__":
    run_stage("finetune", main, *parse_target(__doc__.splitlines()[0]))
