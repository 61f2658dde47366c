"""Would another CPU type reproduce the committed metrics? `dvc repro` of the committed
pipeline under other kernel choices on this one machine, each compared with `dvc metrics diff`.

    python bench/cpu_portability.py                  # the embedded default (params.yaml)
    python bench/cpu_portability.py --settings default eigen

Another CPU type runs other low-level kernels: oneDNN picks its convolution and matmul
kernels by instruction set and cache sizes, OpenBLAS (NumPy, scikit-learn) its own by CPU
model. Each setting here forces another choice on this machine, the closest we can come to
a second CPU type without one. Each runs in a fresh clone of the committed state, with an
empty features cache and DVC's run-cache off, so every stage really runs; the table gives
how many values `dvc metrics diff HEAD` shows changed (0: the committed figures, bit for bit)
and which DVC outputs got other bytes. Run it from the repository root with the venv active.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from stages.app.profile import cpu_model

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": {},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "openblas-haswell": {"OPENBLAS_CORETYPE": "Haswell"},
}


def output_hashes(lock: Path) -> dict[str, str]:
    """{output path: md5} of every stage output recorded in a dvc.lock."""
    stages = yaml.safe_load(lock.read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def run_setting(env: dict[str, str]) -> tuple[int, list[str], float]:
    """(changed metric values, outputs with other bytes, seconds) of one fresh run."""
    with tempfile.TemporaryDirectory(prefix="portability-") as tmp:
        workdir = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(REPO), str(workdir)], check=True)
        started = time.monotonic()
        subprocess.run(["dvc", "repro", "--no-run-cache"], cwd=workdir, check=True,
                       env={**os.environ, **env}, stdout=subprocess.DEVNULL)
        seconds = time.monotonic() - started
        diff = subprocess.run(["dvc", "metrics", "diff", "HEAD", "--json"], cwd=workdir,
                              check=True, capture_output=True, text=True).stdout
        changed = sum(len(values) for values in json.loads(diff or "{}").values())
        committed = output_hashes(REPO / "dvc.lock")
        now = output_hashes(workdir / "dvc.lock")
        other = sorted(p for p in committed if now.get(p) != committed[p])
    return changed, other, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores")
    print("| setting | environment | metric values changed | outputs with other bytes "
          "| seconds |\n|---|---|---|---|---|")
    for name in args.settings:
        env = SETTINGS[name]
        changed, other, seconds = run_setting(env)
        shown = ", ".join(other[:4]) + (f" (+{len(other) - 4})" if len(other) > 4 else "")
        assignments = " ".join(f"{k}={v}" for k, v in env.items()) or "(none)"
        print(f"| {name} | {assignments} | {changed} | {shown or 'none'} | {seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
