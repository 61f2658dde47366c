"""`dvc exp run --queue` grids on the tiny configuration (slow)."""

from __future__ import annotations

import json

import pytest

from stages.core.params import merged
from tests.pipeline_project import TINY, Project

pytestmark = pytest.mark.slow


def test_queued_experiments_run_and_show_their_own_metrics(tmp_path):
    # A frozen backbone with a logistic head: the second run restores the stages before
    # train from DVC's run-cache and refits only the head, as the profiles' users would.
    project = Project.copy_of_repo(tmp_path, merged(TINY, {"backbones": ["lite0_frozen"]}))
    for weight in ("none", "balanced"):
        project.dvc("exp", "run", "--queue", "-S",
                    f"models.lite0_frozen.train.class_weight={weight}")
    project.dvc("queue", "start", "-j", "1")
    _wait_for_queue(project)
    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    runs = _experiments(shown)
    weights = {run["params"]["models"]["lite0_frozen"]["train"]["class_weight"]: run
               for run in runs}
    assert set(weights) >= {"none", "balanced"}, weights.keys()
    scores = {w: run["metrics"]["metrics/backbones/lite0_frozen/holdout.json"]["data"]
              for w, run in weights.items()}
    assert all(0 <= s["roc_auc"] <= 1 for s in scores.values())
    # Class weights move the arg-max towards the minority class: its recall rises.
    assert scores["balanced"]["recall"] >= scores["none"]["recall"]
    names = [run["name"] for run in runs]
    diff = project.dvc("exp", "diff", names[0], names[1]).stdout
    assert "class_weight" in diff


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
