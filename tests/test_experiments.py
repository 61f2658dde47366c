"""`dvc exp run --queue` grids on the tiny configuration (slow)."""

from __future__ import annotations

import json

import pytest

from stages.core.params import merged
from tests.pipeline_project import TINY, Project

pytestmark = pytest.mark.slow


def test_queued_experiments_run_and_show_their_own_metrics(tmp_path):
    project = Project.copy_of_repo(tmp_path, merged(TINY, {"backbones": ["small_cnn"]}))
    for lr in ("0.003", "0.0003"):
        project.dvc("exp", "run", "--queue", "-S", f"models.small_cnn.finetune.lr={lr}")
    project.dvc("queue", "start", "-j", "1")
    _wait_for_queue(project)
    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    runs = _experiments(shown)
    lrs = {run["params"]["models"]["small_cnn"]["finetune"]["lr"]: run for run in runs}
    assert set(lrs) >= {0.003, 0.0003}, lrs.keys()
    aucs = {lr: run["metrics"]["metrics/backbones/small_cnn/holdout.json"]["data"]["roc_auc"]
            for lr, run in lrs.items()}
    assert all(0 <= auc <= 1 for auc in aucs.values())
    names = [run["name"] for run in runs]
    diff = project.dvc("exp", "diff", names[0], names[1]).stdout
    assert "lr" in diff


def _wait_for_queue(project: Project, timeout_s: float = 600) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = project.dvc("queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            failed = [line for line in status.splitlines() if "Failed" in line]
            assert not failed, status + project.dvc("queue", "logs", failed[0].split()[0],
                                                    check=False).stdout
            return
        time.sleep(3)
    raise AssertionError(f"queue did not finish in {timeout_s} s")


def _experiments(shown: list[dict]) -> list[dict]:
    """Flatten `dvc exp show --json` into {name, params, metrics} per experiment."""
    runs = []
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for revision in exp.get("revs", []):
                data = revision.get("data", {})
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                runs.append({"name": revision.get("name") or revision.get("rev"),
                             "params": params, "metrics": data.get("metrics", {})})
    return runs
