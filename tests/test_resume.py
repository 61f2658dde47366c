"""Interrupted training resumes from its last completed epoch (core/checkpoints.py).

The unit tests interrupt a tiny model.fit in-process; the slow test SIGKILLs a real
`dvc repro` during train@small_cnn and runs it again.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import chdir
from pathlib import Path

import keras
import numpy as np
import pytest

from stages.core.checkpoints import Checkpoints, drop_backups, fingerprint
from stages.core.hardware import set_up
from stages.core.params import FitConfig, merged
from stages.core.paths import plots_dir, training_summary_file
from stages.core.phase import fit_resumable, seed_everything
from tests.pipeline_project import TINY, Project
from tests.tiny_problem import tiny_data

EPOCHS = 6


class Interrupt(keras.callbacks.Callback):
    """Stands in for Ctrl-C: raises KeyboardInterrupt as epoch `at` begins."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


ON_THIS_MACHINE = set_up({"compute": {"strategy": "default", "precision": "float32",
                                       "jit_compile": False}})


def _model() -> keras.Model:
    seed_everything(7)
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.3),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(3e-3), "categorical_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    return model


def _callbacks() -> list[keras.callbacks.Callback]:
    return [keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=EPOCHS,
                                          restore_best_weights=True),
            # mode="max" on a falling loss: "no improvement" every epoch, so the rate halves
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", mode="max", patience=1,
                                              factor=0.5)]


def _run(tmp: Path, interrupt_at: int | None = None, key: str = "k") -> tuple[keras.Model, int]:
    train, val = tiny_data()
    model, callbacks = _model(), _callbacks()
    if interrupt_at is not None:
        callbacks.append(Interrupt(interrupt_at))
    checkpoints = Checkpoints("train", "tiny", "holdout", key, root=tmp / "backup")
    start = fit_resumable(model, train, val, 2, FitConfig(EPOCHS, 3e-3, 16), 7, checkpoints,
                          "train@tiny", ON_THIS_MACHINE, callbacks)
    with chdir(tmp):
        checkpoints.finish("tiny", "train", "holdout")
    return model, start


def _summary(tmp: Path) -> Path:
    return tmp / training_summary_file("tiny", "train", "holdout")


def _curve(tmp: Path, name: str = "loss") -> list[tuple[int, float]]:
    # DVCLive's Keras callback names the training curves train/<metric>
    tsv = tmp / plots_dir("tiny", "train") / "holdout" / "train" / f"{name}.tsv"
    with tsv.open() as handle:
        return [(int(r["step"]), float(r[name])) for r in csv.DictReader(handle, delimiter="\t")]


def test_interrupted_fit_resumes_to_the_same_weights_and_curves(tmp_path):
    reference, _ = _run(tmp_path / "whole")
    ref_curve = _curve(tmp_path / "whole")
    assert [step for step, _ in ref_curve] == list(range(EPOCHS))

    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        _run(run, interrupt_at=3)
    saved = sorted((run / "backup/train/tiny/holdout/k").glob("epoch-*"))
    assert [p.name for p in saved] == ["epoch-0003"]
    assert not _summary(run).exists()  # curves are published only with the model

    model, start = _run(run)
    assert start == 3
    for a, b in zip(reference.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # DVCLive's steps continue (0..5 once each) and match the uninterrupted run's values.
    assert _curve(run) == ref_curve
    assert json.loads(_summary(run).read_text())["step"] == EPOCHS - 1


def test_a_finished_folds_backup_makes_its_rerun_a_load_until_the_stage_ends(tmp_path):
    """A stage trains its folds one after the other and DVC deletes every fold's model
    before a rerun: after a kill in a later fold, the finished folds are loaded, not trained."""
    reference, _ = _run(tmp_path)
    curve = _curve(tmp_path)
    model, start = _run(tmp_path)
    assert start == EPOCHS  # nothing trained
    for a, b in zip(reference.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _curve(tmp_path) == curve
    drop_backups("train", "tiny", root=tmp_path / "backup")
    assert not (tmp_path / "backup").exists()  # the stage is done


def test_interrupted_after_one_epoch_continues_at_step_one(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, interrupt_at=1)
    _, start = _run(tmp_path)
    assert start == 1
    assert [step for step, _ in _curve(tmp_path)] == list(range(EPOCHS))


class RecordLearningRate(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_callback_counters_and_learning_rate_are_restored(tmp_path):
    train, val = tiny_data()
    model, callbacks = _model(), _callbacks()
    record = RecordLearningRate()
    checkpoints = Checkpoints("train", "tiny", "holdout", "k", root=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        fit_resumable(model, train, val, 2, FitConfig(EPOCHS, 3e-3, 16), 7, checkpoints,
                      "train@tiny", ON_THIS_MACHINE, [*callbacks, record, Interrupt(4)])
    early, plateau = callbacks
    saved = json.loads((checkpoints.latest() / "state.json").read_text())["callbacks"]
    assert saved == [
        {"class": "EarlyStopping", "wait": early.wait, "stopped_epoch": early.stopped_epoch,
         "best": early.best, "best_epoch": early.best_epoch},
        {"class": "ReduceLROnPlateau", "wait": plateau.wait,
         "cooldown_counter": plateau.cooldown_counter, "best": plateau.best},
    ]

    model, (early, plateau) = _model(), _callbacks()
    restored = Checkpoints("train", "tiny", "holdout", "k", root=tmp_path).restore(model)
    assert restored["epochs_done"] == 4
    assert record.rates[-1] < 3e-3  # the schedule moved, and the backup kept where it was:
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == record.rates[-1]
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 4 * 3  # 3 steps/epoch
    assert len(restored["best_weights"][0]) == len(model.get_weights())


def test_backup_of_other_params_or_data_is_never_resumed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, interrupt_at=2, key="old")
    _, start = _run(tmp_path, key="new")
    assert start == 0
    assert [p.name for p in (tmp_path / "backup/train/tiny/holdout").iterdir()] == ["new"]


def test_fingerprint_follows_params_and_input_bytes(tmp_path):
    data = tmp_path / "shards"
    data.mkdir()
    (data / "train-00000.npz").write_bytes(b"one")
    first = fingerprint({"lr": 1e-3}, [data])
    assert fingerprint({"lr": 1e-3}, [data]) == first
    assert fingerprint({"lr": 2e-3}, [data]) != first
    (data / "train-00000.npz").write_bytes(b"two")
    assert fingerprint({"lr": 1e-3}, [data]) != first


def test_unreadable_backup_starts_afresh(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, interrupt_at=2)
    (tmp_path / "backup/train/tiny/holdout/k/epoch-0002/variables.npz").write_bytes(b"garbage")
    _, start = _run(tmp_path)
    assert start == 0


# ---------------------------------------------------------------- a real kill -9


RESUME = merged(TINY, {
    "backbones": ["small_cnn"],
    "models": {"small_cnn": {"train": {"epochs": 40, "batch_size": 16}}},
})


@pytest.mark.slow
def test_kill_9_during_dvc_repro_resumes_from_the_last_epoch(tmp_path):
    project = Project.copy_of_repo(tmp_path / "repo", RESUME)
    project.dvc("repro", "augment")
    backup = project.root / ".cache/backup/train/small_cnn/holdout"
    dvc = str(Path(sys.executable).parent / "dvc")
    proc = subprocess.Popen([dvc, "repro"], cwd=project.root, env=project.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: kill them all
    deadline = time.monotonic() + 120
    while not list(backup.glob("*/epoch-*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(backup.glob("*/epoch-*"))
    assert saved, "training never completed an epoch"
    epochs_done = int(saved[-1].name.split("-")[1])
    assert 1 <= epochs_done < 40
    # no model, not even a temp file
    assert not [p for p in project.root.glob("models/small_cnn/**/*") if p.is_file()]
    summary = project.root / "metrics/training/small_cnn/train/holdout.json"
    assert not summary.exists()

    rerun = project.dvc("repro", "train@small_cnn").stdout
    assert project.stages_run(rerun) == {"train@small_cnn"}
    assert "resuming after epoch" in rerun
    resumed_at = int(rerun.split("resuming after epoch ")[1].split()[0])
    assert resumed_at >= epochs_done  # the kill may land just after a newer epoch was saved
    assert len(re.findall(r"^Epoch \d+/40 - ", rerun, re.MULTILINE)) == 40 - resumed_at, rerun
    assert json.loads(summary.read_text())["step"] == 39
    curves = project.root / "metrics/plots/small_cnn/train/holdout"
    with (curves / "train/loss.tsv").open() as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle, delimiter="\t")] == list(range(40))
    keras.models.load_model(project.root / "models/heads/small_cnn/holdout/head.keras")  # valid
    assert not backup.exists()
    assert "up to date" in project.dvc("status", "train@small_cnn").stdout

    # The resumed run ended where an uninterrupted one ends.
    resumed = json.loads(summary.read_text())
    project.dvc("repro", "--force", "--single-item", "train@small_cnn")
    assert json.loads(summary.read_text()) == resumed


def test_a_fold_trained_after_another_in_one_process_starts_as_if_alone():
    """train and finetune fit every fold of a backbone in one process: seed_everything must
    put each fold back at the same random state (weights and dropout masks)."""
    train, val = tiny_data()
    alone = _model()
    first = alone.get_weights()
    other = _model()  # another fold's model, and a training step's random draws
    other.fit(train.images, keras.utils.to_categorical(train.labels, 2), epochs=1, verbose=0)
    again = _model()
    for a, b in zip(first, again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = train.images[:4].astype("float32")
    seed_everything(7)
    masks_alone = np.asarray(alone(x, training=True))
    _model()
    seed_everything(7)
    np.testing.assert_array_equal(masks_alone, np.asarray(again(x, training=True)))
