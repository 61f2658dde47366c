"""Clinical data as model input: age, sex and anatomical site, wherever the source has them
(`clinical.inputs` in params.yaml): for the logistic heads on frozen features, below, and for
gradient-trained models (core/clinical_branch.py), in the same form.

A photo often comes with none of them (the web page, the ISIC 2017 test set), so the
encoding is zero for what is unknown, and nothing known at all is the zero vector:

    age   known (0/1), (age - 50) / 20 where known
    sex   male, female (one-hot; both 0 when unknown)
    site  one column per site the training images had (the list is in the model card)

train fits the head on [image features | encoded clinical data] together, one regularised
logistic regression, and sees every training image twice: with its clinical data and with
none (metadata dropout), so the image half alone is a model for photos without any. The
image half is the Keras model's softmax layer; the clinical half (a matrix, in the card
under "clinical") adds `encode(...) @ coefficients` to its logits:
softmax(log p_image + clinical logits) is exactly the joint model's answer, for any mix of
known and unknown fields. evaluate, predict and the web app apply it per fold model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stages.core.params import ParamsError, get
from stages.core.softmax import softmax

INPUTS = ("age", "sex", "site")
SEXES = ("male", "female")


def clinical_inputs(params: dict) -> tuple[str, ...]:
    """The validated `clinical.inputs` (a subset of age, sex, site; [] for none)."""
    inputs = get(params, "clinical.inputs") or []
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown or len(set(inputs)) != len(inputs):
        raise ParamsError(f"params.yaml: clinical.inputs {inputs}: each of "
                          f"{', '.join(INPUTS)} at most once")
    return tuple(i for i in INPUTS if i in inputs)


@dataclass(frozen=True)
class ClinicalEncoding:
    inputs: tuple[str, ...]
    sites: tuple[str, ...] = ()

    @classmethod
    def fit(cls, inputs: tuple[str, ...], table: pd.DataFrame) -> ClinicalEncoding:
        """The encoding for `inputs`, its site list from the training table's sites."""
        sites = sorted(set(_column(table, "site")) - {""}) if "site" in inputs else []
        return cls(tuple(inputs), tuple(sites))

    @classmethod
    def from_card(cls, entry: dict) -> ClinicalEncoding:
        """The encoding a model card's "clinical" entry was made with."""
        return cls(tuple(entry["inputs"]), tuple(entry["sites"]))

    @property
    def names(self) -> list[str]:
        """One name per encoded column, in order."""
        return ((["age_known", "age"] if "age" in self.inputs else [])
                + ([f"sex={s}" for s in SEXES] if "sex" in self.inputs else [])
                + [f"site={s}" for s in self.sites])

    def encode(self, table: pd.DataFrame) -> np.ndarray:
        """float32 (n, len(names)) for a table with any of sex, age_years, site ("" or a
        missing column: unknown)."""
        parts = []
        if "age" in self.inputs:
            age = pd.to_numeric(_column(table, "age_years"), errors="coerce").to_numpy()
            known = ~np.isnan(age)
            parts += [known, np.where(known, (age - 50.0) / 20.0, 0.0)]
        if "sex" in self.inputs:
            sex = _column(table, "sex")
            parts += [sex == s for s in SEXES]
        site = _column(table, "site")
        parts += [site == s for s in self.sites]
        if not parts:
            return np.zeros((len(table), 0), np.float32)
        return np.column_stack([np.asarray(p, np.float64) for p in parts]).astype(np.float32)

    def card(self, coefficients: np.ndarray) -> dict:
        """The "clinical" entry of a model card: the encoding and its (columns, classes)
        coefficients on the model's logits."""
        return {"inputs": list(self.inputs), "sites": list(self.sites), "columns": self.names,
                "coefficients": np.asarray(coefficients, np.float32).tolist()}


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    if name not in table:
        return pd.Series("", index=table.index, dtype=str)
    return table[name].fillna("").astype(str).str.strip().str.lower()


def with_dropout_copies(features: np.ndarray, clinical: np.ndarray, *rows: np.ndarray,
                        ) -> tuple[np.ndarray, ...]:
    """[features | clinical] for every row, then again with the clinical data unknown (zero):
    metadata dropout. Each of `rows` (labels, ids, masks) is repeated to match."""
    joined = np.vstack([np.hstack([features, clinical]),
                        np.hstack([features, np.zeros_like(clinical)])])
    return (joined, *(np.concatenate([r, r]) for r in rows))


def with_clinical(probs: np.ndarray, entry: dict | None, table: pd.DataFrame | None,
                  ) -> np.ndarray:
    """One model's probabilities given each image's clinical data (rows of `table` in the
    images' order; None: nothing known): softmax(log probs + encoded @ coefficients). A
    model without a "clinical" entry, or no table, answers as it is."""
    if not entry or table is None:
        return probs
    encoded = ClinicalEncoding.from_card(entry).encode(table).astype(np.float64)
    logits = encoded @ np.asarray(entry["coefficients"], np.float64)
    shifted = np.log(np.clip(probs.astype(np.float64), 1e-30, None)) + logits
    return softmax(shifted).astype(np.float32)

