"""The web app's page and JSON API, through Flask's test client (no server, no browser)."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from stages.app import serve
from stages.core.images import Preprocessing, load_image
from stages.core.params import ParamsError
from stages.core.predictor import Predictor
from tests.tiny_models import (
    dermoscope_photo,
    jpeg_bytes,
    lesion_photo,
    write_summary,
    write_tiny_model,
    write_trained_repo,
)

SIZE = 32


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return write_trained_repo(tmp_path_factory.mktemp("repo"),
                              {"small_cnn": 0.91, "small_functional_cnn": 0.75}, SIZE)


@pytest.fixture(scope="module")
def client(repo):
    app = serve.create_app(models_dir=repo / "models", summary_path=repo / "metrics/summary.json",
                           max_upload_mb=0.05)
    return app.test_client()


def post(client, data: bytes | None, name: str = "lesion.jpg", **form):
    fields = dict(form)
    if data is not None:
        fields["image"] = (io.BytesIO(data), name)
    return client.post("/api/predict", data=fields, content_type="multipart/form-data")


def from_data_url(url: str, fmt: str) -> Image.Image:
    prefix = f"data:image/{fmt};base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix):])))


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with no pixels: what a bomb looks like at first."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_good_image_gets_probabilities_from_the_served_model(client):
    response = post(client, jpeg_bytes(lesion_photo(150)))
    assert response.status_code == 200, response.json
    body = response.json
    assert body["model"] == "small_cnn (holdout)" and body["backbone"] == "served"  # best AUC
    assert body["refer"]["threshold"] == 0.5 and not body["out_of_distribution"]["flagged"]
    assert body["classes"] == ["benign", "malignant"]
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["predicted"] == max(body["probabilities"], key=body["probabilities"].get)
    assert "heatmap" not in body  # only when asked for


def test_api_matches_the_predict_code_path_and_other_backbones(client, repo):
    photo = jpeg_bytes(lesion_photo(150, seed=4))
    body = post(client, photo, backbone="small_functional_cnn").json
    assert body["model"] == "small_functional_cnn"
    predictor = Predictor.load(repo / "models/small_functional_cnn/holdout/model.keras")
    want = predictor.predict(predictor.decode(photo)[None])[0]
    assert list(body["probabilities"].values()) == pytest.approx(list(want), abs=1e-6)


def test_heatmap_and_photo_come_back_as_data_urls(client):
    body = post(client, jpeg_bytes(lesion_photo(150)), heatmap="1").json
    for key, fmt, size in (("image", "jpeg", serve.DISPLAY_SIZE), ("heatmap", "png", SIZE)):
        png = from_data_url(body[key], fmt)
        assert png.size == (size, size) and png.mode == "RGB"
        assert np.asarray(png).std() > 1  # not blank


def test_api_and_its_photo_repeat_the_preprocessing_in_the_model_card(tmp_path):
    steps = {"crop_border": True, "color_constancy": "shades_of_gray"}
    path = write_tiny_model(tmp_path, "small_cnn", SIZE, preprocessing=steps)
    client = serve.create_app(models_dir=tmp_path / "models",
                              summary_path=write_summary(tmp_path, {"small_cnn": 0.9})
                              ).test_client()
    photo = jpeg_bytes(dermoscope_photo(120))
    body = post(client, photo, heatmap="1").json
    model = Predictor.load(path).members[0]
    fed = load_image(photo, SIZE, Preprocessing(True, "shades_of_gray"))
    want = model.predict(fed[None].astype(np.float32), verbose=0)[0]
    assert list(body["probabilities"].values()) == pytest.approx(list(want), abs=1e-6)
    # The photo under the heatmap is cropped and colour-balanced like the model's input.
    shown = np.asarray(from_data_url(body["image"], "jpeg"), np.float32)
    corrected, plain = (load_image(photo, serve.DISPLAY_SIZE, steps).astype(np.float32)
                        for steps in (Preprocessing(True, "shades_of_gray"), Preprocessing()))
    assert np.abs(shown - corrected).mean() < 0.25 * np.abs(shown - plain).mean()


@pytest.mark.parametrize(("data", "status", "message"), [
    (b"%PDF-1.4 definitely not a photo", 422, "not an image"),
    (b"", 400, "empty"),
    (None, 400, "no file"),
    (b"\xff\xd8\xff" + b"\x00" * 200, 422, "cannot read"),  # a JPEG that breaks off
    (png_header_claiming(60_000, 60_000), 422, "too many pixels"),  # a decompression bomb
])
def test_bad_uploads_get_a_clear_json_error(client, data, status, message):
    response = post(client, data)
    assert response.status_code == status
    assert response.is_json and message in response.json["error"]


def test_a_big_solid_image_over_max_image_pixels_is_refused_as_a_bomb(client, monkeypatch):
    buf = io.BytesIO()
    Image.new("RGB", (400, 400), (200, 150, 120)).save(buf, "PNG")  # compresses to ~1 kB
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 160,000 px > 2 x 10,000
    response = post(client, buf.getvalue(), name="solid.png")
    assert response.status_code == 422 and "too many pixels" in response.json["error"]


def test_upload_over_the_size_limit_is_413(client):
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    big = jpeg_bytes(noise)
    assert len(big) > 0.05 * 1024 * 1024
    response = post(client, big)
    assert response.status_code == 413
    assert "larger than the 0.05 MB limit" in response.json["error"]


@pytest.mark.parametrize("backbone", ["resnet50", "../models/small_cnn", "small_cnn/../x"])
def test_unknown_backbone_is_refused_and_never_becomes_a_path(client, backbone):
    response = post(client, jpeg_bytes(lesion_photo(60)), backbone=backbone)
    assert response.status_code == 400
    assert "unknown backbone" in response.json["error"]
    assert "trained: served, small_cnn, small_functional_cnn" in response.json["error"]


def test_api_404_and_405_are_json(client):
    assert client.get("/api/nothing").json["error"]
    response = client.get("/api/predict")
    assert response.status_code == 405 and response.is_json


def test_page_lists_models_with_auc_and_the_notice(client):
    page = client.get("/").get_data(as_text=True)
    assert "Research tool, not a medical device" in page
    assert 'id="file"' in page and 'type="file"' in page
    # each entry shows the score of exactly that model, said as what it is
    assert "small_cnn (holdout) (served) — ROC AUC 0.910, the 10 test images" in page
    assert "small_cnn, fold holdout model — test AUC 0.910" in page
    assert "small_functional_cnn, fold holdout model — test AUC 0.750" in page
    assert client.get("/static/app.js").status_code == 200
    models = client.get("/api/models").json["models"]
    assert [m["backbone"] for m in models] == ["served", "small_cnn", "small_functional_cnn"]


def test_models_load_once_and_stay_warm(repo, monkeypatch):
    loads = []
    original = Predictor.load.__func__

    def counting(cls, path):
        loads.append(path)
        return original(cls, path)

    monkeypatch.setattr(Predictor, "load", classmethod(counting))
    app = serve.create_app(models_dir=repo / "models", summary_path=repo / "metrics/summary.json")
    client = app.test_client()
    photo = jpeg_bytes(lesion_photo(60))
    for _ in range(3):
        assert post(client, photo).status_code == 200
        assert post(client, photo, backbone="small_functional_cnn").status_code == 200
    assert len(loads) == 2


def test_no_trained_model_yet(tmp_path):
    app = serve.create_app(models_dir=tmp_path / "models",
                           summary_path=tmp_path / "metrics/summary.json")
    client = app.test_client()
    response = post(client, jpeg_bytes(lesion_photo(60)))
    assert response.status_code == 503 and "dvc repro" in response.json["error"]
    assert "No trained model yet" in client.get("/").get_data(as_text=True)


def test_serve_settings_from_params(params):
    assert serve.settings(params) == {"port": 8000, "max_upload_mb": 10,
                                      "default_backbone": "served", "tta": False, "threads": 8}
    params["serve"] |= {"port": 8123, "tta": True, "backbone": "small_cnn"}
    got = serve.settings(params)
    assert got["port"] == 8123 and got["tta"] is True and got["default_backbone"] == "small_cnn"
    for key, bad in (("port", 0), ("tta", "yes")):
        with pytest.raises(ParamsError, match=f"serve.{key}"):
            serve.settings({"serve": {**params["serve"], key: bad}})
    with pytest.raises(ParamsError, match="missing key 'serve.port'"):
        serve.settings({"serve": {}})


def test_the_page_links_the_model_card_it_serves(repo, client):
    (repo / "models/MODEL_CARD.md").write_text("# Model card: small_cnn (holdout)\n")
    page = client.get("/").get_data(as_text=True)
    assert 'href="/model-card"' in page
    card = client.get("/model-card")
    assert card.status_code == 200 and card.mimetype == "text/markdown"
    assert card.get_data(as_text=True).startswith("# Model card: small_cnn")
    (repo / "models/MODEL_CARD.md").unlink()
    assert client.get("/model-card").status_code == 404


def test_a_flagged_upload_gets_the_flag_and_why_but_nothing_to_act_on(tmp_path):
    from tests.tiny_models import write_served
    repo = write_trained_repo(tmp_path, {"small_cnn": 0.9}, SIZE)
    write_served(repo, ["small_cnn"], image_size=SIZE, ood_threshold=1e-6)  # flags everything
    client = serve.create_app(models_dir=repo / "models",
                              summary_path=repo / "metrics/summary.json").test_client()
    grey = np.full((64, 64, 3), 128, np.uint8)
    body = post(client, jpeg_bytes(grey), heatmap="1").json
    assert body["out_of_distribution"]["flagged"]
    assert "no class, referral decision or heatmap" in body["out_of_distribution"]["why"]
    assert not {"predicted", "probabilities", "refer", "heatmap"} & set(body)
    assert body["image"].startswith("data:image/jpeg")  # the photo itself is shown back


def test_the_batch_api_answers_each_photo_reports_the_unreadable_and_checks_the_shift(client):
    fields = {"images": [(io.BytesIO(jpeg_bytes(lesion_photo(100, seed))), f"p{seed}.jpg")
                         for seed in range(3)] + [(io.BytesIO(b"no image"), "notes.jpg")]}
    response = client.post("/api/predict-batch", data=fields,
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    body = response.json
    assert [p["image"] for p in body["predictions"]] == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert body["skipped"][0]["image"] == "notes.jpg" and body["skipped"][0]["why"]
    assert "too few to judge" in body["shift"]["message"]
    assert "with 95%" not in body["decision"] and "85%" in body["decision"]
    empty = client.post("/api/predict-batch", data={}, content_type="multipart/form-data")
    assert empty.status_code == 400 and "images" in empty.json["error"]
