"""How train and finetune use the machine: distribution strategy, mixed precision and XLA.

params.yaml `compute:`; each value `auto` decides from what this process sees:
- strategy: MultiWorkerMirroredStrategy when TF_CONFIG describes a cluster of several tasks,
  MirroredStrategy when several GPUs are visible, else TensorFlow's default strategy;
- precision: mixed_float16 on a GPU (the output layer stays float32, see classifier._head),
  float32 on a CPU, where float16 maths is emulated and slower;
- jit_compile (XLA): on a GPU, off on a CPU.
The models' `batch_size` is per replica: a step trains on batch_size × replicas images.
In a cluster only the chief writes models, metrics and curves (`is_chief`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from stages.core.params import ParamsError, choice, get

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def usable_cores() -> int:
    """The cores this process may use (a container's CPU set, not the host's count), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 8))


@dataclass(frozen=True)
class Hardware:
    strategy: Any  # tf.distribute.Strategy
    kind: str  # default | mirrored | multi_worker
    precision: str  # float32 | mixed_float16 | mixed_bfloat16
    jit_compile: bool
    is_chief: bool

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def describe(self) -> str:
        return (f"{self.kind} strategy, {self.replicas} replica(s), {self.precision}, "
                f"XLA {'on' if self.jit_compile else 'off'}")


def cluster_spec() -> dict | None:
    """TF_CONFIG as a dict when it describes more than one task, else None."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = json.loads(raw)
        tasks = sum(len(addresses) for addresses in config["cluster"].values())
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ParamsError(f"TF_CONFIG is not a valid cluster description ({err}); see the "
                          "README section 'Several machines'") from err
    return config if tasks > 1 else None


def _is_chief(config: dict | None) -> bool:
    if config is None:
        return True
    task = config.get("task", {})
    if "chief" in config["cluster"]:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def set_up(params: dict) -> Hardware:
    """Pick and create the strategy, set the precision policy. Call before any other
    TensorFlow work: MultiWorkerMirroredStrategy must be created first in the process."""
    import keras
    import tensorflow as tf

    strategy = choice(params, "compute.strategy", STRATEGIES)
    precision = choice(params, "compute.precision", PRECISIONS)
    jit = get(params, "compute.jit_compile")
    if jit not in ("auto", True, False):
        raise ParamsError(f"params.yaml: 'compute.jit_compile' must be auto, true or false; "
                          f"got {jit!r}")
    config = cluster_spec()
    gpus = tf.config.list_physical_devices("GPU")
    if strategy == "auto":
        strategy = "multi_worker" if config else "mirrored" if len(gpus) > 1 else "default"
    if strategy == "multi_worker" and config is None:
        raise ParamsError("compute.strategy is multi_worker but TF_CONFIG describes no cluster "
                          "of several tasks; see the README section 'Several machines'")
    if strategy == "mirrored":
        # All GPUs; on a machine without, the logical CPU devices (one unless configured).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        created = tf.distribute.MirroredStrategy([d.name for d in devices])
    elif strategy == "multi_worker":
        created = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        created = tf.distribute.get_strategy()
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    keras.mixed_precision.set_dtype_policy(precision)
    return Hardware(created, strategy, precision, bool(gpus) if jit == "auto" else jit,
                    _is_chief(config))
