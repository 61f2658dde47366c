"""Materialised augmentation: class balance, seeding, that images really change, and the
order training reads the originals and their copies in."""

import numpy as np

from stages.augment import augmented_copies, augmenter, target_counts
from stages.core.shards import Split, with_copies
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
    items = list(augmented_copies(images, labels, ids, targets, lambda: model,
                                  np.random.default_rng(seed)))
    return images, items


def test_minority_is_filled_up_with_augmented_copies(params):
    images, items = _run(params, seed=0)
    assert [label for _, label, _ in items] == [1] * 6  # 3 originals + 6 copies = 9 = class 0
    for img, _, item_id in items:
        assert "_aug" in item_id
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

    items = list(augmented_copies(images, labels, ids, target_counts(labels, 1, balance=False),
                                  no_model, np.random.default_rng(0)))
    assert items == []


def test_training_order_is_each_class_originals_then_its_copies():
    labels = np.array([1, 0, 1, 0, 0])
    originals = Split(np.arange(5)[:, None], labels, np.array([f"im{i}" for i in range(5)]))
    copies = Split(np.array([[10], [11], [12]]), np.array([0, 1, 1]),
                   np.array(["im1_aug0", "im0_aug0", "im2_aug1"]))
    both = with_copies(originals, copies)
    assert list(both.ids) == ["im1", "im3", "im4", "im1_aug0", "im0", "im2", "im0_aug0",
                              "im2_aug1"]
    assert list(both.images[:, 0]) == [1, 3, 4, 10, 0, 2, 11, 12]
    assert list(both.labels) == [0, 0, 0, 0, 1, 1, 1, 1]
    none = Split(np.zeros((0, 1), int), np.zeros(0, np.int32), np.zeros(0, str))
    assert list(with_copies(originals, none).ids) == ["im1", "im3", "im4", "im0", "im2"]
