"""Saving and loading a trained classifier with its model card (model.json beside it)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.errors import MissingInputError, PipelineError
from stages.core.files import atomic_path, write_json

if TYPE_CHECKING:  # imported where used: reading a card needs no TensorFlow
    import keras

# What a .keras archive says about when it was written; fixed, so that identical weights give
# an identical file (and DVC sees an unchanged output, rerunning nothing downstream).
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FIXED_SAVE_DATE = "1980-01-01@00:00:00"


def _renumbered(node: Any, ids: dict[int, int]) -> Any:
    """config.json with each `shared_object_id` (Python's id() of the object: a memory address,
    new in every process) replaced by its order of first appearance; the sharing stays."""
    if isinstance(node, dict):
        return {k: (ids.setdefault(v, len(ids) + 1) if k == "shared_object_id" else
                    _renumbered(v, ids)) for k, v in node.items()}
    if isinstance(node, list):
        return [_renumbered(v, ids) for v in node]
    return node


def _without_save_time(archive: Path) -> None:
    """Rewrite a .keras zip with fixed entry times, metadata.json's date_saved fixed and
    config.json's object ids renumbered."""
    with zipfile.ZipFile(archive) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(archive, "w") as target:
        for info, data in entries:
            if info.filename == "metadata.json":
                data = json.dumps({**json.loads(data), "date_saved": FIXED_SAVE_DATE}).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumbered(json.loads(data), {})).encode()
            stable = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            stable.compress_type, stable.external_attr = info.compress_type, info.external_attr
            target.writestr(stable, data)


def write_model(model: keras.Model, path: Path, card: dict) -> None:
    """Save as .keras atomically and byte-stable (same weights, same bytes), with its model
    card beside it."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        _without_save_time(tmp)
    write_json(path.with_suffix(".json"), card)


def write_linear_model(network: Path, path: Path, kernel: np.ndarray, bias: np.ndarray,
                       card: dict) -> None:
    """`network` (a saved classifier whose only Dense layer is its softmax "probs" on the
    pooled features, as the features stage saves it) with that layer's kernel and bias
    replaced, saved as `path` with its card, without starting TensorFlow: the archive's
    weights file is edited (h5py), every other byte kept. For a logistic head on a frozen
    backbone that layer is all that training changes, and the result is an ordinary .keras
    model (tests/test_evaluate_linear.py loads it and checks its answers)."""
    import h5py

    with zipfile.ZipFile(network) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    layers = json.loads(dict((i.filename, d) for i, d in entries)["config.json"])
    dense = [layer["config"]["name"] for layer in layers["config"]["layers"]
             if layer["class_name"] == "Dense"]
    if dense != ["probs"]:
        raise PipelineError(f"{network}: a linear head is written into a network whose only "
                            f"Dense layer is 'probs'; this one has {dense}")
    with atomic_path(path, suffix=".keras") as tmp, zipfile.ZipFile(tmp, "w") as target:
        for info, data in entries:
            if info.filename == "model.weights.h5":
                buffer = io.BytesIO(data)
                with h5py.File(buffer, "r+") as weights:
                    # Keras names a top-level layer's weights by its class: the one Dense
                    for index, value in enumerate((kernel, bias)):
                        stored = weights[f"layers/dense/vars/{index}"]
                        if stored.shape != value.shape:
                            raise PipelineError(f"{network}: 'probs' weight {index} is "
                                                f"{stored.shape}, the head's {value.shape}")
                        stored[...] = np.asarray(value, stored.dtype)
                data = buffer.getvalue()
            target.writestr(info, data)
    write_json(path.with_suffix(".json"), card)


def read_card(path: Path) -> dict:
    """The model card beside a model file (model.keras → model.json)."""
    card = path.with_suffix(".json")
    if not card.exists():
        raise MissingInputError(f"{card} not found: run `dvc repro` (or `dvc pull`) first")
    return json.loads(card.read_text())


def load_model(path: Path) -> tuple[keras.Model, dict]:
    """(model, card), uncompiled: whoever trains it compiles it (finetune), and a
    frozen-feature model, whose optimizer never took a step, loads without Keras' warning
    that there are no optimizer variables to restore."""
    import keras

    from stages.core import layers  # noqa: F401 -- registers our custom layers for loading

    if not path.exists():
        raise MissingInputError(f"{path} not found: run `dvc repro` (or `dvc pull`) first")
    return keras.models.load_model(path, compile=False), read_card(path)


def load_members(paths: list[Path]) -> list[keras.Model]:
    """The models of a served card. Fold models of one frozen backbone with logistic heads
    differ only in that head (their cards' linear_head has the same feature_key: a hash of
    the backbone's weights), so each backbone is loaded once and every fold model is its
    head on it: 15 members of 3 backbones load as 3 models (and share their pass, and
    their feature key, in inference.member_outputs)."""
    models: list[keras.Model] = []
    loaded: dict[str, keras.Model] = {}
    for path in paths:
        linear = read_card(path).get("linear_head")
        key = linear["feature_key"] if linear else None
        if key in loaded:
            models.append(_with_linear_head(loaded[key], linear))
            continue
        models.append(load_model(path)[0])
        if key:
            loaded[key] = models[-1]
    return models


def _with_linear_head(model: keras.Model, linear: dict) -> keras.Model:
    """`model` up to its pooled features (the same layers, not copies), then a softmax layer
    with the card's weights: the fold model that card belongs to."""
    import keras
    import numpy as np

    from stages.core.layers import probs_layer

    pool = model.get_layer("pool").output
    probs = probs_layer(len(linear["bias"]))
    outputs = probs(pool)
    probs.set_weights([np.asarray(linear["kernel"], np.float32),
                       np.asarray(linear["bias"], np.float32)])
    return keras.Model(model.input, outputs, name=model.name)
