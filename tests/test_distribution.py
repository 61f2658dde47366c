"""tf.distribute through the pipeline's one training path (stages/core/train_loop.py).

Each run is a separate process (tests/distributed_worker.py): logical devices and a cluster
must be set up before TensorFlow initialises, which in this process it already has.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _start(out: Path, strategy: str, batch_size: int, logical_cpus: int = 1,
           tf_config: dict | None = None, precision: str = "float32") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.distributed_worker", str(out), strategy, str(batch_size),
         str(logical_cpus), precision],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, timeout: int = 240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_mirrored_over_two_cpus_trains_like_one_device_with_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _finish(_start(one, "default", 16))
    output = _finish(_start(two, "mirrored", 8, logical_cpus=2))  # 2 replicas x 8 = 16
    assert "Epoch 4/4" in output
    single, mirrored = _weights(one / "chief-1-weights.npz"), _weights(two / "chief-2-weights.npz")
    for a, b in zip(single, mirrored, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(single[0], 0)
    assert (two / "model.keras").is_file()


def test_mixed_float16_trains_with_loss_scaling_and_a_float32_output(tmp_path):
    output = _finish(_start(tmp_path, "default", 16, precision="mixed_float16"))
    assert "mixed_float16" in output and "Epoch 4/4" in output
    assert "compute dtype float16 optimizer LossScaleOptimizer" in output, output[-2000:]
    weights = _weights(tmp_path / "chief-1-weights.npz")
    assert all(np.isfinite(w).all() for w in weights)
    assert weights[-2].dtype == np.float32  # the output layer's kernel


@pytest.mark.slow
def test_two_workers_on_loopback_end_with_the_same_weights_and_only_the_chief_saves(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    outs = [tmp_path / f"w{i}" for i in range(2)]
    workers = []
    for index, out in enumerate(outs):
        out.mkdir()
        workers.append(_start(out, "auto", 8, tf_config={
            "cluster": cluster, "task": {"type": "worker", "index": index}}))
    logs = [_finish(worker) for worker in workers]
    for log in logs:
        assert "multi_worker strategy, 2 replica(s)" in log and "Epoch 4/4" in log, log[-2000:]
    chief, other = _weights(outs[0] / "chief-2-weights.npz"), _weights(
        outs[1] / "worker-2-weights.npz")
    for a, b in zip(chief, other, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (outs[0] / "model.keras").is_file() and (outs[0] / "metrics").is_dir()
    assert not (outs[1] / "model.keras").exists() and not (outs[1] / "metrics").exists()


@pytest.mark.parametrize("compute, tf_config, message", [
    ({"strategy": "gpu"}, None, "'compute.strategy' must be one of"),
    ({"precision": "half"}, None, "'compute.precision' must be one of"),
    ({"jit_compile": "yes"}, None, "'compute.jit_compile' must be auto, true or false"),
    ({"strategy": "multi_worker"}, None, "TF_CONFIG describes no cluster"),
    ({}, "{not json", "TF_CONFIG is not a valid cluster description"),
])
def test_bad_compute_settings_name_the_key(monkeypatch, compute, tf_config, message):
    from stages.core.hardware import set_up
    from stages.core.params import ParamsError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    settings = {"strategy": "auto", "precision": "auto", "jit_compile": "auto", **compute}
    with pytest.raises(ParamsError, match=message):
        set_up({"compute": settings})


@pytest.mark.parametrize("cluster, task, chief", [
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
])
def test_only_one_task_of_a_cluster_is_chief(monkeypatch, cluster, task, chief):
    from stages.core.hardware import _is_chief, cluster_spec

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert _is_chief(cluster_spec()) is chief
