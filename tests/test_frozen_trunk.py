"""finetune.cache_trunk (core/frozen_trunk.py): the top of a pretrained Lite backbone trains
on its trunk's activations computed once per image, and the saved model is the whole
network with only those layers changed."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from stages import finetune
from stages.core.classifier import build_classifier, unfreeze_backbone
from stages.core.errors import PipelineError
from stages.core.model_io import load_model
from stages.core.params import HeadConfig, ModelConfig, ParamsError
from stages.core.paths import PREPARED_DIR, head_file, model_dir, training_summary_file
from stages.core.shards import read_split
from tests.test_clinical_pipeline import clinical_project

LITE0_MS = ModelConfig("lite0_ms", "efficientnet_lite0_ms", "imagenet",
                       HeadConfig("avg", 1, (), (), False))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (6, 64, 64, 3)).astype(np.float32)


@pytest.mark.parametrize("unfreeze, trainable, cut", [
    # the top 1x1 conv: it reads stage 7's end; stages 5 and 6 go to the concatenation
    (5, ["top_conv"], ["block7a_project_bn", "stage5_pool", "block6d_add"]),
    # stage 7's block and the top conv: the cut moves down to what block 7a reads
    (14, ["block7a_expand_conv", "block7a_dwconv", "block7a_project_conv", "top_conv"],
     ["block6d_add", "stage5_pool"]),
])
def test_trunk_then_top_is_the_model_and_only_the_unfrozen_layers_train(
        images, unfreeze, trainable, cut):
    from stages.core.frozen_trunk import frontier, split_at_trunk

    model = build_classifier(LITE0_MS, 64, 3)
    unfreeze_backbone(model, unfreeze)
    assert [t._keras_history.operation.name for t in frontier(model.get_layer("backbone"))
            ] == cut
    trunk, top = split_at_trunk(model)
    assert np.array_equal(np.asarray(top(trunk(images))), np.asarray(model(images)))
    assert [w.path.split("/")[0] for w in top.trainable_weights] == [*trainable, "probs",
                                                                     "probs"]
    before = [w.numpy().copy() for w in model.weights]
    top.compile("adam", "sparse_categorical_crossentropy")
    top.fit(np.asarray(trunk(images)), np.array([0, 1, 2, 0, 1, 2]), epochs=2, verbose=0)
    changed = {w.path.split("/")[0] for w, b in zip(model.weights, before, strict=True)
               if not np.array_equal(w.numpy(), b)}
    assert changed == {*trainable, "probs"}  # training the top trained the model's layers
    assert np.allclose(np.asarray(top(trunk(images))), np.asarray(model(images)), atol=1e-6)


def test_a_model_without_trainable_backbone_layers_or_with_views_is_refused():
    from stages.core.frozen_trunk import split_at_trunk

    model = build_classifier(LITE0_MS, 64, 3)
    unfreeze_backbone(model, 1)  # the concatenation alone: no weights
    with pytest.raises(PipelineError, match="no layer of the backbone trains"):
        split_at_trunk(model)
    views = build_classifier(replace(LITE0_MS, head=HeadConfig("avg", 2, (), (), False)), 64, 3)
    unfreeze_backbone(views, 5)
    with pytest.raises(PipelineError, match="head.views: 1"):
        split_at_trunk(views)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A frozen multi-scale Lite0 with a logistic head and clinical inputs, then 3 epochs of
    its top conv on cached activations."""
    return clinical_project(tmp_path_factory.mktemp("frozen-trunk"), "lite0_ms_frozen", {
        "lite0_ms_frozen": {"train": {"fit_on": "train"},
                            "finetune": {"epochs": 3, "lr": 1.0e-3, "batch_size": 16,
                                         "unfreeze": 5, "cache_trunk": True,
                                         "patience": 5}}})


def test_finetune_on_the_cached_trunk_changes_the_top_conv_and_the_clinical_half(
        project, monkeypatch):
    monkeypatch.chdir(project)
    head, head_card = load_model(head_file("lite0_ms_frozen", "holdout"))
    model, card = load_model(model_dir("lite0_ms_frozen", "holdout") / "model.keras")
    changed = {a.path.split("/")[0] for a, b in zip(head.weights, model.weights, strict=True)
               if not np.array_equal(a.numpy(), b.numpy())}
    assert changed == {"top_conv", "probs"}
    assert "linear_head" in head_card and "linear_head" not in card  # its features changed
    assert card["clinical"]["columns"] == head_card["clinical"]["columns"]
    assert card["clinical"]["coefficients"] != head_card["clinical"]["coefficients"]
    summary = json.loads(training_summary_file("lite0_ms_frozen", "finetune", "holdout")
                         .read_text())
    assert summary["step"] == 2  # three epochs, DVCLive counting from 0
    test = read_split(PREPARED_DIR, "test")
    probs = np.asarray(model(test.images[:4].astype(np.float32)))
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


def test_a_cached_trunk_without_pretrained_weights_is_refused(project, monkeypatch):
    monkeypatch.chdir(project)
    params = {"seed": 0, "folds": ["holdout"], "compute": {}, "models": {"m": {
        "weights": None, "finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 8, "unfreeze": 4,
                                      "patience": 1, "online_augment": "none",
                                      "cache_trunk": True, "class_weight": "none"}}}}
    with pytest.raises(ParamsError, match="cache_trunk: true' needs a pretrained backbone"):
        finetune.fine_tune("m", "holdout", params, head_file("m", "holdout"))


def test_a_rerun_with_the_trunk_cache_emptied_trains_the_same_weights(project, monkeypatch):
    monkeypatch.chdir(project)
    path = model_dir("lite0_ms_frozen", "holdout") / "model.keras"
    first, _ = load_model(path)
    shutil.rmtree(".cache/features")
    finetune.main("lite0_ms_frozen")
    again, _ = load_model(path)
    assert all(np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(first.weights, again.weights, strict=True))
