"""Stage train@<backbone>-<fold>: phase 1 of transfer learning → models/<b>/<fold>/head.keras.

A pretrained backbone is frozen and only the new head learns, so large early gradients from
a random head cannot wreck the ImageNet features; a backbone without pretrained weights
trains whole. With `train.solver: logistic` the linear head is instead a regularised
logistic regression on the frozen features (core/linear_head.py). Curves go to
metrics/training/<b>/<fold>/train (DVCLive). An interrupted run resumes from its last
completed epoch (core/checkpoints.py).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stages.core.classifier import build_classifier, compile_classifier, model_card
from stages.core.cli import parse_target, run_stage
from stages.core.clinical import (
    ClinicalEncoding,
    clinical_inputs,
    with_dropout_copies,
)
from stages.core.fold_data import backbone_features, cache_scored_features, train_only_rows
from stages.core.hardware import Hardware
from stages.core.inference import extractor_key, split_at_pool
from stages.core.linear_head import C_GRID, card_entry, fit_linear_head
from stages.core.params import (
    ParamsError,
    fit_config,
    logistic_config,
    model_config,
    stage_params,
    train_solver,
)
from stages.core.phase import Built, Phase, run_phase
from stages.core.shards import Split, clinical_table, concat
from stages.core.worklog import work


def main(backbone: str, fold: str) -> None:
    params = stage_params("train", {"backbone": backbone, "fold": fold})
    cfg = model_config(params, backbone)
    fit = fit_config(params, f"models.{backbone}.train")
    solver = train_solver(params, backbone)
    inputs = clinical_inputs(params)
    if inputs and solver != "logistic":
        raise ParamsError(f"params.yaml: clinical.inputs {list(inputs)} are fitted with "
                          f"logistic heads only; models.{backbone}.train.solver is {solver} "
                          "(a dense clinical branch for fine-tuned models is not built yet)")

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
        compile_classifier(fitted, fit.lr)
        trainable = sum(int(w.shape.num_elements() or 0) for w in fitted.trainable_weights)
        note, summary, curve = f"{fit.epochs} epochs", {}, []
        if solver == "logistic":
            logistic = logistic_config(params, backbone, fold)
            fit_set = concat([train, val]) if logistic.with_validation else train
            rows = (fit_set.images, fit_set.labels, fit_set.ids, train_only_rows(fit_set))
            if inputs:
                encoding = ClinicalEncoding.fit(inputs, clinical_table(fit_set.ids))
                rows = with_dropout_copies(rows[0], encoding.encode(clinical_table(rows[2])),
                                           *rows[1:])
            with work("head fit"):
                head = fit_linear_head(rows[0], rows[1], rows[2], len(meta["classes"]),
                                       logistic.class_weight, rows[3])
            # The image features' rows are the model's softmax layer; the clinical rows
            # (if any) go to the card (core/clinical.py).
            width = fit_set.images.shape[1]
            clinical_kernel, head = head.kernel[width:], head._replace(
                kernel=head.kernel[:width])
            model.get_layer("probs").set_weights([head.kernel, head.bias])
            c = head.c
            # Its training curve: inner-CV log-loss along the C grid (step k: C_GRID[k]), to
            # 4 decimals: at the weakest regularisation lbfgs stops at its tolerance, where
            # another CPU's last bits move the loss in the third decimal.
            curve = [{"inner_cv_log_loss": round(float(loss), 4),
                      "log10_C": round(float(np.log10(grid_c)), 4)}
                     for loss, grid_c in zip(head.inner_log_loss, C_GRID, strict=True)]
            note = (f"logistic regression on {len(fit_set.labels)} feature vectors"
                    f"{f' + clinical {list(inputs)} (and again without)' if inputs else ''}"
                    f"{' (training + validation)' if logistic.with_validation else ''}, "
                    f"class weights {logistic.class_weight or 'none'}, C={c:.3g}")
            summary = {"logistic_C": c, "log10_C": round(float(np.log10(c)), 4),
                       "inner_cv_log_loss": round(float(head.inner_log_loss.min()), 4)}
        card = model_card(cfg, meta["image_size"], meta["classes"], meta.get("preprocessing"))
        if solver == "logistic":
            # The model is this softmax on the extractor's features: evaluate computes it
            # from the features cache without starting TensorFlow.
            card["linear_head"] = card_entry(head, extractor_key(extractor))
            if inputs:
                card["clinical"] = encoding.card(clinical_kernel)
            cache_scored_features(extractor, fold, fit.batch_size)
            if logistic.with_validation:
                card["fitted_on_validation"] = True  # compare will not calibrate on them
        return Built(model, card,
                     train, val, fitted=fitted,
                     note=f"{cfg.arch}, weights={cfg.weights}, {trainable:,} trainable "
                          f"parameters, {note}", summary=summary, curve=curve)

    # The logistic head is fitted in build; no gradient epochs follow.
    epochs = fit.epochs if solver == "adam" else 0
    run_phase(Phase("train", "head.keras", replace(fit, epochs=epochs)), backbone, fold,
              params, build)


if __name__ == "__main__":
    run_stage("train", main, *parse_target(__doc__.splitlines()[0]))
