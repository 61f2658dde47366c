"""Is training fed at compute speed? Images/s through the real input pipeline vs from memory.

    python bench/train_input.py --backbone mobilenet_v2 --backbone efficientnet_b0

For each backbone (random weights: speed does not depend on them), at the working resolution
of params.yaml (prepare.size, or --size), it runs the training step that train/finetune run
(train_loop.train_step, under hardware.set_up's strategy) for the same number of steps twice
per round, alternating: once fed by fold_data.epoch_batches (the tf.data pipeline
train/finetune use: per-epoch seeded shuffle, batch, cast, one-hot, prefetch) and once from
one batch already in memory as a tensor (compute only). The ratio pipeline/compute is the
figure to watch: 1.0 means the input pipeline never starves the model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf

from stages.core.classifier import build_classifier, compile_classifier
from stages.core.fold_data import epoch_batches
from stages.core.hardware import Hardware, set_up
from stages.core.params import load_params, model_config
from stages.core.shards import Split
from stages.core.train_loop import train_step


def images_per_second(step, iterator, steps: int, batch: int, strategy) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        probs, _ = step(iterator)
    strategy.experimental_local_results(probs)[0].numpy()  # wait for the last step
    return steps * batch / (time.perf_counter() - start)


def bench(backbone: str, size: int, batch: int, steps: int, rounds: int,
          hardware: Hardware) -> None:
    params = load_params()
    params["models"][backbone]["weights"] = None
    cfg = model_config(params, backbone)
    with hardware.strategy.scope():
        model = build_classifier(cfg, size, n_classes=2)
        compile_classifier(model, 1e-4)
    step = train_step(model, hardware, batch)
    rng = np.random.default_rng(0)
    n = steps * batch
    split = Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                  rng.integers(0, 2, n), np.array([str(i) for i in range(n)]))
    pipeline, _ = epoch_batches(split, 2, batch, seed=0, first_epoch=0, epochs=1000)
    x = tf.constant(split.images[:batch].astype("float32"))
    y = tf.one_hot(split.labels[:batch], 2)
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat()
    fed_iter, memory_iter = (iter(hardware.strategy.experimental_distribute_dataset(ds))
                             for ds in (pipeline, in_memory))
    # warm-up: graph tracing, allocations
    images_per_second(step, fed_iter, 3, batch, hardware.strategy)
    images_per_second(step, memory_iter, 3, batch, hardware.strategy)
    fed, compute = [], []
    for _ in range(rounds):  # alternate, so drifting machine load hits both alike
        fed.append(images_per_second(step, fed_iter, steps, batch,
                                     hardware.strategy))
        compute.append(images_per_second(step, memory_iter, steps, batch,
                                         hardware.strategy))
    fed_m, compute_m = float(np.median(fed)), float(np.median(compute))
    print(f"{backbone:>14} {size:>4}px batch {batch}: pipeline {fed_m:7.1f} img/s, "
          f"in-memory {compute_m:7.1f} img/s, ratio {fed_m / compute_m:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", action="append", help="models.<name> (repeatable)")
    parser.add_argument("--size", type=int, help="pixels; default prepare.size")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    params = load_params()
    hardware = set_up(params)
    print(hardware.describe(), flush=True)
    size = args.size or params["prepare"]["size"]
    for backbone in args.backbone or ["mobilenet_v2", "efficientnet_b0"]:
        bench(backbone, size, args.batch, args.steps, args.rounds, hardware)


if __name__ == "__main__":
    main()
