"""A throwaway copy of this repository in which the real `dvc` runs the real pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stages.core.params import merged

REPO = Path(__file__).resolve().parents[1]

# Small enough for a 2-core CPU in about a minute, big enough that every stage has work.
TINY = {
    "data": {"synthetic": {"count": 80, "size": 64}},
    "prepare": {"size": 32},
    "augment": {"copies": 1, "balance": True},  # minority copies drawn: augment has work
    "backbones": ["small_cnn", "small_functional_cnn"],
    "models": {
        name: {"train": {"epochs": 1, "batch_size": 16},
               "finetune": {"epochs": 1, "batch_size": 16}}
        for name in ("small_cnn", "small_functional_cnn")
    },
}


class Project:
    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def copy_of_repo(cls, dest: Path, params_override: dict) -> Project:
        files = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
        for name in filter(None, files):
            # data/ and models/ are DVC's outputs, except the photos the guard must flag
            outputs = name.startswith(("data/", "models/")) and not name.startswith(
                "data/external/")
            if (REPO / name).is_file() and not outputs:
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, dest / name)
        project = cls(dest)
        project.set_params(params_override)
        project.git("init", "-q")
        project.git("add", "-A")
        project.git("commit", "-qm", "copy of the pipeline")
        return project

    def set_params(self, override: dict) -> None:
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump(merged(params, override), sort_keys=False))

    def env(self) -> dict:
        env = dict(os.environ)
        # The stages' `python` must be this interpreter, with its packages.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                   GIT_COMMITTER_EMAIL="t@t")
        return env

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(cmd, cwd=self.root, env=self.env(), capture_output=True,
                                text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def read_json(self, path: str) -> dict:
        return json.loads((self.root / path).read_text())

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(Path(sys.executable).parent / "dvc"), *args, check=check)

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("git", *args)

    def stages_run(self, repro_output: str) -> set[str]:
        """Names of the stages `dvc repro` actually ran, from its log."""
        return {line.split("'")[1] for line in repro_output.splitlines()
                if line.startswith("Running stage '")}
