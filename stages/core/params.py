"""Read params.yaml and hand each stage exactly the keys dvc.yaml declares for it.

Every tunable lives in params.yaml; dvc.yaml lists, per stage, the keys it reads, so that DVC
reruns exactly the stages a change affects. `stage_params` enforces that list: a stage sees
only its declared keys, and reading any other is a "missing key" error, never a silent
dependency. Bad values fail here, naming the key, before any data is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.core.errors import PipelineError

PARAMS_FILE = Path("params.yaml")
# The pipeline that goes with this code (the stages run in its root, tests in a scratch folder).
DVC_FILE = Path(__file__).resolve().parents[2] / "dvc.yaml"


class ParamsError(PipelineError, ValueError):
    """A value in params.yaml is missing or out of range; the message names the key."""


class ParamsLoader(yaml.SafeLoader):
    """SafeLoader that reads 5e-05 as a number, as YAML 1.2 (and DVC) do.

    PyYAML follows YAML 1.1, where a float needs a dot (5.0e-05), so it reads 5e-05 as a
    string; and 5e-05 is exactly what `dvc exp run -S ...lr=5e-5` writes into params.yaml.
    """


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    if not path.exists():
        raise ParamsError(f"{path} not found: run the stages from the repository root")
    with path.open() as f:
        params = yaml.load(f, Loader=ParamsLoader) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{path} must hold a mapping of sections")
    return params


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys set, section by section (a profile over params.yaml)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = (merged(base.get(key) or {}, value) if isinstance(value, dict)
                    else value)
    return out


def with_assignment(params: dict[str, Any], assignment: str) -> dict[str, Any]:
    """`params` with one `dotted.key=value` set, as `dvc exp run -S` does (value in YAML)."""
    key, sep, value = assignment.partition("=")
    if not sep:
        raise ParamsError(f"-S {assignment}: expected key=value")
    override: dict[str, Any] = yaml.load(value, Loader=ParamsLoader)
    for part in reversed(key.split(".")):
        override = {part: override}
    return merged(params, override)


def stage_params(stage: str, item: dict[str, str] | None = None,
                 params_file: Path = PARAMS_FILE, dvc_file: Path = DVC_FILE) -> dict[str, Any]:
    """The params dvc.yaml declares for `stage` (with a matrix stage's `${item.x}` filled from
    `item`), as a nested dict holding only those keys."""
    params = load_params(params_file)
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    if stage not in stages:
        raise ParamsError(f"{dvc_file} has no stage '{stage}'")
    declared: dict[str, Any] = {}
    for key in stages[stage].get("params", []):
        for name, value in (item or {}).items():
            key = key.replace(f"${{item.{name}}}", str(value))
        node = declared
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = get(params, key)
    return declared


def fold_names(params: dict[str, Any], only: str | None = None) -> list[str]:
    """The folds a per-backbone stage runs: params.yaml's `folds` as the names paths use
    ("holdout", "0", "1", ...), or just `only`."""
    folds = [str(f) for f in get(params, "folds")]
    if only is not None and str(only) not in folds:
        raise ParamsError(f"fold {only!r} is not in params.yaml's folds {folds}")
    return [str(only)] if only is not None else folds


def get(params: dict[str, Any], dotted_key: str) -> Any:
    """params['a']['b'] for 'a.b', with an error that names the missing key."""
    node: Any = params
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"params.yaml: missing key '{dotted_key}'")
        node = node[part]
    return node


def number(params: dict[str, Any], key: str, low: float, high: float, integer: bool = False):
    """A number at `key` within [low, high]."""
    value = get(params, key)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise ParamsError(f"params.yaml: '{key}' must be {what} in [{low}, {high}], got {value!r}")
    return value


def flag(params: dict[str, Any], key: str) -> bool:
    """true or false at `key` (not 0/1, not "yes": YAML's own booleans only)."""
    value = get(params, key)
    if not isinstance(value, bool):
        raise ParamsError(f"params.yaml: '{key}' must be true or false, got {value!r}")
    return value


def choice(params: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = get(params, key)
    if value not in allowed:
        options = ", ".join(map(str, allowed))
        raise ParamsError(f"params.yaml: '{key}' must be one of {options}; got {value!r}")
    return value


@dataclass(frozen=True)
class HeadConfig:
    pooling: str
    views: int  # the features are the mean over this many flips/rotations (layers.DihedralViews)
    dense: tuple[int, ...]
    dropout: tuple[float, ...]
    batch_norm: bool


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    lr: float
    batch_size: int
    online_augment: str = "none"  # "dihedral": a random flip/rotation per image and epoch
    class_weight: str | None = None  # "balanced": each class's loss weighed 1 / its count


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(FitConfig):
    unfreeze: int | str  # "all" or the number of top layers of the backbone to train
    patience: int
    cache_trunk: bool = False  # train the top on the frozen trunk's cached activations


@dataclass(frozen=True)
class ModelConfig:
    """What train builds: `models.<name>`'s arch, weights and head (finetune reads none of it:
    it continues the model train wrote, whose card carries these)."""

    name: str  # the key under `models:`; names the stages and output folders
    arch: str  # the registry entry in stages/core/backbones.py
    weights: str | None  # "imagenet", None (random init) or a path to a weights file
    head: HeadConfig


CLASS_WEIGHTS = ("none", "balanced")


def class_weight_setting(params: dict[str, Any], key: str) -> str | None:
    """`<key>.class_weight`: None (the data's own class frequencies) or "balanced"."""
    weight = choice(params, f"{key}.class_weight", CLASS_WEIGHTS)
    return None if weight == "none" else weight


def fit_config(params: dict[str, Any], key: str) -> FitConfig:
    """The validated epochs / lr / batch_size / class_weight section at `key` (e.g.
    models.x.train)."""
    return FitConfig(
        epochs=number(params, f"{key}.epochs", 0, 10_000, integer=True),
        lr=number(params, f"{key}.lr", 1e-8, 1.0),
        batch_size=number(params, f"{key}.batch_size", 1, 4096, integer=True),
        class_weight=class_weight_setting(params, key),
    )


SOLVERS = ("adam", "logistic")
# The train keys only the logistic solver applies, and the value that changes nothing.
LOGISTIC_ONLY = {"fit_on": "train"}


def train_solver(params: dict[str, Any], name: str) -> str:
    """How train fits the head: `adam` (gradient steps, `epochs` of them) or `logistic` (a
    regularised linear model on the frozen features, core/linear_head.py)."""
    solver = choice(params, f"models.{name}.train.solver", SOLVERS)
    if solver == "logistic":
        if get(params, f"models.{name}.weights") is None:
            raise ParamsError(f"params.yaml: models.{name}.train.solver logistic needs "
                              "pretrained weights (its backbone stays frozen)")
        if get(params, f"models.{name}.head.dense"):
            raise ParamsError(f"params.yaml: models.{name}.train.solver logistic needs a "
                              "linear head (head.dense: [])")
    else:  # never a setting quietly left unapplied
        section = get(params, f"models.{name}.train")
        unapplied = {k: section[k] for k, inert in LOGISTIC_ONLY.items()
                     if k in section and section[k] != inert}
        if unapplied:
            raise ParamsError(
                f"params.yaml: models.{name}.train {unapplied}: applied by solver logistic "
                f"only; solver {solver} would train without them (set "
                f"{', '.join(f'{k}: {LOGISTIC_ONLY[k]}' for k in unapplied)}, or remove them)")
    return solver


@dataclass(frozen=True)
class LogisticConfig:
    """How `solver: logistic` fits: class weights, and which of the fold's images it fits on."""

    class_weight: str | None  # None: the data's own class frequencies; "balanced"
    with_validation: bool  # fit on the training AND validation parts (cross-validation only)


FIT_ON = ("train", "train+val")


def logistic_config(params: dict[str, Any], name: str, fold: str) -> LogisticConfig:
    """The validated `class_weight` and `fit_on` of `models.<name>.train` (solver logistic).

    A logistic head stops at no epoch and chooses C by inner cross-validation, so with
    cross-validation the validation fold has nothing to do and `fit_on: train+val` fits on
    it too. With a holdout split the validation images calibrate the served model and set
    its threshold, so they must stay unseen."""
    key = f"models.{name}.train"
    fit_on = choice(params, f"{key}.fit_on", FIT_ON)
    if fit_on == "train+val" and str(fold) == "holdout":
        raise ParamsError(f"params.yaml: '{key}.fit_on: train+val' needs cross-validation "
                          "(folds: [0, 1, ...]); a holdout model is calibrated on its "
                          "validation images, so set it to train")
    return LogisticConfig(class_weight_setting(params, key), fit_on == "train+val")


ONLINE_AUGMENT = ("none", "dihedral")  # fold_data.epoch_batches


def finetune_config(params: dict[str, Any], name: str) -> FinetuneConfig:
    """The validated `models.<name>.finetune` section."""
    key = f"models.{name}.finetune"
    unfreeze = get(params, f"{key}.unfreeze")
    if unfreeze != "all" and (isinstance(unfreeze, bool) or not isinstance(unfreeze, int)):
        raise ParamsError(f"params.yaml: '{key}.unfreeze' must be 'all' or an integer")
    fit = fit_config(params, key)
    online_augment = choice(params, f"{key}.online_augment", ONLINE_AUGMENT)
    cache_trunk = flag(params, f"{key}.cache_trunk")
    if cache_trunk and (unfreeze == "all" or unfreeze <= 0 or online_augment != "none"):
        raise ParamsError(
            f"params.yaml: '{key}.cache_trunk: true' trains the top `unfreeze` layers on the "
            "frozen layers' activations, computed once per image: it needs 'unfreeze' a "
            f"positive number (got {unfreeze!r}) and 'online_augment: none' (got "
            f"{online_augment!r}: a flip per epoch would change those activations)")
    return FinetuneConfig(epochs=fit.epochs, lr=fit.lr, batch_size=fit.batch_size,
                          class_weight=fit.class_weight, unfreeze=unfreeze,
                          patience=number(params, f"{key}.patience", 1, 1000, integer=True),
                          online_augment=online_augment, cache_trunk=cache_trunk)


def weights_setting(params: dict[str, Any], name: str) -> str | None:
    weights = get(params, f"models.{name}.weights")
    if weights is not None and not isinstance(weights, str):
        raise ParamsError(f"params.yaml: 'models.{name}.weights' must be imagenet, null or a "
                          "file path")
    return weights


def model_config(params: dict[str, Any], name: str) -> ModelConfig:
    """The validated arch, weights and head of `models.<name>`."""
    head_key = f"models.{name}.head"
    dense = tuple(get(params, f"{head_key}.dense"))
    dropout = tuple(get(params, f"{head_key}.dropout"))
    if len(dense) != len(dropout):
        raise ParamsError(f"params.yaml: '{head_key}.dense' and '.dropout' need the same length")
    if any(not 0 <= d < 1 for d in dropout):
        raise ParamsError(f"params.yaml: '{head_key}.dropout' values must be in [0, 1)")
    return ModelConfig(
        name=name,
        arch=get(params, f"models.{name}.arch"),
        weights=weights_setting(params, name),
        head=HeadConfig(
            pooling=choice(params, f"{head_key}.pooling", ("avg", "max")),
            views=int(choice(params, f"{head_key}.views", (1, 2, 4, 8))),
            dense=tuple(int(u) for u in dense),
            dropout=tuple(float(d) for d in dropout),
            batch_norm=flag(params, f"{head_key}.batch_norm"),
        ),
    )
