"""How fast is one prediction? Single-image latency and batch throughput of the served model.

    python bench/predict_latency.py                      # efficientnet_lite0 at prepare.size
    python bench/predict_latency.py --backbone small_cnn --requests 200

Uses models/<backbone>/holdout/model.keras when `dvc repro` has made it; otherwise builds the model
from params.yaml (efficientnet_lite0: ImageNet weights from pip, offline; head untrained:
speed does not depend on the weights' values) and saves it to a temporary folder, so the
timed code is the same either way: Predictor.load → decode → predict. For one photo it times,
after warm-up, `--requests` times each:

  model.predict            Keras' documented call on the already decoded float32 image
  model.predict_on_batch   the compiled graph without model.predict's per-call set-up
  predict path             stages.app.predict: decode the JPEG file (images.load_image) + model
  predict path, --tta      the same with the 8 flips/rotations averaged
  API                      POST /api/predict through Flask's test client (multipart JPEG)
  API + Grad-CAM           the page's request: + heatmap and the photo as PNG data URLs

and reports the median and 95th percentile; then images/s for a batch of `--batch` photos,
bare (model.predict on decoded pixels) and through predict's path (decode every file too).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from stages.app import predict as predict_cli
from stages.core.classifier import build_classifier, model_card
from stages.core.model_io import write_model
from stages.core.params import load_params, model_config, number
from stages.core.paths import HOLDOUT, model_dir
from stages.core.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
UDA1_DIR = REPO.parent / "shared" / "data" / "isic-uda1-dev"


def model_file(backbone: str, size: int, workdir: Path) -> tuple[Path, str]:
    """The trained model if there is one, else a freshly built one saved under workdir."""
    trained = REPO / model_dir(backbone, HOLDOUT) / "model.keras"
    if trained.exists():
        return trained, f"trained model {trained.relative_to(REPO)}"
    cfg = model_config(load_params(REPO / "params.yaml"), backbone)
    model = build_classifier(cfg, size, n_classes=2)
    path = workdir / "models" / backbone / "model.keras"
    write_model(model, path, model_card(cfg, size, ["benign", "malignant"]))
    return path, f"built from params.yaml (weights: {cfg.weights}; no models/{backbone} yet)"


def photo_files(workdir: Path, n: int) -> list[Path]:
    """Real ISIC JPEGs when ../shared/data/isic-uda1-dev exists, else synthetic 1024x768 ones."""
    real = sorted(UDA1_DIR.glob("*.jpg"))[:n] if UDA1_DIR.exists() else []
    if len(real) == n:
        return real
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        pixels = rng.normal((200, 150, 130), 25, (768, 1024, 3)).clip(0, 255).astype(np.uint8)
        path = workdir / f"photo_{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        files.append(path)
    return files


def timed(fn: Callable[[], object], requests: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def row(name: str, times: list[float]) -> str:
    ms = sorted(1000 * t for t in times)
    p95 = ms[min(len(ms) - 1, round(0.95 * len(ms)) - 1)]
    return f"| {name} | {statistics.median(ms):.1f} | {p95:.1f} |"


def main() -> None:
    params = load_params(REPO / "params.yaml")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, help="default: params.yaml prepare.size")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    size = args.size or number(params, "prepare.size", 16, 1024, integer=True)

    from stages.app.serve import create_app

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path, origin = model_file(args.backbone, size, workdir)
        predictor = Predictor.load(path)
        model = predictor.members[0]  # the bare-model rows time the first member
        files = photo_files(workdir, args.batch)
        photo = files[0]
        with Image.open(photo) as img:
            kb = photo.stat().st_size // 1024
            photo_desc = f"{photo.name} ({img.width}x{img.height} JPEG, {kb} kB)"
        image = predictor.decode(photo)
        x1 = image[None].astype(np.float32)
        data = photo.read_bytes()

        # The API on the same model file: the app's models folder is the one that holds it.
        summary = workdir / "summary.json"
        summary.write_text(json.dumps({"best": args.backbone, "scores": {}}))
        client = create_app(models_dir=path.parent.parent, summary_path=summary,
                            max_upload_mb=50).test_client()

        def api(heatmap: bool) -> None:
            form = {"image": (io.BytesIO(data), photo.name), "backbone": args.backbone}
            if heatmap:
                form["heatmap"] = "1"
            response = client.post("/api/predict", data=form, content_type="multipart/form-data")
            assert response.status_code == 200, response.json

        def predict_path(tta: bool) -> None:
            good, images = predict_cli.decode_all(predictor, [photo])
            predictor.result(predictor.predict(images, tta=tta)[0])

        n, w = args.requests, args.warmup
        results = [
            row("model.predict (decoded image)", timed(lambda: model.predict(x1, verbose=0), n, w)),
            row("model.predict_on_batch (decoded image)",
                timed(lambda: model.predict_on_batch(x1), n, w)),
            row("predict path: decode JPEG + model", timed(lambda: predict_path(False), n, w)),
            row("predict path, --tta (8 views)", timed(lambda: predict_path(True), n, w)),
            row("API: POST /api/predict", timed(lambda: api(False), n, w)),
            row("API + Grad-CAM (the web page's request)", timed(lambda: api(True), n, w)),
        ]

        batch = np.stack([predictor.decode(f) for f in files]).astype(np.float32)
        model.predict(batch, batch_size=args.batch, verbose=0)  # warm-up at this shape
        bare = timed(lambda: model.predict(batch, batch_size=args.batch, verbose=0), 5, 1)

        def batch_path() -> None:
            good, images = predict_cli.decode_all(predictor, files)
            predictor.predict(images)

        full = timed(batch_path, 5, 1)

    print(f"{args.backbone} at {size}x{size} px, {origin}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"photo: {photo_desc}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU cores (load average {load}: other work skews the figures); "
          f"TF {__import__('tensorflow').__version__}")
    print(f"single image, {n} requests after {w} warm-up:\n")
    print("| path | median ms | p95 ms |\n|---|---|---|")
    print("\n".join(results))
    print(f"\nbatch of {args.batch} photos (median of 5):\n")
    print("| path | images/s |\n|---|---|")
    print(f"| model.predict (decoded pixels) | {args.batch / statistics.median(bare):.0f} |")
    print(f"| predict path (decode every JPEG + model) | "
          f"{args.batch / statistics.median(full):.0f} |")


if __name__ == "__main__":
    main()
