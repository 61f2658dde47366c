"""Stage compare: every backbone's test metrics → a leaderboard and the model to serve.

metrics/summary.json ranks the backbones by `compare.rank_by` and names the best one, which
predict and the web app load by default; metrics/leaderboard.md is the same table for people.
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.core.errors import run_stage
from stages.core.params import choice, get, load_params

METRICS_DIR = Path("metrics/backbones")
COLUMNS = ("roc_auc", "balanced_accuracy", "average_precision", "sensitivity", "specificity",
           "f1", "accuracy")


def leaderboard(scores: dict[str, dict], rank_by: str) -> list[dict]:
    rows = [{"backbone": name, **{c: s.get(c) for c in COLUMNS}} for name, s in scores.items()]
    # A missing score (e.g. AUC with one class in test) ranks last rather than crashing.
    return sorted(rows, key=lambda r: -1 if r[rank_by] is None else r[rank_by], reverse=True)


def markdown(rows: list[dict]) -> str:
    header = "| rank | backbone | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for rank, row in enumerate(rows, 1):
        cells = ["–" if row[c] is None else f"{row[c]:.3f}" for c in COLUMNS]
        lines.append(f"| {rank} | {row['backbone']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    params = load_params()
    rank_by = choice(params, "compare.rank_by", COLUMNS)
    scores = {}
    for name in get(params, "backbones"):
        path = METRICS_DIR / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing; run `dvc repro evaluate@{name}`")
        scores[name] = json.loads(path.read_text())
    rows = leaderboard(scores, rank_by)
    best = rows[0]["backbone"]
    # Keyed by backbone (not a list) so `dvc metrics show/diff` can flatten it.
    summary = {"best": best, "best_model": f"models/{best}/model.keras", "rank_by": rank_by,
               "scores": {row["backbone"]: {c: row[c] for c in COLUMNS} for row in rows}}
    Path("metrics/summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    Path("metrics/leaderboard.md").write_text(markdown(rows))
    print(markdown(rows) + f"\nbest by {rank_by}: {best}")


if __name__ == "__main__":
    run_stage("compare", main)
