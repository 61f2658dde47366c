"""Where a profile's wall time goes: real work (features, head fits, epochs, evaluation
maths, export) against everything else (process start-up, imports, reading shards, DVC).

    python bench/profile_time.py uda1          # profiles/uda1.yaml, the features cache empty
    python bench/profile_time.py uda1 --results --keep   # copy results here, keep the clone

Clones the committed repository beside it (so the profile's ../shared/data paths hold), runs
`python -m stages.app.profile run <name>` there (a fresh clone: no run-cache, no features)
with PIPELINE_WORK_LOG set (core/worklog.py records each piece of work's seconds), times
each stage from DVC's "Running stage" lines, and prints per stage kind the wall seconds and
the work inside them, and the ratio of the two for the whole run. Run it from the repository
root with the venv active.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stages.app.profile import cpu_model

REPO = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def run(name: str, workdir: Path, log: Path) -> tuple[dict[str, float], float]:
    """{stage: wall seconds}, and the whole `dvc repro`'s seconds."""
    env = {**os.environ, "PIPELINE_WORK_LOG": str(log)}
    times: dict[str, float] = {}
    current, last = None, time.monotonic()
    started = last
    tail = collections.deque(maxlen=30)  # shown if the run fails
    process = subprocess.Popen([sys.executable, "-m", "stages.app.profile", "run", name],
                               cwd=workdir, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    for line in process.stdout:
        tail.append(line)
        match = STAGE_LINE.match(line)
        if match or line.startswith(f"profile {name}:"):
            now = time.monotonic()
            if current:
                times[current] = now - last
            current, last = (match.group(1) if match else None), now
    if process.wait() != 0:
        sys.exit("".join(tail) + f"\nthe profile run failed in {workdir} (its last lines above)")
    return times, sum(times.values()) or time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a profile in profiles/")
    parser.add_argument("--results", action="store_true",
                        help="copy the run's results/<name>/ into this repository (they are "
                             "the committed code's results: commit them)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the clone, with the profile's models (e.g. to adapt them)")
    args = parser.parse_args()
    workdir = REPO.parent / f"{REPO.name}-bench-{args.name}"
    shutil.rmtree(workdir, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
    log = workdir / "work.jsonl"
    try:
        stages, total = run(args.name, workdir, log)
        records = [json.loads(line) for line in log.read_text().splitlines()]
        if args.results:
            shutil.rmtree(REPO / "results" / args.name, ignore_errors=True)
            shutil.copytree(workdir / "results" / args.name, REPO / "results" / args.name)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = collections.Counter()
    for stage, seconds in stages.items():
        wall[stage.split("@")[0]] += seconds
    work = collections.Counter()
    by_kind = collections.Counter()
    for r in records:
        work[r["module"]] += r["seconds"]
        by_kind[r["work"]] += r["seconds"]
    print(f"profile {args.name}, CPU: {cpu_model()}, {os.cpu_count()} cores, "
          "features cache empty\n")
    print("| stage kind | stages | wall s | work s |\n|---|---|---|---|")
    kinds = collections.Counter(stage.split("@")[0] for stage in stages)
    for kind in kinds:
        print(f"| {kind} | {kinds[kind]} | {wall[kind]:.0f} | {work.get(kind, 0):.0f} |")
    print("\n| work | s |\n|---|---|")
    for kind, seconds in by_kind.most_common():
        print(f"| {kind} | {seconds:.0f} |")
    done = sum(by_kind.values())
    print(f"\ndvc repro wall {total:.0f} s, work {done:.0f} s: wall / work = "
          f"{total / max(done, 1e-9):.2f}")


if __name__ == "__main__":
    main()
