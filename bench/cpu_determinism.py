"""Does "same params, same metrics" hold across CPUs? oneDNN picks its kernels by the CPU's
instruction set, so we train the same small model under different kernel choices on this one
machine and compare the weights.

    python bench/cpu_determinism.py

Each setting runs in a fresh process: the default (oneDNN on, the widest ISA this CPU has),
oneDNN limited to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`, what an older CPU would run), and oneDNN
off (`TF_ENABLE_ONEDNN_OPTS=0`, TensorFlow's Eigen kernels), each twice. It prints a hash of
the trained weights and the validation AUC per run: equal hashes mean bit-identical training.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

SETTINGS = {
    "oneDNN, widest ISA (default)": {},
    "oneDNN, at most AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN off (Eigen)": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "oneDNN off, at most AVX2": {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}


def train_once() -> dict:
    """One seeded training run of a small CNN (convolutions, BatchNorm, Adam) on fixed data."""
    import keras
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from stages.core.phase import seed_everything

    seed_everything(42)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 256)
    images = rng.normal(120, 30, (256, 32, 32, 3)).astype("float32")
    images[labels == 1, 8:20, 8:20] += 40
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(images[:192], labels[:192], epochs=3, batch_size=32, shuffle=False, verbose=0)
    digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
    auc = roc_auc_score(labels[192:], model.predict(images[192:], verbose=0)[:, 1])
    return {"weights_sha256": digest[:16], "val_auc": round(float(auc), 6)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(train_once()))
        return
    print("| setting | run | weights sha256 | val AUC |\n|---|---|---|---|")
    for name, extra in SETTINGS.items():
        for run in (1, 2):
            out = subprocess.run([sys.executable, __file__, "--child"], capture_output=True,
                                 text=True, env={**os.environ, **extra}, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"| {name} | {run} | {result['weights_sha256']} | {result['val_auc']} |",
                  flush=True)


if __name__ == "__main__":
    main()
