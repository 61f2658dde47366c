"""python -m stages.app.predict: the same pixels as prepare, every output format, bad files."""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stages import prepare
from stages.app import predict
from stages.core.errors import PipelineError
from stages.core.images import Preprocessing, load_image
from stages.core.predictor import ModelNotFoundError, Predictor, model_path
from stages.core.tta import tta_predict
from tests.conftest import REPO, UDA1_DIR
from tests.tiny_models import (
    dermoscope_photo,
    jpeg_bytes,
    lesion_photo,
    write_served,
    write_tiny_model,
    write_trained_repo,
)

SIZE = 32


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return write_trained_repo(tmp_path_factory.mktemp("repo"),
                              {"small_cnn": 0.7, "small_functional_cnn": 0.8}, SIZE)


@pytest.fixture
def photos(tmp_path):
    """Three lesion photos in a folder (one nested), and a 'photo' that is not an image."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for name, seed in (("ISIC_0000001.jpg", 1), ("ISIC_0000002.jpg", 2)):
        (folder / name).write_bytes(jpeg_bytes(lesion_photo(120, seed)))
    Image.fromarray(lesion_photo(90, 3)).save(folder / "more" / "ISIC_0000003.png")
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    return folder, bad


def run(repo, monkeypatch, capsys, *argv):
    monkeypatch.chdir(repo)
    code = predict.main(predict.parse_args([str(a) for a in argv]))
    out, err = capsys.readouterr()
    return code, out, err


def fed_to_model(monkeypatch) -> list[np.ndarray]:
    """Records each batch a Predictor hands its model (Predictor.load's warm-up included)."""
    seen = []
    original = Predictor.assess

    def spy(self, images, tta=False, clinical=None):
        seen.append(images.copy())
        return original(self, images, tta, clinical)

    monkeypatch.setattr(Predictor, "assess", spy)
    return seen


def _real_jpeg(tmp_path):
    """A real dermoscopy JPEG when the UDA-1 images are beside the repo; else a photo from
    scikit-image, stored rotated with an EXIF orientation tag so upright-ing is exercised."""
    if UDA1_DIR.exists():
        found = sorted(UDA1_DIR.rglob("*.jpg"))
        if found:
            return found[0]
    from skimage import data

    path = tmp_path / "astronaut.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(data.astronaut()).transpose(Image.Transpose.ROTATE_90).save(
        path, "JPEG", quality=92, exif=exif)
    return path


def test_predict_feeds_the_model_exactly_what_prepare_writes(repo, tmp_path, monkeypatch,
                                                               capsys):
    photo = _real_jpeg(tmp_path)
    prepared = prepare.decode(photo, SIZE)  # what prepare stores in its shards
    assert isinstance(prepared, np.ndarray), prepared
    seen = fed_to_model(monkeypatch)
    code, out, _ = run(repo, monkeypatch, capsys, photo, "--format", "json")
    assert code == 0
    fed = seen[-1]  # (the first call is Predictor.load's warm-up on a blank image)
    assert fed.shape == (1, SIZE, SIZE, 3) and fed.dtype == np.uint8
    assert np.array_equal(fed[0], prepared)
    assert json.loads(out)["predictions"][0]["image"] == str(photo)


def test_predict_repeats_the_preprocessing_in_the_model_card(tmp_path, monkeypatch, capsys):
    steps = {"crop_border": True, "color_constancy": "shades_of_gray"}
    path = write_tiny_model(tmp_path, "small_cnn", SIZE, preprocessing=steps)
    photo = tmp_path / "ringed_and_bluish.png"
    Image.fromarray(dermoscope_photo(120)).save(photo)
    seen = fed_to_model(monkeypatch)
    code, out, _ = run(tmp_path, monkeypatch, capsys, photo, "--model", path, "--format", "json")
    assert code == 0
    corrected = load_image(photo, SIZE, Preprocessing(True, "shades_of_gray"))
    plain = load_image(photo, SIZE)
    assert np.array_equal(seen[-1], corrected[None]) and not np.array_equal(corrected, plain)

    model = Predictor.load(path).members[0]
    got = json.loads(out)["predictions"][0]["probabilities"]
    want, unwanted = (model.predict(x[None].astype(np.float32), verbose=0)[0]
                      for x in (corrected, plain))
    assert [got["benign"], got["malignant"]] == pytest.approx(list(want), abs=1e-6)
    assert abs(got["malignant"] - unwanted[1]) > 1e-3  # plain pixels would answer otherwise


def test_a_model_card_without_preprocessing_decodes_plain(repo):
    predictor = Predictor.load(repo / "models/small_cnn/holdout/model.keras")
    old_card = {k: v for k, v in predictor.card.items() if k != "preprocessing"}
    old = Predictor(predictor.members, old_card, predictor.guard)
    photo = jpeg_bytes(dermoscope_photo(120))
    assert np.array_equal(old.decode(photo), load_image(photo, SIZE))


def test_default_model_is_the_served_one_and_table_is_readable(repo, photos, monkeypatch,
                                                                     capsys):
    folder, _ = photos
    code, out, err = run(repo, monkeypatch, capsys, folder)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "small_functional_cnn (holdout)" in lines[0]  # served: AUC 0.8 beats 0.7
    assert lines[1].startswith("referral: referred 85% of the malignant lesions in validation")
    assert lines[2].split() == ["image", "benign", "malignant", "verdict"]
    rows = [line.split() for line in lines[4:]]
    assert [r[0].rsplit("/", 1)[-1] for r in rows] == [
        "ISIC_0000001.jpg", "ISIC_0000002.jpg", "ISIC_0000003.png"]  # folder expanded, sorted
    for r in rows:
        assert abs(float(r[1]) + float(r[2]) - 1) < 2e-4 and r[3] in ("benign;", "malignant;")
        assert " ".join(r[4:]) in ("above the referral threshold", "below the referral threshold")


def test_csv_json_and_isic_submission(repo, photos, monkeypatch, capsys, tmp_path):
    folder, _ = photos
    submission = tmp_path / "out" / "submission.csv"
    code, out, _ = run(repo, monkeypatch, capsys, folder, "--backbone", "small_cnn",
                       "--format", "csv", "--isic-csv", submission)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 and set(rows[0]) == {"image", "benign", "malignant", "predicted",
                                               "refer", "out_of_distribution"}
    isic = list(csv.reader(submission.open()))
    assert isic[0] == ["image", "benign", "malignant"]  # evaluate's layout
    assert [r[0] for r in isic[1:]] == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    for row, cli in zip(isic[1:], rows, strict=True):
        assert float(row[1]) == pytest.approx(float(cli["benign"]), abs=1e-6)

    code, out, _ = run(repo, monkeypatch, capsys, folder, "--backbone", "small_cnn",
                       "--format", "json")
    result = json.loads(out)
    assert result["model"] == "small_cnn" and result["tta"] is False  # one fold model
    first = result["predictions"][0]
    assert first["predicted"] == max(first["probabilities"], key=first["probabilities"].get)
    assert float(rows[0]["benign"]) == pytest.approx(first["probabilities"]["benign"], abs=1e-6)


def test_tta_averages_the_flips_and_rotations(repo, photos, monkeypatch, capsys):
    folder, _ = photos
    path = folder / "ISIC_0000001.jpg"
    code, out, _ = run(repo, monkeypatch, capsys, path, "--format", "json", "--tta",
                       "--model", repo / "models/small_cnn/holdout/model.keras")
    assert code == 0
    got = json.loads(out)["predictions"][0]["probabilities"]
    predictor = Predictor.load(repo / "models/small_cnn/holdout/model.keras")
    want = tta_predict(predictor.members[0], predictor.decode(path)[None])[0]
    assert [got["benign"], got["malignant"]] == pytest.approx(list(want), abs=1e-5)


def test_bad_files_are_reported_and_the_rest_still_predicted(repo, photos, monkeypatch, capsys,
                                                              tmp_path):
    folder, bad = photos
    missing = tmp_path / "missing.jpg"
    code, out, err = run(repo, monkeypatch, capsys, bad, folder / "ISIC_0000002.jpg", missing,
                         "--format", "csv")
    assert code == 0
    assert len(out.splitlines()) == 2  # header + the one good image
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{bad}: ") and "image" in lines[0]
    assert lines[1] == f"{missing}: skipped, file not found"

    code, out, err = run(repo, monkeypatch, capsys, bad, missing)
    assert code == 1 and out == ""
    assert "none of the 2 file(s) could be classified" in err


def test_missing_served_model_or_backbone_says_to_run_dvc_repro(tmp_path, repo):
    with pytest.raises(ModelNotFoundError, match="served.json not found: run `dvc repro`"):
        model_path(None, tmp_path / "models")
    with pytest.raises(ModelNotFoundError, match="trained: small_cnn, small_functional_cnn"):
        model_path("resnet50", repo / "models")


def test_command_line_exit_codes(tmp_path):
    """The real command in an empty folder: one line telling what to do, exit 1."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes(lesion_photo(40)))
    result = subprocess.run([sys.executable, "-m", "stages.app.predict", "x.jpg"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("predict: models/served.json "
                                                              "not found: run `dvc repro`")


def test_big_folders_go_through_in_chunks_with_the_same_results(repo, photos, monkeypatch,
                                                                capsys):
    folder, bad = photos
    _, whole, _ = run(repo, monkeypatch, capsys, folder, bad, "--format", "csv")
    monkeypatch.setattr(predict, "CHUNK", 2)  # 4 files: two chunks, one with the bad file
    code, chunked, err = run(repo, monkeypatch, capsys, folder, bad, "--format", "csv")
    assert code == 0 and chunked == whole and err.startswith(f"{bad}: skipped")


def test_served_ensemble_is_the_calibrated_mean_and_flags_what_is_unlike_lesions(
        repo, photos, monkeypatch, capsys):
    folder, _ = photos
    card = write_served(repo, ["small_cnn", "small_functional_cnn"], image_size=SIZE,
                        temperature=2.0, threshold=0.3)
    served = Predictor.load(card)
    images = np.stack([served.decode(p) for p in sorted(folder.rglob("ISIC_*"))])
    members = [Predictor.load(repo / f"models/{b}/holdout/model.keras").predict(images)
               for b in ("small_cnn", "small_functional_cnn")]
    mean = (members[0] + members[1]) / 2
    calibrated = np.exp(np.log(mean) / 2.0)
    calibrated /= calibrated.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(served.predict(images), calibrated, atol=1e-5)

    code, out, _ = run(repo, monkeypatch, capsys, folder, "--format", "json")
    rows = json.loads(out)["predictions"]
    assert [r["refer"]["above_threshold"] for r in rows] == list(calibrated[:, 1] >= 0.3)
    assert not any(r["out_of_distribution"]["flagged"] for r in rows)

    write_served(repo, ["small_cnn", "small_functional_cnn"], image_size=SIZE,
                 ood_threshold=1e-6)  # every photo is far from the one reference image
    code, out, _ = run(repo, monkeypatch, capsys, folder)
    assert code == 0 and out.count("NOT LIKE A LESION PHOTO") == 3
    code, out, _ = run(repo, monkeypatch, capsys, folder, "--format", "json")
    rows = json.loads(out)["predictions"]
    assert all(set(r) == {"image", "out_of_distribution"} for r in rows)


def test_the_class_biases_decide_the_class_and_leave_the_probabilities_calibrated(
        repo, photos, monkeypatch, capsys):
    folder, _ = photos
    members = ["small_cnn", "small_functional_cnn"]
    plain = Predictor.load(write_served(repo, members, image_size=SIZE, temperature=2.0))
    images = np.stack([plain.decode(p) for p in sorted(folder.rglob("ISIC_*"))])
    probs = plain.predict(images)
    # a bias that makes the first class the prediction of every photo
    biased = Predictor.load(write_served(repo, members, image_size=SIZE, temperature=2.0,
                                         class_bias=[0.0, -50.0]))
    np.testing.assert_array_equal(biased.predict(images), probs)
    assert [biased.result(p)["predicted"] for p in probs] == [plain.classes[0]] * len(probs)
    assert [plain.result(p)["predicted"] for p in probs] == [
        plain.classes[i] for i in probs.argmax(axis=1)]
    assert [biased.result(p)["refer"] for p in probs] == [plain.result(p)["refer"] for p in probs]
    code, out, _ = run(repo, monkeypatch, capsys, folder, "--format", "json")
    assert code == 0 and {r["predicted"] for r in json.loads(out)["predictions"]} == {
        plain.classes[0]}
    # A card from before, with the biases on the probabilities, is refused, not misread.
    card = json.loads((repo / "models/served.json").read_text())
    card["calibration"]["class_bias"] = card["decision"].pop("class_bias")
    (repo / "models/served.json").write_text(json.dumps(card))
    with pytest.raises(PipelineError, match="rerun `dvc repro compare`"):
        Predictor.load(repo / "models/served.json")
    write_served(repo, members, image_size=SIZE)


def test_a_batch_gets_the_shift_check_and_prior_adjustment_keeps_the_referral(
        repo, tmp_path, monkeypatch, capsys):
    write_served(repo, ["small_functional_cnn"], image_size=SIZE)  # a guard that flags none
    folder = tmp_path / "batch"
    folder.mkdir()
    for seed in range(24):
        (folder / f"ISIC_{seed:07d}.jpg").write_bytes(jpeg_bytes(lesion_photo(64, seed)))
    code, out, _ = run(repo, monkeypatch, capsys, folder, "--format", "json")
    plain = json.loads(out)
    assert code == 0 and len(plain["shift"]["signs"]) == 4, plain["shift"]
    assert isinstance(plain["shift"]["warning"], bool) and plain["shift"]["images"] == 24
    code, out, _ = run(repo, monkeypatch, capsys, folder, "--format", "json", "--adjust-prior")
    adjusted = json.loads(out)
    assert adjusted["prior_adjusted"] and adjusted["shift"] == plain["shift"]
    for a, b in zip(adjusted["predictions"], plain["predictions"], strict=True):
        assert a["refer"] == b["refer"]  # decided on the unadjusted probabilities
    assert any(a["probabilities"] != b["probabilities"]
               for a, b in zip(adjusted["predictions"], plain["predictions"], strict=True))
    code, out, _ = run(repo, monkeypatch, capsys, folder)
    assert "batch: " in out and "referral score distribution" in out
