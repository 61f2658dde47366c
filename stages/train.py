"""Stage train@<backbone>: phase 1 of transfer learning → models/heads/<b>/<fold>/head.keras.

A pretrained backbone is frozen and only the new head learns, so large early gradients from
a random head cannot wreck the ImageNet features; a backbone without pretrained weights
trains whole. With `train.solver: logistic` the linear head is instead a regularised
logistic regression on the frozen features that the features stage computed
(core/linear_head.py), fitted and written without starting TensorFlow. With
`clinical.inputs`, either kind learns the clinical data with the images and keeps that half in
the model's card (core/clinical.py, core/clinical_branch.py). One process trains
every fold (`folds`): no param or input of this stage differs between folds, so an edit
reruns all of them anyway, and one start-up per backbone is cheaper than one per fold.
Curves go to metrics/plots/<b>/train/<fold>/ and final figures to
metrics/training/<b>/train/<fold>.json (DVCLive). An interrupted gradient run resumes from
its last completed epoch (core/checkpoints.py).
"""

from __future__ import annotations

import numpy as np

from stages.core.cli import parse_target, run_stage
from stages.core.clinical import ClinicalEncoding, clinical_inputs, with_dropout_copies
from stages.core.frozen_features import NETWORK, fold_features, read_info
from stages.core.linear_head import C_GRID, card_entry, fit_linear_head
from stages.core.model_io import read_card, write_linear_model
from stages.core.params import (
    fit_config,
    fold_names,
    logistic_config,
    stage_params,
    train_solver,
)
from stages.core.paths import PREPARED_DIR, features_dir, head_file
from stages.core.shards import clinical_table, concat, read_meta
from stages.core.training_log import write_curve
from stages.core.worklog import work


def train_logistic(backbone: str, fold: str, params: dict) -> None:
    """The head as a logistic regression on the fold's frozen features, written into the
    features stage's network: no TensorFlow."""
    logistic = logistic_config(params, backbone, fold)
    inputs = clinical_inputs(params)
    info = read_info(backbone)
    train, val, train_only = fold_features(backbone, fold, list(read_meta(PREPARED_DIR)["counts"]))
    fit_set = concat([train, val]) if logistic.with_validation else train
    if logistic.with_validation:
        train_only = np.concatenate([train_only, np.zeros(len(val.ids), bool)])
    rows = (fit_set.images, fit_set.labels, fit_set.ids, train_only)
    if inputs:
        table = clinical_table(fit_set.ids)
        encoding = ClinicalEncoding.fit(inputs, table)
        rows = with_dropout_copies(rows[0], encoding.encode(table), *rows[1:])
    with work("head fit"):
        head = fit_linear_head(*rows[:3], len(info["classes"]), logistic.class_weight, rows[3])
    # The image features' rows are the model's softmax layer; the clinical rows (if any) go
    # to the card (core/clinical.py).
    width = fit_set.images.shape[1]
    clinical_kernel, head = head.kernel[width:], head._replace(kernel=head.kernel[:width])
    network = features_dir(backbone) / NETWORK
    # The model is this softmax on the extractor's features: evaluate computes it from the
    # features stage's arrays without starting TensorFlow.
    card = {**read_card(network), "linear_head": card_entry(head, info["feature_key"])}
    if inputs:
        card["clinical"] = encoding.card(clinical_kernel)
    if logistic.with_validation:
        card["fitted_on_validation"] = True  # compare will not calibrate on them
    write_linear_model(network, head_file(backbone, fold), head.kernel, head.bias, card)
    # Its training curve: inner-CV log-loss along the C grid (step k: C_GRID[k]), to 4
    # decimals: at the weakest regularisation lbfgs stops at its tolerance, where another
    # CPU's last bits move the loss in the third decimal.
    curve = [{"inner_cv_log_loss": round(float(loss), 4),
              "log10_C": round(float(np.log10(grid_c)), 4)}
             for loss, grid_c in zip(head.inner_log_loss, C_GRID, strict=True)]
    write_curve(backbone, "train", fold, curve, {
        "logistic_C": head.c, "log10_C": round(float(np.log10(head.c)), 4),
        "inner_cv_log_loss": round(float(head.inner_log_loss.min()), 4)})
    print(f"train@{backbone} fold {fold}: logistic regression on {len(fit_set.labels)} feature "
          f"vectors{f' + clinical {list(inputs)} (and again without)' if inputs else ''}"
          f"{' (training + validation)' if logistic.with_validation else ''}, class weights "
          f"{logistic.class_weight or 'none'}, C={head.c:.3g}", flush=True)


def train_network(backbone: str, fold: str, params: dict) -> None:
    """The head (and a backbone without pretrained weights) by gradient epochs."""
    from stages.core.classifier import build_classifier, compile_classifier, model_card
    from stages.core.clinical_branch import ClinicalBranch, joined_model
    from stages.core.fold_data import backbone_features
    from stages.core.hardware import Hardware
    from stages.core.inference import split_at_pool
    from stages.core.params import model_config
    from stages.core.phase import Built, Phase, run_phase
    from stages.core.shards import Split

    cfg = model_config(params, backbone)
    fit = fit_config(params, f"models.{backbone}.train")
    inputs = clinical_inputs(params)

    def build(train: Split, val: Split, meta: dict, hardware: Hardware) -> Built:
        model = build_classifier(cfg, meta["image_size"], len(meta["classes"]))
        fitted = model
        if cfg.weights is not None:
            # A frozen backbone turns each image into the same features in every epoch
            # (augment varied the images once, offline), so compute them once and fit the
            # head on them: the same training for one backbone pass instead of `epochs`.
            extractor, fitted = split_at_pool(model)
            train, val = (backbone_features(extractor, split, fit.batch_size)
                          for split in (train, val))
        branch = None
        if inputs:
            encoding = ClinicalEncoding.fit(inputs, clinical_table(train.ids))
            branch = ClinicalBranch.of(encoding, train, val)
            fitted = joined_model(fitted, len(encoding.names))
        compile_classifier(fitted, fit.lr)
        trainable = sum(int(w.shape.num_elements() or 0) for w in fitted.trainable_weights)
        card = model_card(cfg, meta["image_size"], meta["classes"], meta.get("preprocessing"))
        return Built(model, card, train, val, fitted=fitted, clinical=branch,
                     note=f"{cfg.arch}, weights={cfg.weights}, {trainable:,} trainable "
                          f"parameters, {fit.epochs} epochs"
                          f"{f', clinical {list(inputs)}' if inputs else ''}")

    run_phase(Phase("train", head_file(backbone, fold), fit), backbone, fold, params, build)


def main(backbone: str, fold: str | None = None) -> None:
    """Every fold of `backbone` (or just `fold`)."""
    params = stage_params("train", {"backbone": backbone})
    if train_solver(params, backbone) == "logistic":
        for name in fold_names(params, fold):
            train_logistic(backbone, name, params)
        return
    from stages.core.checkpoints import drop_backups

    for name in fold_names(params, fold):
        train_network(backbone, name, params)
    drop_backups("train", backbone)


if __name__ == "__main__":
    run_stage("train", main, *parse_target(__doc__.splitlines()[0]))
