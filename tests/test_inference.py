"""Several members in one graph: fold models that share a frozen backbone share its pass."""

from __future__ import annotations

import keras
import numpy as np

from stages.core.inference import member_outputs, probs_and_features
from tests.tiny_models import spread_outputs, tiny_classifier, varied_images


def _members() -> list[keras.Model]:
    """Two heads on one backbone (as the fold models of a frozen backbone are), and a third
    model with a backbone of its own."""
    first = tiny_classifier("small_cnn", 32, 3, seed=0)
    second = tiny_classifier("small_cnn", 32, 3, seed=0)
    spread_outputs(second, seed=7)  # another head
    other = tiny_classifier("small_cnn", 32, 3, seed=1)
    return [first, second, other]


def test_members_sharing_a_backbone_share_its_pass_and_answer_as_alone():
    members = _members()
    image = keras.Input((32, 32, 3))
    graph = keras.Model(image, [p for p, _ in member_outputs(members, image)])
    backbones = [layer for layer in graph.layers if layer.name.endswith("_features")]
    assert len(backbones) == 2
    images = varied_images(6, 32, seed=2).astype("float32")
    results = probs_and_features(members, batch_size=4)(images)
    for model, (probs, features) in zip(members, results, strict=True):
        np.testing.assert_allclose(probs, model.predict(images, verbose=0), atol=1e-6)
        assert features.shape == (6, model.get_layer("pool").output.shape[-1])
    assert not np.allclose(results[0][0], results[1][0], atol=1e-3)  # two heads, two answers
