"""Grad-CAM on our nested-backbone classifiers, and its colour map."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from stages.core.gradcam import _class_score, _run, _split, colormap, gradcam
from stages.core.images import load_image
from tests.tiny_models import jpeg_bytes, lesion_photo, tiny_classifier


@pytest.mark.parametrize(("backbone", "weights"), [
    ("small_cnn", None),
    ("small_functional_cnn", None),
    ("efficientnet_lite0", None),
    ("efficientnet_lite0", "imagenet"),  # offline: the weights come with pip
])
def test_heatmap_for_every_default_arch(backbone, weights):
    size = 96 if backbone == "efficientnet_lite0" else 32  # Lite0: prepare.size default
    model = tiny_classifier(backbone, image_size=size, weights=weights)
    image = load_image(jpeg_bytes(lesion_photo(120)), size)
    # The two halves Grad-CAM runs are the whole model: same probabilities.
    features_part, head = _split(model)
    assert features_part[-1].name == "backbone" and head[-1].name == "probs"
    features = _run(features_part, tf.constant(image[None], tf.float32))
    halves = tf.nn.softmax(_class_score(head, features)).numpy()
    np.testing.assert_allclose(halves, model.predict(image[None].astype("float32"), verbose=0),
                               rtol=1e-4, atol=1e-5)
    maps = [gradcam(model, image, class_index) for class_index in (0, 1)]
    for cam in maps:
        assert cam.shape == (size, size) and cam.dtype == np.float32
        assert cam.min() >= 0.0 and cam.max() <= 1.0
    assert np.array_equal(gradcam(model, image), maps[int(np.argmax(halves))])  # default
    if (backbone, weights) != ("efficientnet_lite0", None):
        # Randomly initialised Lite0 has features of ~1e-12 (its init assumes ImageNet
        # weights), so its maps may be all zero; any other model must show a shape for one
        # class at least (a class's map is legitimately zero when nothing raises its score).
        assert max(cam.std() for cam in maps) > 0.01


def test_heatmap_finds_the_patch_a_trained_model_uses():
    """Class 1 = a bright square somewhere; after a little training the map peaks on it."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    size, n = 32, 256
    images = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % 2
    spots = rng.integers(2, size - 10, (n, 2))
    for img, label, (r, c) in zip(images, labels, spots, strict=True):
        if label:
            img[r:r + 8, c:c + 8] = 250
    model = tiny_classifier("small_cnn", image_size=size)
    model.compile(keras.optimizers.Adam(3e-3), "categorical_crossentropy")
    model.fit(images.astype("float32"), keras.utils.to_categorical(labels, 2), epochs=6,
              batch_size=32, verbose=0)
    hits = 0
    for img, (r, c) in zip(images[1:40:2], spots[1:40:2], strict=True):
        cam = gradcam(model, img, class_index=1)
        peak = np.unravel_index(np.argmax(cam), cam.shape)
        hits += (r - 4 <= peak[0] < r + 12) and (c - 4 <= peak[1] < c + 12)
    assert hits >= 16, f"heatmap peak on the bright patch in only {hits}/20 images"


def test_colormap_runs_blue_to_red():
    cold, mid, hot = colormap(np.array([0.0, 0.5, 1.0]))
    assert cold[2] > 100 and cold[0] == 0  # dark blue
    assert mid[1] == 255  # green in the middle
    assert hot[0] > 100 and hot[2] == 0  # dark red
