"""finetune.online_augment: dihedral — each epoch shows each image in a random one of its 8
flips/rotations, drawn from (seed, epoch, image), so a resumed run sees what an uninterrupted
one would have (core/fold_data.epoch_batches)."""

import numpy as np

from stages.core.fold_data import epoch_batches, random_symmetry
from stages.core.layers import DIHEDRAL, dihedral
from stages.core.shards import Split
from stages.core.tta import TRANSFORMS
from tests.conftest import random_images

N = 24


def _split() -> Split:
    # Label i for image i: a batch's one-hot labels say which image each row shows.
    return Split(random_images(N, 6, seed=3), np.arange(N), np.array([str(i) for i in range(N)]))


def _epochs(split: Split, augment: str, first_epoch: int = 0, epochs: int = 3, seed: int = 5,
            ) -> list[list[tuple[int, np.ndarray]]]:
    """Per epoch, (image index, image shown) in the order the batches gave them."""
    batches, steps = epoch_batches(split, N, 8, seed, first_epoch, epochs, augment)
    shown = [(int(label.argmax()), image.astype(np.uint8))
             for images, labels in batches.as_numpy_iterator()
             for image, label in zip(images, labels, strict=True)]
    return [shown[e * N:(e + 1) * N] for e in range(epochs - first_epoch)]


def _symmetry(original: np.ndarray, shown: np.ndarray) -> str:
    matches = [name for name, turn in TRANSFORMS.items()
               if np.array_equal(turn(original[None])[0], shown)]
    assert len(matches) == 1, "not exactly one symmetry of the original"
    return matches[0]


def test_each_image_is_shown_once_per_epoch_as_one_of_its_symmetries():
    split = _split()
    drawn = []
    for epoch in _epochs(split, "dihedral"):
        assert sorted(index for index, _ in epoch) == list(range(N))
        drawn += [_symmetry(split.images[index], image) for index, image in epoch]
    # 72 draws of 8 equally likely views: every view appears, and not mostly the original.
    assert set(drawn) == set(TRANSFORMS)
    assert drawn.count("identity") < len(drawn) / 4


def test_views_change_between_epochs_and_repeat_for_the_same_seed():
    split = _split()
    first, again = _epochs(split, "dihedral"), _epochs(split, "dihedral")
    assert all(np.array_equal(a[1], b[1]) for e, f in zip(first, again, strict=True)
               for a, b in zip(e, f, strict=True))
    views = [{index: _symmetry(split.images[index], image) for index, image in epoch}
             for epoch in first]
    assert sum(views[0][i] != views[1][i] for i in range(N)) > N // 2


def test_a_resumed_run_sees_the_views_of_an_uninterrupted_one():
    split = _split()
    whole, resumed = _epochs(split, "dihedral"), _epochs(split, "dihedral", first_epoch=1)
    for e, f in zip(whole[1:], resumed, strict=True):
        assert [i for i, _ in e] == [i for i, _ in f]
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(e, f, strict=True))


def test_none_shows_the_images_as_stored():
    split = _split()
    for epoch in _epochs(split, "none"):
        assert all(np.array_equal(split.images[index], image) for index, image in epoch)


def test_draw_k_shows_symmetry_k_of_the_one_table():
    import tensorflow as tf

    image = random_images(1, 6, seed=1)[0]
    drawn = set()
    for s in range(40):
        seed = tf.constant([s, 7], tf.int64)
        k = int(tf.random.stateless_uniform([], seed, 0, len(DIHEDRAL), dtype=tf.int32))
        drawn.add(k)
        expected = np.asarray(dihedral(image[None], *DIHEDRAL[k])[0])
        assert np.array_equal(np.asarray(random_symmetry(tf.constant(image), seed)), expected)
    assert drawn == set(range(len(DIHEDRAL)))


def test_seed_zero_trains_too():
    """params `seed: 0` makes TensorFlow's global seed 0, where a tensor-seeded shuffle fails to
    trace; the epochs' order must not depend on it."""
    import keras

    keras.utils.set_random_seed(0)
    epochs = _epochs(_split(), "none", seed=0)
    assert all(sorted(i for i, _ in epoch) == list(range(N)) for epoch in epochs)
    assert [i for i, _ in epochs[0]] != [i for i, _ in epochs[1]]
