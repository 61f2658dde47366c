"""Saving and loading a trained classifier with its model card (model.json beside it)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core.errors import MissingInputError
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
