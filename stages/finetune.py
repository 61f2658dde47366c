"""Stage finetune@<backbone>-<fold>: phase 2 → models/<backbone>/<fold>/model.keras.

Unfreezes the top `unfreeze` layers of a pretrained backbone (or all) and trains on at a lower
learning rate; EarlyStopping on validation AUC keeps the best epoch's weights, and
ReduceLROnPlateau halves the rate when validation stalls. An interrupted run resumes from its
last completed epoch, these callbacks' counters included (core/checkpoints.py).
"""

from __future__ import annotations

import keras

from stages.core.classifier import compile_classifier, unfreeze_backbone
from stages.core.cli import parse_target, run_stage
from stages.core.hardware import Hardware
from stages.core.model_io import load_model
from stages.core.params import finetune_config, stage_params, weights_setting
from stages.core.paths import model_dir
from stages.core.phase import Built, Phase, run_phase
from stages.core.shards import Split


def main(backbone: str, fold: str) -> None:
    params = stage_params("finetune", {"backbone": backbone, "fold": fold})
    ft = finetune_config(params, backbone)
    pretrained = weights_setting(params, backbone) is not None
    head_path = model_dir(backbone, fold) / "head.keras"

    def build(train: Split, val: Split, meta: dict, hardware: Hardware) -> Built:
        model, card = load_model(head_path)
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

    run_phase(Phase("finetune", "model.keras", ft, inputs=(head_path,),
                    reads_images=ft.epochs > 0), backbone, fold, params, build)


if __name__ == "__main__":
    run_stage("finetune", main, *parse_target(__doc__.splitlines()[0]))
