"""Wall time of `dvc repro` from scratch, stage by stage.

    python bench/repro_stages.py                      # the embedded default (params.yaml)
    python bench/repro_stages.py -S prepare.size=128  # with params changed, as dvc exp run -S
    python bench/repro_stages.py --rev 8c58248        # an older commit, to compare

Clones this repository (committed state) into a temporary folder, runs `dvc repro` there with
DVC's run-cache off (so every stage really runs) and times each stage from the moment DVC
prints "Running stage" to the next stage's (the last one to the end), printing a table
sorted by time. Run it from the repository root with the venv active.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from stages.core.params import ParamsLoader, with_assignment

REPO = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def set_params(path: Path, assignments: list[str]) -> None:
    params = yaml.load(path.read_text(), Loader=ParamsLoader)
    for assignment in assignments:
        params = with_assignment(params, assignment)  # -S lr=5e-5 is a number
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def timed_repro(workdir: Path) -> tuple[list[tuple[str, float]], float]:
    started = last = time.monotonic()
    current, times = None, []
    process = subprocess.Popen(["dvc", "repro", "--no-run-cache"], cwd=workdir, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in process.stdout:
        match = STAGE_LINE.match(line)
        if match:
            now = time.monotonic()
            if current:
                times.append((current, now - last))
            current, last = match.group(1), now
    if process.wait() != 0:
        sys.exit(f"dvc repro failed in {workdir}")
    end = time.monotonic()
    if current:
        times.append((current, end - last))
    return times, end - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", dest="set", action="append", default=[], help="key=value")
    parser.add_argument("--rev", help="commit to measure (default: HEAD)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="repro-bench-") as tmp:
        workdir = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
        if args.rev:
            subprocess.run(["git", "checkout", "-q", args.rev], cwd=workdir, check=True)
        set_params(workdir / "params.yaml", args.set)
        times, total = timed_repro(workdir)
    print(f"{'stage':<40} {'seconds':>8} {'share':>6}")
    for stage, seconds in sorted(times, key=lambda item: -item[1]):
        print(f"{stage:<40} {seconds:8.1f} {seconds / total:6.1%}")
    print(f"{'total dvc repro':<40} {total:8.1f}")


if __name__ == "__main__":
    main()
