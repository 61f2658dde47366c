"""Stage train@<backbone>: phase 1 of transfer learning → models/<backbone>/head.keras.

A pretrained backbone is frozen and only the new head learns, so large early gradients from
a random head cannot wreck the ImageNet features; a backbone without pretrained weights
trains whole. Curves go to metrics/training/<backbone>/train (DVCLive).
"""

from __future__ import annotations

from stages.core.classifier import build_classifier, compile_classifier, model_card, write_model
from stages.core.errors import run_stage
from stages.core.params import get, load_params, model_config
from stages.core.paths import model_dir, parse_target, training_log_dir
from stages.core.training import fit_logged, seed_everything, training_data


def main(backbone: str, fold: str) -> None:
    params = load_params()
    cfg = model_config(params, backbone)
    seed_everything(get(params, "seed"))
    train, val, meta = training_data(cfg.train.batch_size, get(params, "seed"), fold)
    classes = meta["classes"]
    model = build_classifier(cfg, meta["image_size"], len(classes))
    compile_classifier(model, cfg.train.lr, len(classes))
    trainable = sum(int(w.shape.num_elements() or 0) for w in model.trainable_weights)
    print(f"train@{backbone}-{fold}: {cfg.arch}, weights={cfg.weights}, {trainable:,} trainable "
          f"parameters, {cfg.train.epochs} epochs", flush=True)
    fit_logged(model, train, val, cfg.train.epochs, training_log_dir(backbone, fold, "train"))
    write_model(model, model_dir(backbone, fold) / "head.keras",
                model_card(cfg, meta["image_size"], classes))


if __name__ == "__main__":
    run_stage("train", main, *parse_target(__doc__.splitlines()[0]))
