"""Stage evaluate@<backbone>: the fine-tuned model on the test split.

Writes metrics/backbones/<backbone>.json (git-tracked, for `dvc metrics diff`), the ROC,
precision-recall and confusion-matrix data under metrics/plots/<backbone>/ (drawn by
`dvc plots show`), and the test predictions in the ISIC challenge submission layout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from stages.core.classifier import load_model
from stages.core.errors import run_stage
from stages.core.metrics import classification_metrics, curve_points
from stages.core.shards import read_split

PREPARED_DIR = Path("data/processed/prepared")


def write_json(path: Path, data: dict) -> None:
    # Write then rename: a killed stage never leaves half a metrics file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def main(backbone: str) -> None:
    model, card = load_model(Path(f"models/{backbone}/model.keras"))
    classes = card["classes"]
    test = read_split(PREPARED_DIR, "test")
    probs = model.predict(test.images.astype("float32"), batch_size=64, verbose=0)

    scores = classification_metrics(test.labels, probs, classes)
    write_json(Path(f"metrics/backbones/{backbone}.json"), scores)
    plots = Path(f"metrics/plots/{backbone}")
    for name, points in curve_points(test.labels, probs, classes).items():
        write_json(plots / f"{name}.json", {name: points})
    pd.DataFrame({"actual": [classes[i] for i in test.labels],
                  "predicted": [classes[i] for i in probs.argmax(axis=1)]}).to_csv(
        plots / "confusion.csv", index=False)
    # ISIC challenge layout: `image` + one probability column per class.
    predictions = pd.DataFrame(probs, columns=classes).round(6)
    predictions.insert(0, "image", test.ids)
    Path("metrics/predictions").mkdir(parents=True, exist_ok=True)
    predictions.to_csv(f"metrics/predictions/{backbone}.csv", index=False)
    summary = {k: v for k, v in scores.items() if k != "confusion_matrix"}
    print(f"evaluate@{backbone}: {json.dumps(summary)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone", help="a key under `models:` in params.yaml")
    run_stage("evaluate", main, parser.parse_args().backbone)
