"""One training process of tests/test_distribution.py: a tiny model trained by the pipeline's
own code path (hardware.set_up → fit_resumable) under the strategy that params and TF_CONFIG
select, then its weights saved for the test to compare.

    python -m tests.distributed_worker OUT_DIR STRATEGY BATCH_SIZE [LOGICAL_CPUS [PRECISION]]
"""

from __future__ import annotations

import sys
from contextlib import chdir
from pathlib import Path

import numpy as np


def main(out: Path, strategy: str, batch_size: int, logical_cpus: int = 1,
         precision: str = "float32") -> None:
    import keras
    import tensorflow as tf

    if logical_cpus > 1:  # must happen before TensorFlow initialises its devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)

    from stages.core.checkpoints import NoCheckpoints
    from stages.core.classifier import compile_classifier
    from stages.core.hardware import set_up
    from stages.core.model_io import write_model
    from stages.core.params import FitConfig
    from stages.core.phase import fit_resumable, seed_everything
    from tests.tiny_problem import tiny_data

    hardware = set_up({"compute": {"strategy": strategy, "precision": precision,
                                   "jit_compile": False}})
    print(hardware.describe(), flush=True)
    seed_everything(7)
    train, val = tiny_data()
    with hardware.strategy.scope():
        # No dropout: its masks depend on how the batch is split, and the test compares
        # weights across strategies.
        model = keras.Sequential([
            keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            # float32 output under mixed precision, as classifier._head does
            keras.layers.Dense(2, activation="softmax", dtype="float32"),
        ])
        compile_classifier(model, 3e-3)
    # What the phase runner keeps in a cluster: no store (tests/test_distribution.py).
    checkpoints = NoCheckpoints()
    fit_resumable(model, train, val, 2, FitConfig(4, 3e-3, batch_size), 7, checkpoints,
                  "train@tiny", hardware)
    tag = "chief" if hardware.is_chief else "worker"
    np.savez(out / f"{tag}-{hardware.replicas}-weights.npz", *model.get_weights())
    print("compute dtype", model.layers[-2].compute_dtype, "optimizer",
          type(model.optimizer).__name__, flush=True)
    if hardware.is_chief:
        write_model(model, out / "model.keras", {"name": "tiny"})
        with chdir(out):  # the curves go to metrics/... under `out`
            checkpoints.finish("tiny", "train", "holdout")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:5]),
         *sys.argv[5:6])
