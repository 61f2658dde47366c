"""What each lever of a profile buys: the profile against one variant per lever, paired.

    python bench/lever_gain.py uda1                   # every lever of uda1 in bench/levers.yaml
    python bench/lever_gain.py uda1 --lever clinical  # one
    python bench/lever_gain.py --table [--write]      # the table in docs/research.md

Each run is a fresh clone of the committed repository beside this one (the profiles'
../shared/data paths hold there), running `python -m stages.app.profile run <profile> --keep
-S ...`; a clone whose run had these settings and HEAD's stage code, params and profiles is
reused (uncommitted changes to those are refused: a clone would not have them). The clones share
this repository's features cache (.cache/features: keyed by extractor and pixels, so a hit is
the number a recomputation gives), so a variant computes only features it changes. Each
lever's gain (with − without, 95 % paired bootstrap interval, bench/paired_gain.py) goes to
results/levers/<profile>/<lever>.json with the commit, CPU and date; the table is made from
those files. Run it from the repository root with the venv active.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from paired_gain import paired_gains

from stages.app.profile import cpu_model, profile_params

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "bench" / "levers.yaml"
RESULTS = REPO / "results" / "levers"
DOCS = REPO / "docs" / "research.md"
# What a run's figures follow from: a clone made at another commit with these unchanged is reused.
RUN_INPUTS = ["stages", "dvc.yaml", "params.yaml", "profiles", "data/external"]
TABLE_START, TABLE_END = "<!-- levers:start -->", "<!-- levers:end -->"


def run_folder(profile: str, settings: list[str], name: str) -> Path:
    """A clone of HEAD with the profile run under `settings`, reused when it already holds
    that run."""
    folder = REPO.parent / f"{REPO.name}-levers-{profile}-{name}"
    done = folder / "results" / profile / "run.json"
    if done.exists():
        run = json.loads(done.read_text())
        same_code = not subprocess.run(["git", "diff", "--quiet", run["commit"], "HEAD", "--",
                                        *RUN_INPUTS], cwd=REPO).returncode
        if same_code and run["settings_on_top"] == settings:
            print(f"{folder.name}: reused ({run['commit']}, {settings or 'the profile as is'})")
            return folder
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(folder)], check=True)
    (folder / ".cache").mkdir()
    (REPO / ".cache" / "features").mkdir(parents=True, exist_ok=True)
    (folder / ".cache" / "features").symlink_to(REPO / ".cache" / "features")
    command = [sys.executable, "-m", "stages.app.profile", "run", profile, "--keep"]
    for setting in settings:
        command += ["-S", setting]
    started = time.monotonic()
    with open(folder / "lever-run.log", "w") as log:
        if subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT).returncode:
            sys.exit(f"the run failed: see {folder / 'lever-run.log'}")
    print(f"{folder.name}: {time.monotonic() - started:.0f} s ({settings})", flush=True)
    return folder


def run_commit(run: Path, profile: str) -> str:
    return json.loads((run / "results" / profile / "run.json").read_text())["commit"]


def class_bias_gain(run: Path) -> tuple[int, dict[str, dict[str, float]]]:
    """compare's cross-fitted gain of the decision rule, for the served model."""
    estimate = json.loads((run / "metrics" / "summary.json").read_text())["served"]["estimate"]
    gain = estimate["class_bias_gain"]
    return estimate["n_images"], {"balanced_accuracy": {
        "without": gain["without_bias"], "with": gain["with_bias"], "gain": gain["gain"],
        "low": gain["gain_ci_low"], "high": gain["gain_ci_high"]}}


def measure(profile: str, only: list[str]) -> None:
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *RUN_INPUTS], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout
    if dirty:
        sys.exit(f"uncommitted changes the runs' clones would not have; commit them:\n{dirty}")
    spec = yaml.safe_load(SPEC.read_text())[profile]
    levers = {k: v for k, v in spec["levers"].items() if not only or k in only}
    runs: dict[tuple[str, ...], Path] = {}

    def run_of(settings: list[str], name: str) -> Path:
        if tuple(settings) not in runs:
            runs[tuple(settings)] = run_folder(profile, settings, name)
        return runs[tuple(settings)]

    for name, lever in levers.items():
        on_top = list(lever.get("on_top", []))  # both runs' settings, e.g. one backbone
        base = run_of(on_top, f"{name}-base" if on_top else "base")
        variant = run_of(on_top + list(lever["set"]), name)
        backbones = profile_params(profile, on_top)["backbones"]
        with_it, without = (base, variant) if lever.get("in_profile") else (variant, base)
        if lever.get("score", "paired") == "class_bias_gain":
            (n, metrics), scored = class_bias_gain(with_it), ["served"]
        else:
            n, gains = paired_gains(without, with_it, backbones, lever.get("part", "test"))
            metrics = {m: {"without": g["a"], "with": g["b"], "gain": g["gain"],
                           "low": g["low"], "high": g["high"]} for m, g in gains.items()}
            scored = backbones  # their mean
        record = {"profile": profile, "lever": name, "what": lever["what"],
                  "in_profile": bool(lever.get("in_profile")), "on_top": on_top,
                  "set": list(lever["set"]),
                  "part": lever.get("part", "test"), "scored": scored, "n_images": n,
                  "metrics": {m: {k: round(float(v), 4) for k, v in g.items()}
                              for m, g in metrics.items()},
                  "commits": sorted({run_commit(r, profile) for r in (with_it, without)}),
                  "cpu": cpu_model(),
                  "date": datetime.now(UTC).strftime("%Y-%m-%d")}
        out = RESULTS / profile / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{out.relative_to(REPO)}: " + "; ".join(
            f"{m} {g['gain']:+.3f} ({g['low']:+.3f} to {g['high']:+.3f})"
            for m, g in record["metrics"].items() if m in spec["metrics"]), flush=True)


def _label(metric: str) -> str:
    if metric == "balanced_accuracy":
        return "BMA"
    if metric == "roc_auc":
        return "ROC AUC"
    return metric.removeprefix("roc_auc_").replace("_", " ") + " AUC"  # one class's


def _scored(backbones: list[str]) -> str:
    if backbones == ["served"]:
        return "the served model (compare's estimate)"
    return backbones[0] if len(backbones) == 1 else f"mean of {len(backbones)} backbones"


def _cell(g: dict[str, float]) -> str:
    gain = f"{g['gain']:+.3f}"
    if g["low"] > 0 or g["high"] < 0:  # the interval leaves out zero
        gain = f"**{gain}**"
    return f"{g['without']:.3f} → {g['with']:.3f}: {gain} ({g['low']:+.3f} to {g['high']:+.3f})"


def table() -> str:
    spec = yaml.safe_load(SPEC.read_text())
    rows = ["| profile | lever | in the profile | gain: without → with: with − without "
            "(95 % CI) | images, scored | measured |", "|---|---|---|---|---|---|"]
    for profile, entry in spec.items():
        for name in entry["levers"]:
            path = RESULTS / profile / f"{name}.json"
            if not path.exists():
                rows.append(f"| {profile} | {name} | | not measured | | |")
                continue
            r = json.loads(path.read_text())
            gains = "; ".join(f"{_label(m)} {_cell(r['metrics'][m])}" for m in entry["metrics"]
                              if m in r["metrics"])
            part = f" (`{r['part']}`)" if r["part"] != "test" else ""
            rows.append(f"| {profile} | {r['what']}{part} | "
                        f"{'yes' if r['in_profile'] else 'no'} | {gains} | "
                        f"{r['n_images']}, {_scored(r['scored'])} | "
                        f"{' '.join(r['commits'])}, {r['date']}, {r['cpu']} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", help="a profile of bench/levers.yaml")
    parser.add_argument("--lever", nargs="+", default=[], help="only these levers")
    parser.add_argument("--table", action="store_true", help="print the table of results")
    parser.add_argument("--write", action="store_true", help="with --table: into docs")
    args = parser.parse_args()
    if args.table:
        text = table()
        if args.write:
            docs = DOCS.read_text()
            if TABLE_START not in docs or TABLE_END not in docs:
                sys.exit(f"{DOCS} has no {TABLE_START} ... {TABLE_END} to write between")
            head, _, rest = docs.partition(TABLE_START)
            _, _, tail = rest.partition(TABLE_END)
            DOCS.write_text(f"{head}{TABLE_START}\n{text}\n{TABLE_END}{tail}")
        print(text)
    elif args.profile:
        measure(args.profile, args.lever)
    else:
        parser.error("name a profile, or --table")


if __name__ == "__main__":
    main()
