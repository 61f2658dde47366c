"""The per-epoch training state of a stage run, so that a killed run resumes where it stopped.

After every epoch the whole training state (model variables, optimizer, EarlyStopping /
ReduceLROnPlateau counters, DVCLive curves so far) goes to
.cache/backup/<stage>/<backbone>/<fold>/<fingerprint>/epoch-NNNN/. If the stage is killed
(Ctrl-C, kill -9, a crash) the next `dvc repro` picks up after the last completed epoch. The
folder is outside DVC's outputs because DVC deletes a stage's outputs before running it; it is
keyed by a fingerprint of the stage's params, input files and code, so a backup is never
resumed into a different run. A stage trains every fold of its backbone, so a finished fold's
backup stays until the whole stage is done (drop_backups): a rerun after a kill in a later
fold loads the finished folds instead of training them again. Each
epoch's order of training images depends only on (seed, epoch) (fold_data.epoch_batches), so
a resumed run ends with the very weights an uninterrupted one would (tests/test_resume.py).

A cluster run keeps no store (`NoCheckpoints`): a worker restarted alone would resume into
weights the others no longer have, so a multi-worker run always starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from stages.core.files import atomic_path
from stages.core.paths import BACKUP_ROOT
from stages.core.training_log import publish_log

CODE_DIR = Path(__file__).resolve().parents[1]  # stages/: any code change starts afresh
ROOT = CODE_DIR.parent

# The counters a callback keeps between epochs, saved so that patience and learning-rate
# schedules carry on where they stopped. Keras resets them in on_train_begin.
CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
}


def fingerprint(params: dict, inputs: Iterable[Path]) -> str:
    """A short hash of params, input files and the pipeline's code: what a backup belongs to."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    files: list[Path] = []
    for path in map(Path, [*inputs, CODE_DIR]):
        files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".pyc") \
            if path.is_dir() else [path]
    for path in files:
        # Names relative to the repository, so that moving the checkout keeps its backups.
        resolved = path.resolve()
        name = resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved
        digest.update(str(name).encode())
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


def drop_backups(stage: str, backbone: str, root: Path = BACKUP_ROOT) -> None:
    """Every fold of `backbone` is written: their backups can go."""
    shutil.rmtree(root / stage / backbone, ignore_errors=True)
    for empty in (root / stage, root):
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()


class Checkpoints:
    """The per-epoch training state of one fold's training in a stage run (see module doc)."""

    def __init__(self, stage: str, backbone: str, fold: str, key: str,
                 root: Path = BACKUP_ROOT):
        self.parent = root / stage / backbone / str(fold)
        self.folder = self.parent / key
        self.live_dir = self.folder / "live"  # DVCLive writes here; published at the end
        if self.parent.is_dir():  # backups of other params, data or code can never resume
            for old in self.parent.iterdir():
                if old != self.folder:
                    shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        done = sorted(self.folder.glob("epoch-[0-9][0-9][0-9][0-9]"))
        return done[-1] if done else None

    def save(self, epochs_done: int, model: keras.Model,
             callbacks: Sequence[keras.callbacks.Callback]) -> None:
        """Write the state after `epochs_done` epochs into a temporary folder, then rename it:
        a kill at any moment leaves the previous epoch's folder or this one, never a mix."""
        done = self.folder / f"epoch-{epochs_done:04d}"
        with atomic_path(done) as tmp:
            tmp.mkdir()
            self._write_state(tmp, epochs_done, model, callbacks)
        for old in self.folder.glob("epoch-*"):
            if old != done:
                shutil.rmtree(old, ignore_errors=True)

    def _write_state(self, tmp: Path, epochs_done: int, model: keras.Model,
                     callbacks: Sequence[keras.callbacks.Callback]) -> None:
        np.savez(tmp / "variables.npz",
                 **{f"m{i}": v.numpy() for i, v in enumerate(model.variables)},
                 **{f"o{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})
        states = []
        for cb in _stateful(callbacks):
            attrs = next(a for kind, a in CALLBACK_STATE.items() if isinstance(cb, kind))
            states.append({"class": type(cb).__name__,
                           **{a: _jsonable(getattr(cb, a, None)) for a in attrs}})
            if getattr(cb, "best_weights", None) is not None:
                np.savez(tmp / f"best_weights_{len(states) - 1}.npz", *cb.best_weights)
        (tmp / "state.json").write_text(json.dumps(
            {"epochs_done": epochs_done, "stopped": bool(model.stop_training),
             "callbacks": states}, indent=2))
        if self.live_dir.is_dir():
            shutil.copytree(self.live_dir, tmp / "live")

    def restore(self, model: keras.Model) -> dict | None:
        """Load the latest epoch's state into `model` and the DVCLive folder; None if fresh."""
        latest = self.latest()
        if latest is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            return None
        try:
            state = json.loads((latest / "state.json").read_text())
            model.optimizer.build(model.trainable_variables)
            with np.load(latest / "variables.npz") as saved:
                _assign(model.variables, saved, "m")
                _assign(model.optimizer.variables, saved, "o")
            state["best_weights"] = {}
            for path in latest.glob("best_weights_*.npz"):
                with np.load(path) as best:
                    state["best_weights"][int(path.stem.rsplit("_", 1)[1])] = [
                        best[f"arr_{i}"] for i in range(len(best.files))]
        except (OSError, ValueError, KeyError) as err:
            print(f"backup {latest} unusable ({err}); starting from epoch 0", flush=True)
            shutil.rmtree(self.folder, ignore_errors=True)
            return None
        shutil.rmtree(self.live_dir, ignore_errors=True)
        if (latest / "live").is_dir():
            shutil.copytree(latest / "live", self.live_dir)
        return state

    def finish(self, backbone: str, phase: str, fold: str) -> None:
        """The fold's model is written: publish its curves (the backup stays: drop_backups)."""
        publish_log(self.live_dir, backbone, phase, fold)


class NoCheckpoints(Checkpoints):
    """A cluster run's (or a run without epochs') stand-in: stores nothing, resumes nothing;
    DVCLive writes into a private temporary folder that is published at the end (chief) or
    vanishes with the process (other workers)."""

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="training-log-")
        self.folder = Path(self._tmp.name)
        self.live_dir = self.folder / "live"

    def latest(self) -> Path | None:
        return None

    def save(self, epochs_done, model, callbacks) -> None:
        pass

    def restore(self, model: keras.Model) -> dict | None:
        return None

    def finish(self, backbone: str, phase: str, fold: str) -> None:
        publish_log(self.live_dir, backbone, phase, fold)
        self._tmp.cleanup()


def _stateful(callbacks: Sequence[keras.callbacks.Callback]) -> list[keras.callbacks.Callback]:
    return [cb for cb in callbacks if isinstance(cb, tuple(CALLBACK_STATE))]


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _assign(variables: list, saved: Any, prefix: str) -> None:
    names = [n for n in saved.files if n.startswith(prefix)]
    if len(names) != len(variables):
        raise ValueError(f"{len(names)} saved variables for {len(variables)} in the model")
    for i, variable in enumerate(variables):
        variable.assign(saved[f"{prefix}{i}"])  # raises ValueError on a shape mismatch


class SaveEachEpoch(keras.callbacks.Callback):
    """Last in the callback list: restores the others' counters after they reset themselves
    in on_train_begin, and saves everything once they have all seen the epoch's end."""

    def __init__(self, checkpoints: Checkpoints, watched: Sequence[keras.callbacks.Callback],
                 state: dict | None):
        super().__init__()
        self.checkpoints, self.watched, self.state = checkpoints, _stateful(watched), state

    def on_train_begin(self, logs=None):
        if not self.state:
            return
        saved_states = self.state["callbacks"]
        if [s["class"] for s in saved_states] != [type(cb).__name__ for cb in self.watched]:
            raise ValueError("the backup was made with other callbacks")  # code changed
        for i, (cb, saved) in enumerate(zip(self.watched, saved_states, strict=True)):
            for attr, value in saved.items():
                if attr != "class":
                    setattr(cb, attr, value)
            if i in self.state["best_weights"]:
                cb.best_weights = self.state["best_weights"][i]

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save(epoch + 1, self.model, self.watched)
