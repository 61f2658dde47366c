"""Features computed once per image and extractor, reused across folds and stages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from stages.core import inference as inference_module
from stages.core.feature_cache import cached_features, image_keys, part_features
from stages.core.inference import extractor_key, inference, predict_batches, split_at_pool
from stages.core.shards import read_labels, shard_paths, write_split
from tests.tiny_models import tiny_classifier, varied_images


def test_a_hit_is_what_a_recomputation_gives_and_computes_nothing(tmp_path, monkeypatch):
    extractor, _ = split_at_pool(tiny_classifier("small_cnn", 32))
    images = varied_images(10, 32, seed=1)
    direct = predict_batches(inference(extractor), images, 4)
    first = cached_features(extractor, images[:6], cache_dir=tmp_path)
    np.testing.assert_array_equal(first, direct[:6])
    # Overlapping sets, in another order, with a repeat: only the 4 new images are computed.
    computed = []
    real = inference_module.predict_batches
    monkeypatch.setattr(inference_module, "predict_batches",
                        lambda infer, x, b, what: computed.append(len(x)) or real(infer, x, b))
    order = [9, 0, 3, 7, 3, 6, 8, 1]
    np.testing.assert_allclose(cached_features(extractor, images[order], cache_dir=tmp_path),
                               direct[order], atol=1e-6)
    assert computed == [4]
    np.testing.assert_allclose(cached_features(extractor, images, cache_dir=tmp_path), direct,
                               atol=1e-6)
    assert computed == [4]


def test_other_weights_or_views_are_another_extractor():
    base, _ = split_at_pool(tiny_classifier("small_cnn", 32, seed=0))
    same, _ = split_at_pool(tiny_classifier("small_cnn", 32, seed=0))
    other, _ = split_at_pool(tiny_classifier("small_cnn", 32, seed=1))
    views, _ = split_at_pool(tiny_classifier("small_cnn", 32, seed=0, views=8))
    assert extractor_key(base) == extractor_key(same)
    assert extractor_key(other) != extractor_key(base)
    assert extractor_key(views) != extractor_key(base)
    for layer in same.layers:  # freezing does not change what it computes
        layer.trainable = False
    assert extractor_key(same) == extractor_key(base)


def test_chunks_added_since_are_read_and_an_emptied_cache_is_computed_again(tmp_path,
                                                                            monkeypatch):
    extractor, _ = split_at_pool(tiny_classifier("small_cnn", 32))
    images = varied_images(6, 32, seed=2)
    direct = predict_batches(inference(extractor), images, 4)
    cached_features(extractor, images[:3], cache_dir=tmp_path)
    folder = tmp_path / extractor_key(extractor)
    # another process adds a chunk: read, not computed (marked +1 to tell it apart)
    np.savez(folder / "chunk-other.npz", keys=image_keys(images[3:]), features=direct[3:] + 1)
    computed = []
    real = inference_module.predict_batches
    monkeypatch.setattr(inference_module, "predict_batches",
                        lambda infer, x, b, what: computed.append(len(x)) or real(infer, x, b))
    np.testing.assert_allclose(cached_features(extractor, images[3:], cache_dir=tmp_path),
                               direct[3:] + 1, atol=1e-6)
    assert computed == []
    shutil.rmtree(folder)
    np.testing.assert_allclose(cached_features(extractor, images, cache_dir=tmp_path), direct,
                               atol=1e-6)
    assert computed == [6]


def test_a_part_of_several_shards_gives_its_images_features_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cache's own folder, .cache/features, in here
    extractor, _ = split_at_pool(tiny_classifier("small_cnn", 32))
    images = varied_images(7, 32, seed=3)
    write_split(Path("shards"), "fold0",
                [(image, k % 2, f"img{k}") for k, image in enumerate(images)], shard_size=3)
    assert len(shard_paths(Path("shards"), "fold0")) == 3
    part = part_features(extractor, Path("shards"), ["fold0"], batch_size=4)
    np.testing.assert_allclose(part.images, predict_batches(inference(extractor), images, 4),
                               atol=1e-6)
    assert part.labels.tolist() == [k % 2 for k in range(7)]
    assert part.ids.tolist() == [f"img{k}" for k in range(7)]
    np.testing.assert_array_equal(read_labels(Path("shards"), "fold0"), part.labels)
