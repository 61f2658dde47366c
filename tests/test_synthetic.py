"""Tests for the embedded synthetic dermoscopy generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stages.core.sources.synthetic import ATTRIBUTION, COLUMNS, LICENSE, generate


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("syn")
    return out, generate(out, count=60, size=48, malignant_fraction=0.3, seed=3,
                         repeat_fraction=0.2)


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", 12, 40, 0.5, seed=11)
    generate(tmp_path / "b", 12, 40, 0.5, seed=11)
    assert _file_bytes(tmp_path / "a") == _file_bytes(tmp_path / "b")


def test_different_seed_gives_different_images(tmp_path: Path) -> None:
    generate(tmp_path / "a", 6, 40, 0.5, seed=1)
    generate(tmp_path / "b", 6, 40, 0.5, seed=2)
    a, b = _file_bytes(tmp_path / "a"), _file_bytes(tmp_path / "b")
    assert all(a[name] != b[name] for name in a if name.endswith(".jpg"))


def test_metadata_layout_and_values(small_set: tuple[Path, pd.DataFrame]) -> None:
    out, frame = small_set
    on_disk = pd.read_csv(out / "metadata.csv")
    assert list(on_disk.columns) == COLUMNS
    pd.testing.assert_frame_equal(on_disk, frame)
    assert len(frame) == 60 and frame.isic_id.is_unique
    assert frame.isic_id.tolist() == [f"SYN_{i:07d}" for i in range(60)]
    assert set(frame.benign_malignant) == {"benign", "malignant"}
    assert ((frame.benign_malignant == "malignant") == (frame.diagnosis == "melanoma")).all()
    assert set(frame.diagnosis) == {"nevus", "melanoma"}
    assert (frame.attribution == ATTRIBUTION).all() and (frame.copyright_license == LICENSE).all()
    assert frame.lesion_id.str.fullmatch(r"SYN_L\d{6}").all()
    assert frame.patient_id.str.fullmatch(r"SYN_P\d{5}").all()
    assert abs((frame.benign_malignant == "malignant").sum() - round(60 * 0.3)) <= 1
    text = (out / "attribution.txt").read_text()
    assert "ynthetic" in text and "CC0" in text


def test_lesion_and_patient_grouping(small_set: tuple[Path, pd.DataFrame]) -> None:
    _, frame = small_set
    shots = frame.lesion_id.value_counts()
    assert shots.max() == 2
    lesions = len(shots)
    assert abs((shots == 2).sum() - 0.2 * lesions) <= 2  # about repeat_fraction of lesions
    # A lesion keeps one class and one patient; a patient holds 1-3 lesions.
    per_lesion = frame.groupby("lesion_id")[["benign_malignant", "patient_id"]].nunique()
    assert (per_lesion == 1).all().all()
    assert frame.groupby("patient_id").lesion_id.nunique().between(1, 3).all()


def test_no_repeats_when_repeat_fraction_is_zero(tmp_path: Path) -> None:
    frame = generate(tmp_path, 20, 32, 0.5, seed=0, repeat_fraction=0.0)
    assert frame.lesion_id.is_unique
    assert (frame.benign_malignant == "malignant").sum() == 10


@pytest.mark.parametrize(("count", "fraction", "repeat"), [
    (2, 0.5, 0.9), (4, 0.1, 0.99), (4, 0.9, 0.99), (7, 0.5, 0.5), (101, 0.37, 0.3)])
def test_both_classes_and_count_near_target(tmp_path: Path, count: int, fraction: float,
                                            repeat: float) -> None:
    frame = generate(tmp_path, count, 32, fraction, seed=4, repeat_fraction=repeat)
    malignant = (frame.benign_malignant == "malignant").sum()
    assert len(frame) == count and 1 <= malignant <= count - 1
    assert abs(malignant - min(max(round(count * fraction), 1), count - 1)) <= 1


def test_images_exist_and_decode(small_set: tuple[Path, pd.DataFrame]) -> None:
    out, frame = small_set
    for isic_id in frame.isic_id:
        with Image.open(out / f"{isic_id}.jpg") as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (48, 48)
    assert len(list(out.glob("*.jpg"))) == len(frame)


def test_rerun_with_fewer_images_removes_stale_files(tmp_path: Path) -> None:
    generate(tmp_path, 10, 32, 0.5, seed=0)
    generate(tmp_path, 4, 32, 0.5, seed=0)
    assert len(list(tmp_path.glob("*.jpg"))) == 4


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"count": 1}, "count"),
    ({"size": 16}, "size"),
    ({"malignant_fraction": 0.0}, "malignant_fraction"),
    ({"malignant_fraction": 1.0}, "malignant_fraction"),
    ({"repeat_fraction": -0.1}, "repeat_fraction"),
    ({"repeat_fraction": 1.0}, "repeat_fraction"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments_raise_naming_the_parameter(tmp_path: Path, kwargs: dict,
                                                  name: str) -> None:
    args = {"count": 4, "size": 32, "malignant_fraction": 0.5, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=name):
        generate(tmp_path, **args)
    assert not list(tmp_path.glob("*.jpg"))


def _hand_features(image: np.ndarray) -> list[float]:
    """Darkness relative to the image's own skin: lesion area, colour spread, redness, blueness."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    brightness = pixels.mean(axis=1)
    skin = np.median(brightness)
    lesion = brightness < 0.8 * skin
    inside = pixels[lesion] if lesion.sum() > 4 else pixels
    return [lesion.mean(), *inside.std(axis=0), *(inside.mean(axis=0) / skin),
            (inside[:, 2] - inside[:, 1]).mean() / skin]


def test_task_is_learnable_but_not_trivial(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = generate(tmp_path, 300, 64, 0.4, seed=5, repeat_fraction=0.0)
    # Crop the centre: the lesion lives there, the dark vignette lives in the corners.
    features = np.array([_hand_features(np.asarray(Image.open(tmp_path / f"{i}.jpg"))[12:-12,
                                                                                      12:-12])
                         for i in frame.isic_id])
    labels = (frame.benign_malignant == "malignant").to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(features[:200], labels[:200])
    auc = roc_auc_score(labels[200:], model.predict_proba(features[200:])[:, 1])
    print(f"held-out ROC AUC of hand features: {auc:.3f}")
    assert 0.70 <= auc <= 0.995
