"""Test-time augmentation: the eight symmetries of the square, averaged."""

import numpy as np
import pytest

from stages.core.tta import TRANSFORMS, tta_predict
from tests.conftest import random_images
from tests.tiny_models import tiny_classifier


def test_the_eight_transforms_are_the_distinct_symmetries_of_the_square():
    batch = random_images(2, 8)
    outs = {name: t(batch) for name, t in TRANSFORMS.items()}
    assert len(outs) == 8
    assert all(o.shape == batch.shape for o in outs.values())
    flat = {o.tobytes() for o in outs.values()}
    assert len(flat) == 8  # all different on a random image
    # Each transform maps a corner to a corner: the four corners of a square, twice each.
    corners = sorted(tuple(o[0, 0, 0]) for o in outs.values())
    want = sorted(2 * [tuple(batch[0, r, c]) for r in (0, -1) for c in (0, -1)])
    assert corners == want


def test_each_transform_is_the_symmetry_its_name_says():
    batch = random_images(2, 8)
    by_numpy = {
        "identity": batch,
        "rot90": np.rot90(batch, 1, axes=(1, 2)),
        "rot180": np.rot90(batch, 2, axes=(1, 2)),
        "rot270": np.rot90(batch, 3, axes=(1, 2)),
        "flip_lr": batch[:, :, ::-1],
        "flip_ud": batch[:, ::-1],
        "transpose": np.swapaxes(batch, 1, 2),
        "transverse": np.rot90(np.swapaxes(batch, 1, 2), 2, axes=(1, 2)),
    }
    assert set(TRANSFORMS) == set(by_numpy)
    for name, transform in TRANSFORMS.items():
        np.testing.assert_array_equal(transform(batch), by_numpy[name], err_msg=name)


def test_probabilities_are_the_mean_over_transforms():
    def top_left_red(x: np.ndarray) -> np.ndarray:
        # A "model" that looks at one pixel only: TTA must average over the four corners.
        p = x[:, 0, 0, 0] / 255.0
        return np.stack([p, 1 - p], axis=1)

    batch = random_images(3, 6, seed=1)
    got = tta_predict(top_left_red, batch)
    corners = batch[:, [0, 0, -1, -1], [0, -1, 0, -1], 0].astype(np.float64) / 255.0
    np.testing.assert_allclose(got[:, 0], corners.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    only_identity = tta_predict(top_left_red, batch, transforms=("identity",))
    np.testing.assert_allclose(only_identity, top_left_red(batch.astype(np.float32)))


def test_a_keras_model_works_directly_and_in_small_batches():
    model = tiny_classifier("small_cnn", image_size=16)
    batch = random_images(5, 16, seed=2)
    got = tta_predict(model, batch, batch_size=2)  # chunks of 2 → same answer as one batch
    want = np.mean([model.predict(np.ascontiguousarray(t(batch.astype(np.float32))), verbose=0)
                    for t in TRANSFORMS.values()], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_non_square_images_are_refused():
    with pytest.raises(ValueError, match="square"):
        tta_predict(lambda x: x[:, 0, 0, :2], np.zeros((1, 4, 6, 3), np.uint8))
