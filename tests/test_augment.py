"""Materialised augmentation: class balance, seeding, and that images really change."""

import numpy as np

from stages.augment import augmented_items, augmenter, target_counts
from tests.conftest import random_images


def test_target_counts_balance_to_the_largest_class():
    labels = np.array([0] * 30 + [1] * 10)
    assert target_counts(labels, copies=2, balance=True) == {0: 60, 1: 60}
    assert target_counts(labels, copies=2, balance=False) == {0: 60, 1: 20}


def _run(params, seed):
    images = random_images(12, 24, seed=3)
    labels = np.array([0] * 9 + [1] * 3)
    ids = np.array([f"im{i}" for i in range(12)])
    targets = target_counts(labels, 1, balance=True)
    model = augmenter(params, seed)
    items = list(augmented_items(images, labels, ids, targets, lambda: model,
                                 np.random.default_rng(seed)))
    return images, items


def test_minority_is_oversampled_with_augmented_copies(params):
    images, items = _run(params, seed=0)
    out_labels = np.array([label for _, label, _ in items])
    assert (out_labels == 0).sum() == 9 and (out_labels == 1).sum() == 9
    originals = {item_id: img for img, _, item_id in items if "_aug" not in item_id}
    assert np.array_equal(originals["im9"], images[9])  # originals kept as they are
    extras = [(img, item_id) for img, _, item_id in items if "_aug" in item_id]
    assert len(extras) == 6
    for img, item_id in extras:
        assert img.dtype == np.uint8 and img.shape == (24, 24, 3)
        source = images[int(item_id.split("_aug")[0][2:])]
        assert not np.array_equal(img, source), "an augmented copy must differ from its source"


def test_same_seed_same_images(params):
    _, first = _run(params, seed=5)
    _, again = _run(params, seed=5)
    _, other = _run(params, seed=6)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_copies_without_balance_keep_the_originals_and_draw_nothing():
    images = random_images(6, 8, seed=1)
    labels = np.array([0] * 4 + [1] * 2)
    ids = np.array([f"im{i}" for i in range(6)])

    def no_model():
        raise AssertionError("nothing to draw: the augmenter (and TensorFlow) is not needed")

    items = list(augmented_items(images, labels, ids, target_counts(labels, 1, balance=False),
                                 no_model, np.random.default_rng(0)))
    assert [item_id for _, _, item_id in items] == list(ids)
