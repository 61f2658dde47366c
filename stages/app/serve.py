"""The web app: `make serve` (python -m stages.app.serve) → http://127.0.0.1:8000, served by
waitress (a production WSGI server) with `serve.threads` threads.

Upload a lesion photo, see each class's probability, the predicted class and a Grad-CAM
heatmap of where the model looked; pick any evaluated backbone. The same prediction is a JSON
API, `POST /api/predict`: multipart field `image`, optional `backbone`, `heatmap=1` to get
the Grad-CAM map and the photo as data URLs too, and the patient's `age` (years), `sex`
(male/female) and `site` for a model with clinical inputs (core/clinical.py; any left out is
unknown, and the answer says which it used). `POST /api/predict-batch`: one `images`
field per photo (optional `adjust_prior=1`, and a `metadata` CSV of age, sex, site per
image id): every answer and the batch's shift check
(core/shift.py), within the same upload size limit. `GET /api/models` lists the backbones.

Uploads are decoded from memory with prepare's own function (images.load_image, with the
preprocessing the model card records) and never saved by us (Werkzeug may spool a large
request body to a temporary file, nothing else); nothing is ever served from a path a user
gave. Models load once per backbone and stay warm.
Binds to 127.0.0.1 only: this is a research tool, not a medical device, nor a public service.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import waitress
from flask import Flask, Response, jsonify, render_template, request
from PIL import Image
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge

from stages.app.predict import read_clinical_csv, rows_for
from stages.core.cli import run_stage
from stages.core.clinical import SEXES
from stages.core.errors import PipelineError
from stages.core.gradcam import colormap, gradcam
from stages.core.images import ImageError
from stages.core.params import flag, get, load_params, number
from stages.core.paths import MODEL_CARD, SERVED_CARD, SUMMARY_FILE
from stages.core.predictor import (
    MODELS_DIR,
    ModelNotFoundError,
    Predictor,
    available_backbones,
    model_path,
)

WEB_DIR = Path(__file__).parent / "web"
DISPLAY_SIZE = 384  # the photo shown on the page; the model itself sees card["image_size"]


class ApiError(Exception):
    """A request we refuse, with the HTTP status and a message for the person who sent it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _data_url(pixels: np.ndarray, fmt: str) -> str:
    """An RGB array as a data: URL the page can show without a second request.

    The photo goes as JPEG: PNG compression of a 384 px photo costs more than the
    model and Grad-CAM together. The heatmap is small and smooth: PNG, fastest setting.
    """
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    else:
        Image.fromarray(pixels).save(buf, "PNG", compress_level=1)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


SERVED = "served"  # the listing's name for models/served.json (compare's choice)


class Models:
    """The served model and the trained backbones on disk, each with the score of exactly that
    model, and a warm Predictor per entry."""

    def __init__(self, models_dir: Path, summary_path: Path, default: str):
        self.models_dir, self.summary_path, self.default = models_dir, summary_path, default
        self._cache: dict[str, Predictor] = {}
        self._lock = threading.Lock()  # one load per model, one model call at a time

    def summary(self) -> dict:
        return json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {}

    def listing(self) -> list[dict]:
        """The served model first, then the trained backbones in leaderboard order."""
        summary = self.summary()
        scores = summary.get("scores", {})
        trained = available_backbones(self.models_dir)
        ranked = [b for b in scores if b in trained] + [b for b in trained if b not in scores]
        entries = []
        served = summary.get("served")
        if served and (self.models_dir / SERVED_CARD.name).exists():
            estimate = served["estimate"]
            entries.append({"backbone": SERVED, "roc_auc": estimate.get("roc_auc"),
                            "label": f"{served['name']} (served) — ROC AUC "
                                     f"{estimate.get('roc_auc', float('nan')):.3f}, "
                                     f"{estimate['how'].split(':')[0]}",
                            "best": True})
        for b in ranked:
            # The one model picking b loads, with that model's own test score (not the mean
            # over folds, which is no single model's).
            fold = model_path(b, self.models_dir).parent.name
            metrics = self.summary_path.parent / "backbones" / b / f"{fold}.json"
            auc = json.loads(metrics.read_text()).get("roc_auc") if metrics.exists() else None
            entries.append({"backbone": b, "roc_auc": auc, "best": False,
                            "label": f"{b}, fold {fold} model — test AUC "
                                     + (f"{auc:.3f}" if auc is not None else "n/a")})
        return entries

    def default_backbone(self) -> str:
        names = [m["backbone"] for m in self.listing()]
        if not names:
            raise ApiError(503, "no trained model yet: run `dvc repro` (or `dvc pull`), then "
                                "restart the server")
        if self.default not in ("best", SERVED) and self.default in names:
            return self.default
        return names[0]

    def get(self, backbone: str | None) -> Predictor:
        backbone = backbone or self.default_backbone()
        known = [m["backbone"] for m in self.listing()]
        # Only names found on disk are ever turned into a path: no traversal by request.
        if backbone not in known:
            raise ApiError(400, f"unknown backbone '{backbone}'; trained: "
                                f"{', '.join(known) or 'none'}")
        with self._lock:
            if backbone not in self._cache:
                path = model_path(backbone, self.models_dir)
                self._cache[backbone] = Predictor.load(path)
            return self._cache[backbone]

    def predict(self, data: bytes, backbone: str | None, tta: bool, heatmap: bool,
                clinical: pd.DataFrame | None = None) -> dict:
        backbone = backbone or self.default_backbone()
        predictor = self.get(backbone)
        try:
            image = predictor.decode(data)
            # The page's photo: the same decoding (upright, border crop and colour constancy as
            # the model card says, whole field squared) at a larger size, so it is sharp and
            # the heatmap lies exactly over what the model saw.
            display = predictor.decode(data, DISPLAY_SIZE) if heatmap else None
        except ImageError as err:
            raise ApiError(422, f"cannot read the upload as an image: {err}") from err
        with self._lock:
            probs, ood = predictor.assess(image[None], tta, clinical)
            answer = predictor.result(probs[0], float(ood[0]))
            # An ensemble's heatmap is the mean of its members' maps for the predicted class;
            # a photo flagged out of distribution gets none (nor a class).
            cam = np.mean([gradcam(m, image, predictor.classes.index(answer["predicted"]))
                           for m in predictor.members], axis=0) if (
                heatmap and "predicted" in answer) else None
        result = {"model": predictor.name, "backbone": backbone, "classes": predictor.classes,
                  "tta": tta, "decision": predictor.decision,
                  "clinical_inputs": predictor.clinical_inputs,
                  "clinical_given": used_clinical(clinical, predictor.clinical_inputs), **answer}
        if display is not None:
            result["image"] = _data_url(display, "JPEG")
        if cam is not None:
            result["heatmap"] = _data_url(colormap(cam), "PNG")
        return result


    def predict_batch(self, files: list[tuple[str, bytes]], backbone: str | None,
                      adjust_prior: bool, clinical: pd.DataFrame | None = None) -> dict:
        """Several uploads at once: each one's answer, the ones that could not be read, and
        whether the batch has shifted from the images the decision was validated on.
        `clinical`: age, sex, site by image id (predict.read_clinical_csv), or None."""
        backbone = backbone or self.default_backbone()
        predictor = self.get(backbone)
        names, images, skipped = [], [], []
        for name, data in files:
            try:
                images.append(predictor.decode(data))
                names.append(name)
            except ImageError as err:
                skipped.append({"image": name, "why": str(err)})
        if not images:
            raise ApiError(422, f"none of the {len(files)} upload(s) could be read as an image")
        with self._lock:
            probs, ood = predictor.assess(np.stack(images), False, rows_for(clinical, names))
        try:
            answers, shift = predictor.batch_results(probs, ood, adjust_prior)
        except PipelineError as err:  # e.g. adjust_prior for a model without the reference
            raise ApiError(400, str(err)) from err
        return {"model": predictor.name, "backbone": backbone, "classes": predictor.classes,
                "decision": predictor.decision, "prior_adjusted": adjust_prior,
                "predictions": [{"image": n, **a} for n, a in zip(names, answers, strict=True)],
                "skipped": skipped, "shift": shift}


def create_app(
    models_dir: Path = MODELS_DIR,
    summary_path: Path = SUMMARY_FILE,
    default_backbone: str = SERVED,
    max_upload_mb: float = 10,
    tta: bool = False,
) -> Flask:
    app = Flask(__name__, template_folder=str(WEB_DIR / "templates"),
                static_folder=str(WEB_DIR / "static"))
    # Werkzeug refuses a bigger request body with 413 before we read any of it.
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    models = Models(Path(models_dir), Path(summary_path), default_backbone)
    app.extensions["models"] = models

    @app.get("/")
    def index():
        listing = models.listing()
        try:
            selected = models.default_backbone()
        except ApiError:
            selected = None
        return render_template("index.html", models=listing, selected=selected,
                               max_upload_mb=max_upload_mb, tta=tta)

    @app.get("/model-card")
    def model_card():
        card = Path(models_dir) / MODEL_CARD.name
        if not card.exists():
            raise NotFound(f"{card} not found: run `dvc repro` first")
        return Response(card.read_text(), mimetype="text/markdown; charset=utf-8")

    @app.get("/api/models")
    def api_models():
        return jsonify(models=models.listing())

    @app.post("/api/predict")
    def api_predict():
        upload = request.files.get("image")
        if upload is None:
            raise ApiError(400, "no file in the form field 'image'")
        data = upload.read()
        if not data:
            raise ApiError(400, "the uploaded file is empty")
        heatmap = request.form.get("heatmap", "") in ("1", "true", "yes")
        backbone = request.form.get("backbone") or None
        return jsonify(models.predict(data, backbone, tta, heatmap, clinical_form(request.form)))

    @app.post("/api/predict-batch")
    def api_predict_batch():
        uploads = request.files.getlist("images")
        if not uploads:
            raise ApiError(400, "no files in the form field 'images' (one field per photo)")
        files = [(u.filename or f"image{i}", u.read()) for i, u in enumerate(uploads)]
        adjust = request.form.get("adjust_prior", "") in ("1", "true", "yes")
        metadata = request.files.get("metadata")
        try:  # age, sex, site per image id, for a model with clinical inputs
            clinical = read_clinical_csv(metadata.stream, metadata.filename) if metadata else None
        except PipelineError as err:
            raise ApiError(400, str(err)) from err
        return jsonify(models.predict_batch(files, request.form.get("backbone") or None, adjust,
                                            clinical))

    @app.errorhandler(ApiError)
    def api_error(err: ApiError):
        return jsonify(error=str(err)), err.status

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err: RequestEntityTooLarge):
        return jsonify(error=f"the upload is larger than the {max_upload_mb:g} MB limit"), 413

    @app.errorhandler(ModelNotFoundError)
    def no_model(err: ModelNotFoundError):
        return jsonify(error=str(err)), 503

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        # JSON for the API (404, 405, ...), so a script never has to parse an HTML page.
        if request.path.startswith("/api/"):
            return jsonify(error=err.description), err.code
        return err

    return app


def clinical_form(form) -> pd.DataFrame | None:
    """The optional fields age (years), sex (male/female) and site of /api/predict as one
    row of clinical data (core/clinical.py), or None when none is given."""
    age = form.get("age", "").strip()
    sex = form.get("sex", "").strip().lower()
    site = form.get("site", "").strip().lower()
    if age:
        try:
            if not 0 <= float(age) <= 120:
                raise ValueError
        except ValueError:
            raise ApiError(400, f"age '{age}': give the age in years (0-120), or leave it "
                                "out") from None
    if sex not in ("", *SEXES):
        raise ApiError(400, f"sex '{sex}': male, female, or leave it out")
    if not (age or sex or site):
        return None
    return pd.DataFrame({"sex": [sex], "age_years": [age], "site": [site]})


def used_clinical(clinical: pd.DataFrame | None, inputs: list[str]) -> dict:
    """What of the given clinical data the model used: {input: value}."""
    if clinical is None:
        return {}
    row = clinical.iloc[0]
    values = {"age": row["age_years"], "sex": row["sex"], "site": row["site"]}
    return {name: values[name] for name in inputs if values[name]}


def _warm_up_photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (150, 110, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def settings(params: dict) -> dict:
    """params.yaml `serve:`, checked (a missing key is named)."""
    return {"port": number(params, "serve.port", 1, 65535, integer=True),
            "max_upload_mb": number(params, "serve.max_upload_mb", 0.001, 1024),
            "default_backbone": str(get(params, "serve.backbone")),
            "tta": flag(params, "serve.tta"),
            "threads": number(params, "serve.threads", 1, 256, integer=True)}


def main(port: int | None = None) -> None:
    config = settings(load_params())
    default_port, threads = config.pop("port"), config.pop("threads")
    port = port or default_port
    app = create_app(**config)
    models = app.extensions["models"]
    try:
        first = models.default_backbone()
    except ApiError as err:
        raise ModelNotFoundError(str(err)) from None
    if config["default_backbone"] not in ("best", SERVED, first):
        print(f"serve.backbone '{config['default_backbone']}' has no trained model; "
              f"starting with {first}", flush=True)
    print(f"loading {first} ...", flush=True)
    models.get(first)  # warm before the first visitor, and fail now if it cannot load
    # The first heatmap traces Grad-CAM's graphs (25 s for an ensemble): now, not for the
    # first visitor.
    models.predict(_warm_up_photo(), first, config["tta"], heatmap=True)
    print(f"serving on http://127.0.0.1:{port}  (a research tool, not a medical device)",
          flush=True)
    # waitress: a production WSGI server (pure Python, threads); Flask's own is for debugging.
    waitress.serve(app, host="127.0.0.1", port=port, threads=threads, ident="skin-lesion")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="default: params.yaml serve.port")
    run_stage("serve", main, parser.parse_args().port)
