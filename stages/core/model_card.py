"""MODEL_CARD.md: the served model's card for people (a reviewer, a clinician, a journal),
rendered from the machine-readable one (models/served.json) and never written by hand.

Its sections follow Mitchell et al. 2019, "Model Cards for Model Reporting" (FAT* '19):
model details, intended use, factors, metrics, evaluation data, training data, quantitative
analyses, ethical considerations, caveats and recommendations.
"""

from __future__ import annotations

from typing import Any

from stages.core.calibration import decision_statement

INTENDED_USE = (
    "A research tool for ML engineers and researchers in dermatology imaging: to compare "
    "classifiers of dermoscopic images of skin lesions and study their behaviour. Its output "
    "is a set of calibrated class probabilities and a referral flag for a dermoscopic photo.")
OUT_OF_SCOPE = (
    "Diagnosis, triage or any clinical decision about a patient; it is not a medical device "
    "and was not validated prospectively. Clinical (non-dermoscopic) photos, other body "
    "imaging, and populations or devices unlike the training data: the out-of-distribution "
    "guard catches photos unlike any lesion, not subtle shifts between clinics.")
CAVEATS = [
    "The estimate comes from the development images' own source; on images from another "
    "clinic, device or population the sensitivity at the threshold can be lower or the "
    "specificity much lower. Check it on labelled images from where the model is used.",
    "Subgroups with few images (see the table) have wide intervals or none.",
]
SOURCE_CAVEATS = {  # said when the data source names it
    "synthetic": "These are synthetic images: the figures check that the pipeline learns and "
                 "say nothing about real lesions.",
    "isic2017": "ISIC 2017's images here are 256 px copies resized without keeping the aspect "
                "ratio, so fine detail is lost.",
}


def _ci(scores: dict, key: str) -> str:
    low, high = scores.get(f"{key}_ci_low"), scores.get(f"{key}_ci_high")
    value = scores.get(key)
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" (95 % CI {low:.3f}–{high:.3f})" if low is not None else "")


def decided_by(card: dict) -> str:
    """How the served card predicts the class, in a few words."""
    return "with the class biases" if card.get("decision", {}).get("class_bias") else "arg-max"


def _scores_table(scores: dict, decided_by: str) -> list[str]:
    refer = scores.get("referral", {})
    rows = [("ROC AUC (several classes: macro one vs rest)", _ci(scores, "roc_auc")),
            (f"balanced accuracy ({decided_by})", _ci(scores, "balanced_accuracy")),
            ("sensitivity at the referral threshold", _ci(refer, "sensitivity")),
            ("specificity at the referral threshold", _ci(refer, "specificity"))]
    return ["| metric | value |", "|---|---|", *[f"| {name} | {value} |" for name, value in rows]]


def _guarantee_lines(decision: dict) -> list[str]:
    if not decision.get("confidence"):
        return []
    return [
        "", "The guarantee is a finite-sample bound (training-conditional conformal, "
        "stages/core/calibration.py): it holds for new images exchangeable with the "
        "validation ones, from the same source, and only then. With cross-validation it is "
        "computed on each fold model's scores of the images it did not train on, while the "
        "served model averages the fold models: close to those scores, not the same. A new "
        "clinic, device or population breaks the assumption: adapt the threshold there "
        "(`python -m stages.app.adapt`) and heed predict's batch shift warning."]


def _guard_lines(ood: dict | None) -> list[str]:
    if not ood:
        return ["This card has no out-of-distribution guard."]
    measured = ood.get("measured", {})
    lines = [f"A photo whose pooled ImageNet EfficientNet-{ood['extractor'].title()} features "
             f"({ood['size']} px; the same for every model) lie farther from the "
             f"{ood['reference_images']} development images than {ood['percentile']:g} % of "
             "held-out lesions' do (mean distance to the 5 nearest) is flagged, and gets no "
             "class, no referral decision and no heatmap."]
    if "held_out_flagged" in measured:
        lines[0] += (f" Measured: {measured['held_out_flagged']:.1%} of held-out lesions "
                     f"flagged ({measured['how']})")
        if "lockbox_flagged" in measured:
            lines[0] += f", {measured['lockbox_flagged']:.1%} of the lockbox's"
        lines[0] += (f"; {measured['not_lesions_flagged']} of {len(measured['not_lesions'])} "
                     f"photos that are not lesions ({', '.join(measured['not_lesions'])}).")
    return lines


def _subgroup_rows(subgroups: dict) -> list[str]:
    rows = []
    for factor, groups in subgroups.items():
        for group, scores in groups.items():
            if isinstance(scores, dict):
                rows.append(f"| {factor} | {group} | {scores.get('n_images', '—')} | "
                            f"{_ci(scores, 'roc_auc')} |")
    if not rows:
        return ["No subgroup has enough images with sex, age or site recorded."]
    return ["| factor | group | images | ROC AUC |", "|---|---|---|---|", *rows]


def render(card: dict[str, Any], split_counts: dict[str, dict[str, int]],
           subgroups: dict, data: dict[str, str]) -> str:
    """The markdown card. `split_counts`: images per class and split (metrics/split.json);
    `data`: what the data are ({"source": ..., "attribution": ...})."""
    estimate, decision = card["estimate"], card["decision"]
    refer = estimate.get("referral", {})
    calibration = estimate.get("calibration", {})
    members = sorted({m["backbone"] for m in card["members"]})
    counts = ["| split | " + " | ".join(card["classes"]) + " |",
              "|---|" + "---|" * len(card["classes"]),
              *[f"| {split} | " + " | ".join(str(n.get(c, 0)) for c in card["classes"]) + " |"
                for split, n in split_counts.items()]]
    lockbox = card.get("lockbox")
    lines = [
        f"# Model card: {card['name']}",
        "",
        "Generated by the pipeline's `compare` stage from `models/served.json`; do not edit.",
        "",
        "## Model details",
        f"- Classes: {', '.join(card['classes'])}; input {card.get('image_size')} px RGB, "
        f"preprocessing {card.get('preprocessing')}.",
        f"- Members: {len(card['members'])} model(s) of {', '.join(members)}, probabilities "
        "averaged, then temperature-scaled (T = "
        f"{card['calibration']['temperature']})"
        + (f". The predicted class is argmax(log p + b), per-class biases b = "
           f"{card['decision']['class_bias']} for balanced accuracy; the probabilities stay "
           f"calibrated (balanced accuracy {gain['with_bias']:.3f} against "
           f"{gain['without_bias']:.3f} by the arg-max, biases cross-fitted)."
           if (gain := estimate.get("class_bias_gain")) else "."),
        *([f"- Clinical inputs: {', '.join(card['clinical_inputs'])}, where a photo comes "
           "with them: fitted together with the image features and again without them "
           "(a photo with none is answered from the image alone). The figures below use "
           "the evaluation images' own clinical data; the exported graph (models/export) "
           "uses none."] if card.get("clinical_inputs") else []),
        "",
        "## Intended use", INTENDED_USE, "",
        "## Out-of-scope use", OUT_OF_SCOPE, "",
        "## Training data",
        f"Source: {data.get('source', 'unknown')}. Images per split and class:", "",
        *counts, "",
        f"Licence and attribution: {data.get('attribution') or 'see data/raw/attribution.txt'}",
        "",
        "## Evaluation data and how the estimate was made",
        f"{estimate['how'][:1].upper()}{estimate['how'][1:]}.", "",
        "## Metrics", *_scores_table(estimate, decided_by(card)), "",
        "## Decision",
        f"Refer when P({' + '.join(decision['refer_classes'])}) ≥ {decision['threshold']}: "
        f"{decision_statement(card)}. On the evaluation images above (thresholds "
        f"chosen without them) it flagged {refer.get('sensitivity', float('nan')):.1%} of the "
        f"malignant ones and passed {refer.get('specificity', float('nan')):.1%} of the "
        "others.", *_guarantee_lines(decision), "",
        "## Calibration",
        f"Brier score {calibration.get('brier_before')} → {calibration.get('brier_after')}, "
        f"expected calibration error {calibration.get('ece_before')} → "
        f"{calibration.get('ece_after')} (before → after temperature scaling).", "",
        "## Out-of-distribution guard", *_guard_lines(card.get("ood")), "",
        "## Quantitative analyses: subgroups", *_subgroup_rows(subgroups), "",
    ]
    if lockbox:
        lines += ["## Lockbox", f"{lockbox['how'][:1].upper()}{lockbox['how'][1:]}.", "",
                  *_scores_table(lockbox, decided_by(card)), ""]
    lines += ["## Ethical considerations",
              "Skin lesion data sets over-represent light skin; performance on darker skin "
              "types is unknown here. A missed melanoma costs far more than an unneeded "
              "referral, which is why the decision targets sensitivity.", "",
              "## Caveats and recommendations", *[f"- {c}" for c in CAVEATS],
              *[f"- {c}" for key, c in SOURCE_CAVEATS.items() if key in data.get("source", "")],
              ""]
    return "\n".join(lines)
