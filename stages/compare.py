"""Stage compare: every backbone's test metrics → a leaderboard, and the model to serve.

With cross-validation each backbone has one metrics file per fold; the leaderboard shows the
mean over folds and the spread (`<metric>_std`), so `dvc metrics diff` compares CV means. An
ensemble (mean of the listed backbones' probabilities, fold by fold) is scored like any
model. The served model (core/served.py: by default the ensemble of the best backbone's fold
models, or of compare.ensemble's) goes to models/served.json with its calibration, referral
threshold and its own estimate with intervals; metrics/summary.json holds the leaderboard
and that estimate, metrics/leaderboard.md both for people, and the reliability diagram's
data goes to metrics/plots/served/.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd

from stages.core.calibration import decision_statement
from stages.core.cli import run_stage
from stages.core.clinical import clinical_inputs
from stages.core.errors import MissingInputError, PipelineError
from stages.core.files import write_json
from stages.core.metrics import classification_metrics, curve_points
from stages.core.model_card import decided_by, render
from stages.core.params import choice, get, number, stage_params
from stages.core.paths import (
    CALIBRATION_PLOT,
    GUARD_CARD,
    GUARD_METRICS,
    LEADERBOARD_FILE,
    MODEL_CARD,
    PREPARED_DIR,
    RAW_DIR,
    ROC_OVERLAY_PLOT,
    SERVED_CARD,
    SERVED_SUBGROUPS,
    SPLIT_METRICS,
    SUMMARY_FILE,
    metrics_file,
)
from stages.core.served import (
    Predictions,
    Rule,
    build_served,
    member_mean,
    pooled_predictions,
)
from stages.core.shards import read_meta, read_split_table
from stages.core.shift import reference_profile
from stages.core.subgroups import subgroup_metrics
from stages.core.worklog import work

ENSEMBLE = "ensemble"
SERVED = "served"
COLUMNS = ("roc_auc", "balanced_accuracy", "average_precision", "sensitivity", "specificity",
           "f1", "accuracy")


def read_fold_scores(backbone: str, folds: list) -> list[dict]:
    paths = [metrics_file(backbone, fold) for fold in folds]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise MissingInputError(f"{', '.join(missing)} missing; run `dvc repro`")
    return [json.loads(p.read_text()) for p in paths]


def ensemble_scores(members: list[str], folds: list, truth: pd.Series) -> list[dict]:
    """Score the mean of the members' test probabilities, one fold at a time."""
    scores = []
    for fold in folds:
        mean, y = member_mean(members, str(fold), "test", truth)
        scores.append(classification_metrics(y, mean.to_numpy(), list(mean.columns)))
    return scores


def candidate_sets(setting: list[str] | str, backbones: list[str]) -> list[list[str]]:
    """The member sets compare chooses the served model from (core/served.py): each
    backbone alone ([]), the one listed set, or every non-empty subset of `backbones`
    ("auto"; smaller sets first, so a tie keeps the smaller)."""
    if setting == "auto":
        return [list(s) for k in range(1, len(backbones) + 1)
                for s in itertools.combinations(backbones, k)]
    if not setting:
        return [[b] for b in backbones]
    unknown = sorted(set(setting) - set(backbones)) if isinstance(setting, list) else setting
    if unknown or len(setting) < 2:
        raise PipelineError("params.yaml: 'compare.ensemble' is auto, [] or two or more names "
                            f"from `backbones`; got {setting}")
    return [list(setting)]


def summarize(per_fold: list[dict]) -> dict:
    """Mean of each metric over folds, plus its standard deviation when there are several."""
    row: dict = {"folds": len(per_fold)}
    for column in COLUMNS:
        values = [s[column] for s in per_fold if s.get(column) is not None]
        row[column] = round(float(np.mean(values)), 6) if values else None
        if len(per_fold) > 1:
            row[f"{column}_std"] = round(float(np.std(values)), 6) if values else None
    return row


def leaderboard(rows: dict[str, dict], rank_by: str) -> list[tuple[str, dict]]:
    # A missing score (e.g. AUC with one class in test) ranks last rather than crashing.
    return sorted(rows.items(), key=lambda kv: -1 if kv[1][rank_by] is None else kv[1][rank_by],
                  reverse=True)


def markdown(ranked: list[tuple[str, dict]]) -> str:
    spread = any(f"{COLUMNS[0]}_std" in row for _, row in ranked)
    lines = ["| rank | model | folds | " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * (len(COLUMNS) + 3)]
    for rank, (name, row) in enumerate(ranked, 1):
        cells = []
        for c in COLUMNS:
            value, std = row[c], row.get(f"{c}_std")
            cells.append("–" if value is None else
                         f"{value:.3f} ± {std:.3f}" if spread and std is not None else
                         f"{value:.3f}")
        lines.append(f"| {rank} | {name} | {row['folds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def roc_overlay(backbones: list[str], folds: list, truth: pd.Series, served: Predictions,
                classes: list[str]) -> list[dict]:
    """Each backbone's ROC on all its test predictions (pooled over folds) and the served
    model's (its estimate's images), as rows for the one-chart overlay."""
    rows = []
    curves = {name: pooled_predictions([name], [str(f) for f in folds], "test", truth)
              for name in backbones} | {SERVED: served}
    for name, scored in curves.items():
        rows += [{"series": name, "point": i, "fpr": p["fpr"], "tpr": p["tpr"]}
                 for i, p in enumerate(curve_points(scored.labels, scored.probs, classes)["roc"])]
    return rows


def served_markdown(card: dict) -> str:
    est, ref, cal = card["estimate"], card["estimate"]["referral"], card["estimate"]["calibration"]

    def interval(scores: dict, key: str) -> str:
        low, high = scores.get(f"{key}_ci_low"), scores.get(f"{key}_ci_high")
        return f"{scores[key]:.3f}" + (f" (95 % CI {low:.3f}–{high:.3f})" if low is not None
                                       else "")

    return "\n".join([
        f"\n## Served model: {card['name']}\n",
        f"Estimate from {est['how']}.\n",
        f"- ROC AUC {interval(est, 'roc_auc')}; balanced accuracy "
        f"{interval(est, 'balanced_accuracy')} ({decided_by(card)})",
        *(["- one vs rest: " + ", ".join(
            f"{k.removeprefix('roc_auc_').replace('_', ' ')} AUC {interval(est, k)}"
            for k in est if k.startswith("roc_auc_") and not k.endswith(("_low", "_high")))]
          if len(card["classes"]) > 2 else []),
        f"- malignant vs the rest (P({' + '.join(card['decision']['refer_classes'])})): ROC AUC "
        f"{ref['roc_auc']:.3f}, partial AUC above 80 % sensitivity "
        f"{ref['pauc_above_80_tpr']:.3f} (of 0.2)",
        f"- referral threshold {card['decision']['threshold']:.4f} on P("
        f"{' + '.join(card['decision']['refer_classes'])}): {decision_statement(card)}; "
        f"estimated sensitivity {interval(ref, 'sensitivity')}",
        *([f"- predicted class: argmax(log p + b), per-class biases b for balanced accuracy "
           f"{card['decision']['class_bias']} (the probabilities stay calibrated): balanced "
           f"accuracy {gain['with_bias']:.3f} "
           f"against {gain['without_bias']:.3f} by the plain arg-max, paired gain "
           f"{interval(gain, 'gain')} (biases cross-fitted)"]
          if (gain := est.get("class_bias_gain")) else []),
        f"- calibration (temperature {card['calibration']['temperature']:.3f}): Brier "
        f"{cal['brier_before']:.3f} → {cal['brier_after']:.3f}, ECE {cal['ece_before']:.3f} → "
        f"{cal['ece_after']:.3f}",
        *([f"- **lockbox**: {box['how']}: ROC AUC {interval(box, 'roc_auc')}, balanced "
           f"accuracy {interval(box, 'balanced_accuracy')}; at the referral threshold "
           f"sensitivity {interval(box['referral'], 'sensitivity')}, specificity "
           f"{interval(box['referral'], 'specificity')}"]
          if (box := card.get("lockbox")) else []),
    ]) + "\n"


def data_description(params: dict) -> dict[str, str]:
    """Where the images came from, in words, and their attribution (for the model card)."""
    source = get(params, "data.source")
    if source == "synthetic":
        where = (f"{get(params, 'data.synthetic.count')} synthetic images from this "
                 "project's generator (stages/core/sources/synthetic.py)")
    elif source == "local":
        where = f"the local folder {get(params, 'data.local.path')}"
    else:
        where = f"the ISIC Archive, search {get(params, 'data.isic.search')!r}"
    extra = get(params, "data.extra_train") or []
    if extra:
        where += f", with {', '.join(extra)} as training-only images (never scored)"
    attribution = RAW_DIR / "attribution.txt"
    lines = attribution.read_text().splitlines()[:3] if attribution.exists() else []
    return {"source": where, "attribution": " ".join(lines)}


def referral_rule(params: dict) -> Rule:
    confidence = get(params, "compare.sensitivity_confidence")
    balance = choice(params, "compare.class_decision", ("argmax", "balanced")) == "balanced"
    if confidence is None:
        return Rule(number(params, "compare.target_sensitivity", 0.01, 1.0),
                    balance_classes=balance)
    return Rule(number(params, "compare.target_sensitivity", 0.01, 0.999),
                number(params, "compare.sensitivity_confidence", 0.5, 0.999), balance)


def main() -> None:
    params = stage_params("compare")
    rank_by = choice(params, "compare.rank_by", COLUMNS)
    backbones, folds = get(params, "backbones"), get(params, "folds")
    split_table = read_split_table()
    truth = split_table["label"]
    rows = {name: summarize(read_fold_scores(name, folds)) for name in backbones}
    setting = get(params, "compare.ensemble") or []
    candidates = candidate_sets(setting, backbones)
    resamples = number(params, "evaluate.bootstrap", 0, 100_000, integer=True)
    with work("served model"):
        card, result = build_served(
            candidates, folds, str(get(params, "compare.serve")), truth,
            referral_rule(params), resamples,
            get(params, "seed"), rank_by)
    served = list(dict.fromkeys(m["backbone"] for m in card["members"]))
    if len(served) > 1:  # the served backbones' ensemble on the leaderboard, fold by fold
        rows[ENSEMBLE] = summarize(ensemble_scores(served, folds, truth))
    ranked = leaderboard(rows, rank_by)
    best = next(name for name, _ in ranked if name != ENSEMBLE)
    meta = read_meta(PREPARED_DIR)
    if clinical_inputs(params):  # the members also take these, where a photo has them
        card["clinical_inputs"] = list(clinical_inputs(params))
    card |= {"image_size": meta["image_size"], "preprocessing": meta.get("preprocessing", {}),
             "ood": {**json.loads(GUARD_CARD.read_text()),
                     "measured": json.loads(GUARD_METRICS.read_text())},
             # what predict compares a batch with (core/shift.py): the estimate's images
             "shift_reference": reference_profile(result.scored.probs, card["classes"],
                                                  card["decision"]["threshold"])}
    write_json(SERVED_CARD, card)
    write_json(CALIBRATION_PLOT, {"reliability": result.reliability})
    write_json(ROC_OVERLAY_PLOT, {"roc": roc_overlay(backbones, folds, truth, result.scored,
                                                     card["classes"])})
    scored = result.scored
    subgroups = subgroup_metrics(split_table.loc[scored.ids, ["sex", "age", "site"]],
                                 scored.labels, scored.probs, card["classes"], resamples,
                                 get(params, "seed"), result.predicted)
    write_json(SERVED_SUBGROUPS, subgroups)
    MODEL_CARD.write_text(render(card, json.loads(SPLIT_METRICS.read_text()), subgroups,
                                 data_description(params)))
    summary = {
        "best": best,
        "rank_by": rank_by,
        "ensemble": setting,
        "scores": dict(ranked),  # keyed by model, so `dvc metrics show/diff` can flatten it
        "served": {"name": card["name"], "members": len(card["members"]),
                   "estimate": card["estimate"], "decision": card["decision"],
                   "calibration": card["calibration"],
                   **({"lockbox": card["lockbox"]} if "lockbox" in card else {})},
    }
    write_json(SUMMARY_FILE, summary)
    LEADERBOARD_FILE.write_text(markdown(ranked) + served_markdown(card))
    print(LEADERBOARD_FILE.read_text() + f"\nbest single backbone by {rank_by}: {best}")


if __name__ == "__main__":
    run_stage("compare", main)
