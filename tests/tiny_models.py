"""Tiny trained-looking models on disk for the predict, serve, Grad-CAM and export tests.

Random weights, but with the real classifier layout (scaling → "backbone" → head) and a model
card, written where `dvc repro` would put them: <root>/models/<b>/holdout/model.keras +
model.json and <root>/metrics/summary.json. No pipeline run needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from stages.core.classifier import build_classifier, model_card
from stages.core.model_io import write_model
from stages.core.ood import OodGuard
from stages.core.params import ModelConfig, load_params, model_config
from stages.core.shift import reference_profile

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["benign", "malignant"]


def _config(backbone: str, weights: str | None = None, views: int | None = None) -> ModelConfig:
    """models.<backbone> from params.yaml; random weights unless asked (efficientnet_lite0's
    ImageNet weights come with pip, the keras.applications ones would need the internet);
    `views` overrides head.views."""
    params = load_params(REPO / "params.yaml")
    params["models"][backbone]["weights"] = weights
    if views is not None:
        params["models"][backbone]["head"]["views"] = views
    return model_config(params, backbone)


def tiny_classifier(backbone: str, image_size: int = 32, n_classes: int = 2,
                    seed: int = 0, weights: str | None = None,
                    views: int | None = None) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_classifier(_config(backbone, weights, views), image_size, n_classes)
    spread_outputs(model, seed)
    return model


def varied_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 noise at a different brightness and contrast per image: inputs a pretrained
    network tells apart (plain uniform noise all looks alike to it)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-1, 1, (n, size, size, 3))
    level = rng.uniform(40, 215, (n, 1, 1, 3))
    contrast = rng.uniform(5, 40, (n, 1, 1, 1))
    return (level + contrast * noise).clip(0, 255).astype(np.uint8)


def spread_outputs(model: keras.Model, seed: int = 0) -> None:
    """Re-set the "probs" layer so varied images get logits of about ±1 around zero.

    A freshly initialised head answers ~0.5 for everything, and a random one saturates at 0
    or 1; either way comparing two implementations' probabilities would compare nothing.
    """
    probs = model.get_layer("probs")
    images = varied_images(16, model.input_shape[1], seed + 100)
    features = keras.Model(model.inputs, probs.input).predict(images, verbose=0)
    kernel = np.random.default_rng(seed).normal(0.0, 1.0, probs.kernel.shape)
    logits = features @ kernel
    kernel *= 1.0 / (logits.std(axis=0) + 1e-12)
    probs.kernel.assign(kernel.astype("float32"))
    probs.bias.assign(-(features @ kernel).mean(axis=0).astype("float32"))


def write_tiny_model(root: Path, backbone: str, image_size: int = 32,
                     classes: list[str] = CLASSES, weights: str | None = None,
                     preprocessing: dict | None = None) -> Path:
    model = tiny_classifier(backbone, image_size, len(classes), weights=weights)
    card = model_card(_config(backbone, weights), image_size, list(classes), preprocessing)
    path = root / "models" / backbone / "holdout" / "model.keras"
    write_model(model, path, card)
    return path


GUARD_SPEC = {"extractor": "lite0", "size": 32, "file": "models/guard/ood.npz",
              "percentile": 99.0, "reference_images": 1}  # 32 px: the real network, fast


def write_guard(root: Path, ood_threshold: float = 1e9) -> dict:
    """models/guard/ as the guard stage writes it: one reference image at a fixed direction
    in Lite0's feature space; the default threshold flags nothing (tests of the flag set
    their own)."""
    OodGuard(np.eye(1, 1280, dtype=np.float32), ood_threshold).save(root / GUARD_SPEC["file"])
    spec = {**GUARD_SPEC, "threshold": ood_threshold}
    (root / "models/guard/guard.json").write_text(json.dumps(spec))
    return spec


def write_served(root: Path, backbones: list[str], classes: list[str] = CLASSES,
                 image_size: int = 32, temperature: float = 1.0, threshold: float = 0.5,
                 ood_threshold: float = 1e9, preprocessing: dict | None = None,
                 class_bias: list[float] | None = None) -> Path:
    """models/served.json as compare writes it: these backbones' holdout models averaged."""
    guard = write_guard(root, ood_threshold)
    card = {"name": "+".join(backbones) + " (holdout)", "classes": classes,
            "members": [{"backbone": b, "fold": "holdout",
                         "model": f"models/{b}/holdout/model.keras"} for b in backbones],
            "calibration": {"method": "temperature", "temperature": temperature},
            "decision": {"refer_classes": [classes[-1]], "threshold": threshold,
                         "target_sensitivity": 0.85,
                         **({"class_bias": class_bias} if class_bias else {})},
            "estimate": {"how": "the 10 test images of fold holdout", "roc_auc": 0.8},
            "image_size": image_size, "preprocessing": preprocessing or {}, "ood": guard}
    if len(classes) == 2:  # compare's profile of the estimate's images (core/shift.py)
        q = np.linspace(0.05, 0.95, 60)
        card["shift_reference"] = reference_profile(np.column_stack([1 - q, q]), classes,
                                                    threshold)
    path = root / "models" / "served.json"
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def write_summary(root: Path, aucs: dict[str, float]) -> Path:
    """metrics/summary.json as compare writes it, best = highest AUC, served = best."""
    best = max(aucs, key=aucs.get)
    summary = {"best": best, "rank_by": "roc_auc",
               "scores": {b: {"roc_auc": auc, "accuracy": 0.5}
                          for b, auc in sorted(aucs.items(), key=lambda kv: -kv[1])},
               "served": {"name": f"{best} (holdout)", "members": 1,
                          "estimate": {"how": "the 10 test images of fold holdout",
                                       "roc_auc": aucs[best]}}}
    for b, auc in aucs.items():  # each fold model's own metrics, as evaluate writes them
        fold_metrics = root / "metrics" / "backbones" / b / "holdout.json"
        fold_metrics.parent.mkdir(parents=True, exist_ok=True)
        fold_metrics.write_text(json.dumps({"roc_auc": auc}))
    path = root / "metrics" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def jpeg_bytes(pixels: np.ndarray, **save_args) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90, **save_args)
    return buf.getvalue()


def lesion_photo(size: int = 200, seed: int = 0) -> np.ndarray:
    """A skin-coloured photo with a dark blob off-centre: something worth classifying."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    blob = ((yy - 0.4 * size) ** 2 + (xx - 0.6 * size) ** 2) < (0.18 * size) ** 2
    img = np.empty((size, size, 3), np.float32)
    img[:] = (220, 170, 140)
    img[blob] = (90, 50, 40)
    img += rng.normal(0, 8, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def dermoscope_photo(size: int = 120, seed: int = 0) -> np.ndarray:
    """lesion_photo as a dermoscope shows it: a bluish colour cast, and a black ring around
    the round field of view (what prepare.crop_border and prepare.color_constancy correct)."""
    yy, xx = np.mgrid[0:size, 0:size]
    field = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.47 * size) ** 2
    bluish = (lesion_photo(size, seed) * np.array([0.75, 0.9, 1.15])).clip(0, 255)
    return np.where(field[..., None], bluish, 4).astype(np.uint8)


def write_trained_repo(root: Path, aucs: dict[str, float], image_size: int = 32) -> Path:
    """A folder laid out like the repo after `dvc repro`: one tiny model per backbone in
    `aucs`, a summary ranking them by those AUCs, and the best one served."""
    for backbone in aucs:
        write_tiny_model(root, backbone, image_size=image_size)
    write_summary(root, aucs)
    write_served(root, [max(aucs, key=aucs.get)], image_size=image_size)
    return root
