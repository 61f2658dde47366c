"""Saving and loading a trained classifier with its model card (model.json beside it)."""

from __future__ import annotations

import json
from pathlib import Path

import keras

from stages.core import layers  # noqa: F401 -- registers our custom layers for loading
from stages.core.errors import MissingInputError
from stages.core.files import atomic_path, write_json


def write_model(model: keras.Model, path: Path, card: dict) -> None:
    """Save as .keras atomically, with its model card beside it."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    write_json(path.with_suffix(".json"), card)


def read_card(path: Path) -> dict:
    """The model card beside a model file (model.keras → model.json)."""
    card = path.with_suffix(".json")
    if not card.exists():
        raise MissingInputError(f"{card} not found: run `dvc repro` (or `dvc pull`) first")
    return json.loads(card.read_text())


def load_model(path: Path) -> tuple[keras.Model, dict]:
    if not path.exists():
        raise MissingInputError(f"{path} not found: run `dvc repro` (or `dvc pull`) first")
    return keras.models.load_model(path), read_card(path)
