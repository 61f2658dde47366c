"""Multi-view models (head.views): the features are the mean over flips/rotations, inside the
model, so the answer does not depend on how the photo was turned."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from stages.core.gradcam import gradcam
from stages.core.images import load_image
from stages.core.inference import split_at_pool
from stages.core.model_io import load_model, write_model
from stages.core.tta import TRANSFORMS
from tests.tiny_models import jpeg_bytes, lesion_photo, tiny_classifier, varied_images

SIZE = 32


def _pair(views: int) -> tuple[keras.Model, keras.Model]:
    """The same weights with one view and with `views`."""
    single = tiny_classifier("small_cnn", SIZE, 3, views=1)
    multi = tiny_classifier("small_cnn", SIZE, 3, views=views)
    multi.set_weights(single.get_weights())
    return single, multi


def test_eight_views_answer_alike_for_every_flip_and_rotation():
    _, model = _pair(8)
    images = varied_images(4, SIZE, seed=1).astype("float32")
    reference = model.predict(images, verbose=0)
    for name, transform in TRANSFORMS.items():
        turned = np.ascontiguousarray(transform(images))
        np.testing.assert_allclose(model.predict(turned, verbose=0), reference, atol=1e-5,
                                   err_msg=name)


def test_one_view_model_is_not_invariant():  # so the test above can fail
    single, _ = _pair(8)
    images = varied_images(4, SIZE, seed=1).astype("float32")
    turned = np.ascontiguousarray(TRANSFORMS["rot90"](images))
    assert not np.allclose(single.predict(turned, verbose=0), single.predict(images, verbose=0),
                           atol=1e-3)


@pytest.mark.parametrize("views", [2, 4, 8])
def test_features_are_the_mean_of_the_views_features(views):
    single, multi = _pair(views)
    images = varied_images(5, SIZE, seed=2).astype("float32")
    extract_one, _ = split_at_pool(single)
    extract_many, head = split_at_pool(multi)
    order = list(TRANSFORMS)[:views]  # DihedralViews' order (tta builds it from DIHEDRAL)
    expected = np.mean([extract_one.predict(np.ascontiguousarray(TRANSFORMS[n](images)),
                                            verbose=0) for n in order], axis=0)
    features = extract_many.predict(images, verbose=0)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(head.predict(features, verbose=0),
                               multi.predict(images, verbose=0), atol=1e-6)


def test_saved_and_loaded_multi_view_model_answers_the_same(tmp_path):
    _, model = _pair(8)
    images = varied_images(3, SIZE, seed=4).astype("float32")
    write_model(model, tmp_path / "model.keras", {"classes": ["a", "b", "c"]})
    loaded, _ = load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)


def test_heatmap_of_a_turned_photo_is_the_turned_heatmap():
    _, model = _pair(8)
    image = load_image(jpeg_bytes(lesion_photo(120)), SIZE)
    # (a class's map is legitimately blank when nothing raises its score: take one that is not)
    cams = [gradcam(model, image, k) for k in range(3)]
    k = int(np.argmax([cam.std() for cam in cams]))
    assert cams[k].std() > 0.01
    for name in ("rot90", "flip_lr", "transpose"):
        turned = np.ascontiguousarray(TRANSFORMS[name](image[None])[0])
        np.testing.assert_allclose(gradcam(model, turned, k),
                                   TRANSFORMS[name](cams[k][None])[0], atol=1e-4, err_msg=name)
