"""What DVC itself costs per stage, apart from the stage's command: the waiting that is left
between a profile's wall time and its work (bench/profile_time.py).

    python bench/dvc_overhead.py                       # 19 and 55 stages, 1 and 24 deps each
    python bench/dvc_overhead.py --stages 55 --deps 24 --repeat 3

Builds a throwaway git + DVC repository whose stages run a shell `echo` (no Python, no
imports), each with `--deps` small files as dependencies (the code modules a pipeline stage
lists) and one output, runs `dvc repro` of all of them and prints the seconds per stage and
the size of the dvc.lock it wrote. DVC rewrites the whole lock after every stage (it parses
and dumps it with ruamel.yaml), so a stage costs more the more stages and deps the lock holds:
what one stage per backbone × fold, each listing its code modules, pays in a 5-fold profile.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from stages.app.profile import cpu_model


def dvc(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)


def pipeline(n_stages: int, n_deps: int) -> dict:
    deps = [f"code/module{j}.py" for j in range(n_deps)]
    return {"stages": {"work": {
        "matrix": {"i": list(range(n_stages))},
        "cmd": "echo ${item.i} > out/${item.i}.txt",
        "deps": deps,
        "outs": ["out/${item.i}.txt"],
    }}}


def measure(n_stages: int, n_deps: int) -> tuple[float, int]:
    """(seconds of `dvc repro` per stage, bytes of the dvc.lock it wrote)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        dvc("init", "-q", cwd=root)
        dvc("config", "core.analytics", "false", cwd=root)
        (root / "code").mkdir()
        (root / "out").mkdir()
        for j in range(n_deps):
            (root / "code" / f"module{j}.py").write_text(f"# module {j}\n" * 50)
        (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline(n_stages, n_deps)))
        started = time.monotonic()
        dvc("repro", "-q", "--no-run-cache", cwd=root)
        seconds = time.monotonic() - started
        return seconds / n_stages, (root / "dvc.lock").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[19, 55])
    parser.add_argument("--deps", type=int, nargs="+", default=[1, 24])
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (the median)")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}\n\n| stages | deps per stage | dvc.lock kB | s per stage |"
          "\n|---|---|---|---|")
    for n_stages in args.stages:
        for n_deps in args.deps:
            runs = sorted(measure(n_stages, n_deps) for _ in range(args.repeat))
            per_stage, size = runs[len(runs) // 2]
            print(f"| {n_stages} | {n_deps} | {size / 1000:.0f} | {per_stage:.2f} |", flush=True)


if __name__ == "__main__":
    main()
