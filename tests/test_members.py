"""A served model's members: fold models of one frozen backbone load as that backbone once,
each with its own head, and answer as each loaded alone."""

from __future__ import annotations

import numpy as np

from stages.core.inference import as_predict, extractor_key, split_at_pool
from stages.core.linear_head import LinearHead, card_entry
from stages.core.model_io import load_members, load_model, write_model
from tests.tiny_models import spread_outputs, tiny_classifier, varied_images


def _fold_model(root, fold: int, seed: int = 0):
    """A logistic-head fold model as train writes it: its head's weights also in its card.
    The same seed builds the same (random) backbone weights: one frozen backbone."""
    model = tiny_classifier("lite0_frozen", 32, seed=seed)
    spread_outputs(model, seed=fold)  # another head per fold, the same backbone
    kernel, bias = model.get_layer("probs").get_weights()
    extractor, _ = split_at_pool(model)
    card = {"classes": ["benign", "malignant"], "image_size": 32,
            "linear_head": card_entry(LinearHead(kernel, bias, 1.0, np.zeros(1)),
                                      extractor_key(extractor))}
    path = root / f"{seed}-{fold}" / "model.keras"
    write_model(model, path, card)
    return path


def test_fold_models_of_one_backbone_share_it_and_answer_as_loaded_alone(tmp_path):
    paths = [_fold_model(tmp_path, fold) for fold in range(2)]
    paths.append(_fold_model(tmp_path, 0, seed=1))
    members = load_members(paths)
    backbones = [m.get_layer("backbone") for m in members]
    assert backbones[1] is backbones[0]
    assert backbones[2] is not backbones[0]
    images = varied_images(6, 32, seed=3)
    answers = []
    for member, path in zip(members, paths, strict=True):
        alone = as_predict(load_model(path)[0])(images)
        np.testing.assert_allclose(as_predict(member)(images), alone, atol=1e-6)
        answers.append(alone)
    assert np.abs(answers[1] - answers[0]).max() > 1e-2  # the heads do differ
