"""Stage features@<backbone>: a frozen backbone's pooled features of every image →
data/processed/features/<backbone>/ (core/frozen_features.py).

A model whose head is a logistic regression on frozen features (`train.solver: logistic`)
needs its backbone to run once per image, whichever fold the image trains, validates or
tests: this stage is that one pass, for all folds. Its train and evaluate stages then fit
and score the head without starting TensorFlow, and write each fold's model into a copy of
the network saved here. The features go through .cache/features (core/feature_cache.py),
so a rerun whose extractor is unchanged (another split, other folds) computes only images it
has not seen. For any other model the stage writes why it has nothing to do.
"""

from __future__ import annotations

import shutil

from stages.core.cli import parse_target, run_stage
from stages.core.files import write_json
from stages.core.frozen_features import AUGMENTED, INFO, NETWORK, PREPARED, write_part
from stages.core.params import model_config, number, stage_params, train_solver
from stages.core.paths import AUGMENTED_DIR, PREPARED_DIR, features_dir
from stages.core.shards import Split, read_meta


def main(backbone: str) -> None:
    params = stage_params("features", {"backbone": backbone})
    out = features_dir(backbone)
    shutil.rmtree(out, ignore_errors=True)
    # train_solver validates too: a logistic head needs pretrained weights
    if train_solver(params, backbone) != "logistic":
        write_json(out / INFO, {"feature_key": None, "none": (
            f"models.{backbone}.train.solver is not logistic: train runs the network")})
        print(f"features@{backbone}: no frozen features (train.solver is not logistic)")
        return
    import numpy as np

    from stages.core.classifier import build_classifier, model_card
    from stages.core.feature_cache import part_features
    from stages.core.hardware import set_up
    from stages.core.inference import extractor_key, split_at_pool
    from stages.core.model_io import write_model

    cfg = model_config(params, backbone)
    batch_size = number(params, f"models.{backbone}.train.batch_size", 1, 4096, integer=True)
    hardware = set_up(params)  # the precision policy decides the features too
    meta = read_meta(PREPARED_DIR)
    with hardware.strategy.scope():
        model = build_classifier(cfg, meta["image_size"], len(meta["classes"]))
    probs = model.get_layer("probs")
    probs.set_weights([np.zeros_like(w) for w in probs.get_weights()])  # train fills it in
    extractor, _ = split_at_pool(model)
    for source, data_dir in ((PREPARED, PREPARED_DIR), (AUGMENTED, AUGMENTED_DIR)):
        for part, count in read_meta(data_dir)["counts"].items():
            features = (part_features(extractor, data_dir, [part], batch_size) if count else
                        Split(np.zeros((0, extractor.output_shape[-1]), np.float32),
                              np.zeros(0, np.int32), np.zeros(0, str)))
            write_part(backbone, source, part, features)
    card = model_card(cfg, meta["image_size"], meta["classes"], meta.get("preprocessing"))
    write_model(model, out / NETWORK, card)
    key = extractor_key(extractor)
    write_json(out / INFO, {"feature_key": key, "width": int(extractor.output_shape[-1]),
                            "classes": meta["classes"]})
    print(f"features@{backbone}: {cfg.arch} features ({extractor.output_shape[-1]} wide, "
          f"key {key}) of every prepared image and augmented copy; {hardware.describe()}")


if __name__ == "__main__":
    run_stage("features", main, parse_target(__doc__.splitlines()[0])[0])
