"""The phase runner: what train and finetune share. Each stage supplies how its model is
built, its callbacks and its output file; this seeds, loads the fold's data, builds under the
machine's strategy, trains resumably with DVCLive curves, and (on the chief) writes the model
and publishes the curves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from stages.core.checkpoints import Checkpoints, NoCheckpoints, SaveEachEpoch, fingerprint
from stages.core.clinical_branch import CLINICAL, INPUTS, ClinicalBranch
from stages.core.fold_data import epoch_batches, training_data
from stages.core.hardware import Hardware, set_up
from stages.core.model_io import write_model
from stages.core.params import FitConfig, get
from stages.core.paths import AUGMENTED_DIR, PREPARED_DIR
from stages.core.shards import Split
from stages.core.train_loop import balanced_weights, fit_epochs
from stages.core.worklog import work


@dataclass
class Built:
    """What a phase's build function returns (inside the strategy's scope)."""

    model: keras.Model  # what is saved
    card: dict  # its model card
    train: Split
    val: Split
    fitted: keras.Model | None = None  # what trains, if not `model` (e.g. the head alone)
    # With clinical inputs: `fitted` is clinical_branch.joined_model, whose kernel goes to
    # the card once trained.
    clinical: ClinicalBranch | None = None
    callbacks: Sequence[keras.callbacks.Callback] = field(default_factory=list)
    note: str = ""  # one line on the terminal: what trains


@dataclass(frozen=True)
class Phase:
    stage: str  # "train" | "finetune": the stage name, and the curves' folder
    output: Path  # the model file written (paths.head_file or model_dir / model.keras)
    fit: FitConfig
    inputs: tuple[Path, ...] = ()  # files read besides the prepared data (finetune: head)


def seed_everything(seed: int) -> None:
    """Same params, same metrics on CPU: seed Python/NumPy/TF and ask TF for deterministic ops."""
    import tensorflow as tf

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    # Also resets Keras's global seed generator: a stage trains its folds one after the other
    # in one process, and fold k starts from the same random state as it would alone.
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def run_phase(phase: Phase, backbone: str, fold: str, params: dict,
              build: Callable[[Split, Split, dict, Hardware], Built]) -> None:
    """`params`: exactly what dvc.yaml declares for the stage (params.stage_params), so a
    change to any of them (or to the data or the code) never resumes an old backup."""
    hardware = set_up(params)  # first: a cluster's strategy must exist before other TF work
    seed = get(params, "seed")
    seed_everything(seed)
    train, val, meta = training_data(fold)
    with hardware.strategy.scope():
        built = build(train, val, meta, hardware)
    name = f"{phase.stage}@{backbone} fold {fold}"
    print(f"{name}: {built.note}; {hardware.describe()}", flush=True)
    if hardware.kind == "multi_worker" or phase.fit.epochs == 0:
        # A cluster's workers would overwrite each other's backups; with no epochs there is
        # nothing to resume.
        checkpoints: Checkpoints = NoCheckpoints()
    else:
        checkpoints = Checkpoints(phase.stage, backbone, fold, fingerprint(
            {"params": params, "fold": fold}, [PREPARED_DIR, AUGMENTED_DIR, *phase.inputs]))
    fit_resumable(built.fitted or built.model, built.train, built.val, len(meta["classes"]),
                  phase.fit, seed, checkpoints, name, hardware, built.callbacks, built.clinical)
    if built.clinical:
        built.card["clinical"] = built.clinical.card_entry(built.fitted)
    if hardware.is_chief:
        write_model(built.model, phase.output, built.card)
        checkpoints.finish(backbone, phase.stage, fold)


def fit_resumable(model: keras.Model, train: Split, val: Split, n_classes: int, fit: FitConfig,
                  seed: int, checkpoints: Checkpoints, name: str, hardware: Hardware,
                  callbacks: Sequence[keras.callbacks.Callback] = (),
                  clinical: ClinicalBranch | None = None) -> int:
    """Train for `fit.epochs` epochs (train_loop.fit_epochs), resumed from `checkpoints` when
    a backup exists.

    One line per epoch on the terminal; DVCLive curves into checkpoints.live_dir (published
    by Checkpoints.finish once the caller has written its model). `fit.batch_size` is per
    replica. Returns the first epoch this call trained (0 unless resumed).
    """
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    state = checkpoints.restore(model)
    start = 0
    if state:
        start = fit.epochs if state["stopped"] else state["epochs_done"]
        print(f"{name}: resuming after epoch {state['epochs_done']} of {fit.epochs} "
              f"(backup in {checkpoints.folder})", flush=True)
    # dvcyaml=None: our dvc.yaml declares these plots; DVCLive must not rewrite it.
    with Live(dir=str(checkpoints.live_dir), resume=state is not None, dvcyaml=None,
              save_dvc_exp=False) as live:
        if state:
            live.step = start  # DVCLive's own resume is off by one after a single epoch
        if fit.epochs:  # (a resumed run that had finished still ends its callbacks)
            batches, steps = epoch_batches(train, n_classes, fit.batch_size * hardware.replicas,
                                           seed, start, fit.epochs, fit.online_augment,
                                           clinical.train if clinical else None)
            val_inputs = {INPUTS: val.images, CLINICAL: clinical.val} if clinical else val.images
            val_data = (val_inputs, np.eye(n_classes, dtype=np.float32)[val.labels])
            weights = (balanced_weights(train.labels, n_classes)
                       if fit.class_weight == "balanced" else None)
            with work("epochs"):
                fit_epochs(model, batches, steps, val_data, fit.batch_size, fit.epochs, start,
                           [DVCLiveCallback(live=live), *callbacks,
                            SaveEachEpoch(checkpoints, callbacks, state)], hardware, weights)
        if fit.epochs == 0:  # no epochs: the outputs still exist
            live.make_summary()
            (checkpoints.live_dir / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
    return start
