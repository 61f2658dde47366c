"""Profiles: named settings for real data, run from the committed params.yaml, with their
results committed under results/<name>/ and checked against the code that would make them.

    python -m stages.app.profile run uda1                 # profiles/uda1.yaml over params.yaml
    python -m stages.app.profile run uda1 -S seed=7       # a variation on top (not kept)
    python -m stages.app.profile run uda1 --keep          # leave it in the workspace after
    python -m stages.app.profile check                    # which committed results are stale
    python -m stages.app.profile table [--write|--check]  # the README's table of profiles

`run` writes params.yaml = the committed params.yaml (git HEAD, never what an earlier run left
in the workspace) with the profile's keys, runs `dvc repro`, copies what the run produced
(summary, leaderboard, served card, model card, dvc.lock, params, wall time and CPU) into
results/<name>/, then puts the workspace back to the committed default (`git checkout`,
`dvc checkout`) unless --keep. results/<name>/summary.json is a metric in dvc.yaml, so
`dvc metrics diff` compares profiles between commits and branches.

A profile's results are current when DVC, given its dvc.lock and its params, finds no code
or params change in any stage (`dvc status`); otherwise `check` names the change.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from stages.core.errors import PipelineError
from stages.core.params import ParamsLoader, load_params, merged, with_assignment

PROFILES_DIR = Path("profiles")
RESULTS_DIR = Path("results")
README = Path("README.md")
# What the pipeline writes that a profile run replaces, restored from git afterwards.
WORKSPACE_FILES = ["params.yaml", "dvc.lock", "metrics", "models/served.json",
                   "models/MODEL_CARD.md", "models/guard/guard.json",
                   "models/.gitignore", "models/heads/.gitignore"]  # DVC adds the outs
RESULT_FILES = {  # results/<name>/<key> ← value
    "summary.json": "metrics/summary.json",
    "leaderboard.md": "metrics/leaderboard.md",
    "served.json": "models/served.json",
    "MODEL_CARD.md": "models/MODEL_CARD.md",
    "subgroups.json": "metrics/subgroups/served.json",
    "guard.json": "metrics/guard.json",
    "dvc.lock": "dvc.lock",
}
TABLE_START, TABLE_END = "<!-- profiles:start -->", "<!-- profiles:end -->"


def git(*args: str, check: bool = True) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True,
                          check=check).stdout


def dvc(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """DVC of this environment, found without the venv on PATH (as CI calls `check`)."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], **kwargs)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def profile_params(name: str, assignments: list[str] = ()) -> dict[str, Any]:
    """The committed params.yaml with profiles/<name>.yaml's keys (and `-S` ones) set."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise PipelineError(f"{path} not found; profiles: {', '.join(known)}")
    committed = yaml.load(git("show", "HEAD:params.yaml"), Loader=ParamsLoader)
    params = merged(committed, load_params(path))
    for assignment in assignments:
        params = with_assignment(params, assignment)
    return params


def write_params(params: dict[str, Any], path: Path = Path("params.yaml")) -> None:
    path.write_text(yaml.safe_dump(params, sort_keys=False, default_flow_style=None))


def restore_workspace() -> None:
    """The committed default back in the workspace: files from git, outputs from DVC's cache.
    The profile's own model folders (and the .gitignore files DVC staged for them) go; the
    default's models come back from the cache."""
    git("checkout", "HEAD", "--", *WORKSPACE_FILES)
    git("reset", "-q", "--", "models", "metrics")
    git("clean", "-fdq", "--", "metrics", "models")
    git("clean", "-fdXq", "--", "models")
    dvc("checkout", "--quiet", check=False)


def collect(name: str, params: dict[str, Any], seconds: float, assignments: list[str]) -> Path:
    out = RESULTS_DIR / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for target, source in RESULT_FILES.items():
        if Path(source).exists():
            shutil.copyfile(source, out / target)
    write_params(params, out / "params.yaml")
    run = {"profile": name, "settings_on_top": list(assignments), "wall_seconds": round(seconds),
           "cpu": cpu_model(), "date": datetime.now(UTC).strftime("%Y-%m-%d"),
           "commit": git("rev-parse", "--short", "HEAD").strip()}
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return out


def run(name: str, assignments: list[str], keep: bool) -> None:
    dirty = git("status", "--porcelain", "--", *WORKSPACE_FILES).strip()
    if dirty:
        raise PipelineError("uncommitted changes in what a profile run replaces (commit or "
                            f"stash them first):\n{dirty}")
    params = profile_params(name, assignments)
    write_params(params)
    # The default's lock entries would stay beside the profile's (DVC rewrites only the
    # stages it runs), and DVC re-reads and rewrites the whole lock after every stage: a
    # profile's run starts without one (restore_workspace brings it back).
    Path("dvc.lock").unlink(missing_ok=True)
    started = time.monotonic()
    try:
        dvc("repro", check=True)
        out = collect(name, params, time.monotonic() - started, assignments)
        print(f"profile {name}: {time.monotonic() - started:.0f} s; results in {out}/ "
              f"(commit them: git add {out})")
    except subprocess.CalledProcessError as err:
        raise PipelineError(f"dvc repro failed (exit {err.returncode}); the workspace holds "
                            "the failed run: fix, then rerun this command") from None
    finally:
        if not keep:
            restore_workspace()


def stale_reasons(name: str) -> list[str]:
    """What changed since results/<name>/ were made: stage → changed code or params, as
    `dvc status` sees it with that run's dvc.lock and params (data folders aside, which
    follow from code and params)."""
    results = RESULTS_DIR / name
    if not (results / "dvc.lock").exists():
        return ["no results"]
    with tempfile.TemporaryDirectory(prefix=f"profile-{name}-") as tmp:
        root = Path(tmp)
        for item in ["dvc.yaml", "stages", ".dvcignore"]:
            copy = shutil.copytree if Path(item).is_dir() else shutil.copyfile
            copy(item, root / item, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                       if Path(item).is_dir() else {}))
        write_params(profile_params(name), root / "params.yaml")
        shutil.copyfile(results / "dvc.lock", root / "dvc.lock")
        dvc("init", "--no-scm", "-q", cwd=root, check=True)
        status = json.loads(dvc("status", "--json", cwd=root, capture_output=True, text=True,
                                check=True).stdout or "{}")
    reasons = []
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else [changes]:
            if not isinstance(change, dict):
                reasons.append(f"{stage}: {change}")
                continue
            deps = change.get("changed deps", {})
            changed = [f"{path} ({', '.join(v) if isinstance(v, dict) else v})"
                       for path, v in deps.items()
                       if path == "params.yaml" or (v == "modified" and
                                                    not path.startswith(("data/", "models/",
                                                                         "metrics/")))]
            if changed:
                reasons.append(f"{stage}: {'; '.join(changed)}")
    return reasons


def table() -> str:
    """The README's table of profiles, from results/*/ (and whether each is current)."""
    rows = ["| profile | served model | estimate (95 % CI) | at the referral threshold | "
            "OOD guard flags | lockbox (the served model) | wall time, CPU | results |",
            "|---|---|---|---|---|---|---|---|"]
    for spec in sorted(PROFILES_DIR.glob("*.yaml")):
        name, results = spec.stem, RESULTS_DIR / spec.stem
        if not (results / "summary.json").exists():
            rows.append(f"| [{name}]({spec}) | | | | | | | not run |")
            continue
        served = json.loads((results / "summary.json").read_text())["served"]
        run_info = json.loads((results / "run.json").read_text())
        est, lockbox = served["estimate"], served.get("lockbox")
        stale = stale_reasons(name)
        rows.append(
            f"| [{name}]({spec}) | {served['name']} | {_headline(est)} | "
            f"{_referral(served['decision'], est['referral'])} | "
            f"{_guard(results / 'guard.json')} | "
            f"{_headline(lockbox) if lockbox else '—'} | "
            f"{run_info['wall_seconds'] / 60:.1f} min, {run_info['cpu']} | "
            f"{'current' if not stale else 'STALE: ' + '; '.join(stale)[:200]} |")
    return "\n".join(rows)


def _referral(decision: dict, referral: dict) -> str:
    """What the threshold promises, what it achieved out of fold, and what the promise costs
    (the plain rule's specificity)."""
    promise = (f"sensitivity ≥ {decision['target_sensitivity']:.2f} with "
               f"{decision['confidence']:.0%} confidence, from {decision['from_malignant']} "
               "malignant: " if decision.get("confidence") else "")
    said = (f"{promise}sensitivity {_with_ci(referral, 'sensitivity')}, specificity "
            f"{_with_ci(referral, 'specificity')}")
    plain = referral.get("without_guarantee")
    return said + (f"; without the guarantee specificity {plain['specificity']:.3f}"
                   if plain else "")


def _guard(path: Path) -> str:
    if not path.exists():
        return "—"
    guard = json.loads(path.read_text())
    lockbox = (f", lockbox {guard['lockbox_flagged']:.1%}" if "lockbox_flagged" in guard
               else "")
    return (f"held-out lesions {guard['held_out_flagged']:.1%}{lockbox}; not lesions "
            f"{guard['not_lesions_flagged']}/{len(guard['not_lesions'])}")


def _with_ci(scores: dict, key: str) -> str:
    low, high = scores.get(f"{key}_ci_low"), scores.get(f"{key}_ci_high")
    return f"{scores[key]:.3f}" + (f" ({low:.3f}–{high:.3f})" if low is not None else "")


def _headline(scores: dict) -> str:
    """ROC AUC (macro with several classes), melanoma's own AUC where it is a class, BMA."""
    melanoma = (f", melanoma AUC {_with_ci(scores, 'roc_auc_melanoma')}"
                if "roc_auc_melanoma" in scores else "")
    return (f"ROC AUC {_with_ci(scores, 'roc_auc')}{melanoma}, "
            f"BMA {_with_ci(scores, 'balanced_accuracy')}")


def readme_with_table(text: str, generated: str) -> str:
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    return f"{text[:start]}\n{generated}\n{text[end:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_cmd = sub.add_parser("run", help="run a profile, results into results/<name>/")
    run_cmd.add_argument("name")
    run_cmd.add_argument("-S", dest="set", action="append", default=[],
                         help="key=value on top of the profile, as dvc exp run -S")
    run_cmd.add_argument("--keep", action="store_true",
                         help="leave the profile's params and outputs in the workspace")
    sub.add_parser("check", help="list profiles whose committed results are stale")
    table_cmd = sub.add_parser("table", help="print the README's profiles table")
    table_cmd.add_argument("--write", action="store_true", help="write it into README.md")
    table_cmd.add_argument("--check", action="store_true",
                           help="exit 1 when README.md's table is not the generated one")
    args = parser.parse_args()
    try:
        if args.command == "run":
            run(args.name, args.set, args.keep)
        elif args.command == "check":
            for spec in sorted(PROFILES_DIR.glob("*.yaml")):
                reasons = stale_reasons(spec.stem)
                print(f"{spec.stem}: " + ("current" if not reasons else
                                          "STALE\n  " + "\n  ".join(reasons)))
        else:
            generated = table()
            current = README.read_text()
            if args.write:
                README.write_text(readme_with_table(current, generated))
            elif args.check and readme_with_table(current, generated) != current:
                sys.exit("README.md's profiles table is not what the committed results give: "
                         "python -m stages.app.profile table --write")
            else:
                print(generated)
    except PipelineError as err:
        sys.exit(f"profile: {err}")


if __name__ == "__main__":
    main()
