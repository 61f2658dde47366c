"""What the train and finetune stages share: seeding, input data, and a resumable, logged fit.

Resuming: after every epoch the whole training state (model variables, optimizer, the random
generators' state, EarlyStopping / ReduceLROnPlateau counters, DVCLive curves so far) goes to
.cache/backup/<stage>/<backbone>/<fingerprint>/epoch-NNNN/. If the stage is killed (Ctrl-C,
kill -9, a crash) the next `dvc repro` picks up after the last completed epoch. The folder is
outside DVC's outputs because DVC deletes a stage's outputs before running it; it is keyed by
a fingerprint of the stage's params, input files and code, so a backup is never resumed into
a different run; and it is removed once the stage's outputs are written. Each epoch's order of
training images depends only on (seed, epoch), so a resumed run ends with the very weights an
uninterrupted one would (tests/test_resume.py checks this).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from stages.core.hardware import Hardware
from stages.core.params import FitConfig
from stages.core.paths import AUGMENTED_DIR, PREPARED_DIR
from stages.core.shards import Split, fold_parts, read_meta, read_parts, read_split
from stages.core.train_loop import fit_epochs, inference, predict_batches

BACKUP_ROOT = Path(".cache/backup")
CODE_DIR = Path(__file__).resolve().parents[1]  # stages/: any code change starts afresh
ROOT = CODE_DIR.parent

# The counters a callback keeps between epochs, saved so that patience and learning-rate
# schedules carry on where they stopped. Keras resets them in on_train_begin.
CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
}


def seed_everything(seed: int) -> None:
    """Same params, same metrics on CPU: seed Python/NumPy/TF and ask TF for deterministic ops."""
    import tensorflow as tf

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def training_data(fold: str) -> tuple[Split, Split, dict]:
    """(augmented training split, validation split, data meta) of one fold."""
    meta = read_meta(PREPARED_DIR)
    parts = fold_parts(fold, list(meta["counts"]))
    return read_parts(AUGMENTED_DIR, parts.train), read_split(PREPARED_DIR, parts.val), meta


def backbone_features(extractor: keras.Model, split: Split, batch_size: int) -> Split:
    """`split` with each image replaced by what `extractor` makes of it (float32 vectors)."""
    features = predict_batches(inference(extractor), split.images, batch_size)
    return Split(features, split.labels, split.ids)


def backup_root(hardware: Hardware) -> Path:
    """Where Checkpoints keep the per-epoch state. In a cluster a private temporary folder:
    a worker restarted alone would resume into weights the others no longer have, so a
    multi-worker run always starts afresh."""
    return Path(tempfile.mkdtemp(prefix="backup-")) if hardware.kind == "multi_worker" \
        else BACKUP_ROOT


def epoch_batches(split: Split, n_classes: int, batch_size: int, seed: int, first_epoch: int,
                  epochs: int) -> tuple[Any, int]:
    """Training batches for epochs first_epoch..epochs-1, and the number of steps per epoch.

    Each epoch is shuffled with a seed made of (seed, epoch) rather than by a generator that
    advances from epoch 0, so a run resumed at epoch k sees the batches an uninterrupted run
    would have seen from epoch k on.
    """
    import tensorflow as tf

    base = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    n = len(split.labels)

    def one_epoch(epoch):
        return (base.shuffle(n, seed=seed * 100_003 + epoch)
                .batch(batch_size)
                .map(lambda image, label: (tf.cast(image, tf.float32),
                                           tf.one_hot(label, n_classes))))

    batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    options = tf.data.Options()
    # In a cluster each worker takes its share of every batch (the data are in memory, not
    # files to hand out).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.with_options(options).prefetch(tf.data.AUTOTUNE), math.ceil(n / batch_size)


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


def _replace_dir(src: Path, dst: Path) -> None:
    """Copy folder src to dst as a whole: dst is the old copy, absent, or the new copy; never
    a half-written one."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


class Checkpoints:
    """The per-epoch training state of one stage run for one backbone (see module doc)."""

    def __init__(self, stage: str, backbone: str, key: str, root: Path = BACKUP_ROOT):
        self.parent = root / stage / backbone
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
        tmp = self.folder / f".epoch-{epochs_done:04d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
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
        tmp.rename(self.folder / f"epoch-{epochs_done:04d}")
        for old in self.folder.glob("epoch-*"):
            if old.name != f"epoch-{epochs_done:04d}":
                shutil.rmtree(old, ignore_errors=True)

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

    def finish(self, log_dir: Path) -> None:
        """The stage's outputs are written: publish the curves, drop the backup."""
        log_dir.parent.mkdir(parents=True, exist_ok=True)
        _replace_dir(self.live_dir, log_dir)
        shutil.rmtree(self.folder, ignore_errors=True)
        for empty in (self.parent, self.parent.parent):
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()


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


class _SaveEachEpoch(keras.callbacks.Callback):
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


def fit_resumable(model: keras.Model, train: Split, val: Split, n_classes: int, fit: FitConfig,
                  seed: int, checkpoints: Checkpoints, name: str, hardware: Hardware,
                  callbacks: Sequence[keras.callbacks.Callback] = ()) -> int:
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
    global_batch = fit.batch_size * hardware.replicas
    batches, steps = epoch_batches(train, n_classes, global_batch, seed, start, fit.epochs)
    val_data = (val.images, np.eye(n_classes, dtype=np.float32)[val.labels])
    # dvcyaml=None: our dvc.yaml declares these plots; DVCLive must not rewrite it.
    with Live(dir=str(checkpoints.live_dir), resume=state is not None, dvcyaml=None,
              save_dvc_exp=False) as live:
        if state:
            live.step = start  # DVCLive's own resume is off by one after a single epoch
        fit_epochs(model, batches, steps, val_data, fit.batch_size, fit.epochs, start,
                   [DVCLiveCallback(live=live), *callbacks,
                    _SaveEachEpoch(checkpoints, callbacks, state)], hardware)
    return start
