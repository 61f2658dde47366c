"""The out-of-distribution guard on real images, as the guard stage fits it: pooled ImageNet
EfficientNet-Lite0 features at 224 px, threshold from out-of-fold distances. On each real
development set few held-out lesions are flagged, and every photo that is not a lesion is."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stages.core.images import load_image
from stages.core.ood import guard_from, held_out_flagged, out_of_fold_distances
from stages.core.ood_extractor import build_extractor
from stages.core.paths import NOT_LESIONS_DIR
from stages.core.sources.local import read_source
from tests.conftest import HAM_DIR, ISIC2017_DIR, REPO, UDA1_DIR

SIZE = 128


@pytest.fixture(scope="module")
def extractor():
    return build_extractor(SIZE)


def not_lesions() -> dict[str, np.ndarray]:
    return {p.stem: load_image(p, SIZE) for p in sorted((REPO / NOT_LESIONS_DIR).iterdir())
            if p.suffix != ".md"}


@pytest.mark.slow
@pytest.mark.parametrize("folder", [UDA1_DIR, ISIC2017_DIR, HAM_DIR], ids=lambda p: p.name)
def test_few_held_out_lesions_and_every_non_lesion_are_flagged(folder, extractor):
    if not folder.is_dir():
        pytest.skip(f"needs {folder}")
    items, _ = read_source(folder)
    items = items.sample(n=300, random_state=0)
    # folds by lesion where the source has one, so no lesion is its own neighbour
    lesion = items["lesion_id"].fillna("").astype(str) if "lesion_id" in items else None
    groups = (lesion.where(lesion != "", items["isic_id"]) if lesion is not None
              else items["isic_id"])
    codes = {g: k for k, g in enumerate(np.random.default_rng(0).permutation(groups.unique()))}
    folds = groups.map(codes).to_numpy() % 5
    images = np.stack([load_image(p, SIZE) for p in items["image_path"]])
    features = extractor.predict(images.astype("float32"), batch_size=32, verbose=0)
    distances = out_of_fold_distances(features, folds)
    assert held_out_flagged(distances, folds) <= 0.05
    guard = guard_from(features, distances)
    photos = not_lesions()
    scores = guard.score(extractor.predict(np.stack(list(photos.values())).astype("float32"),
                                           verbose=0))
    assert len(photos) == 5 and (scores > 1.0).all(), dict(zip(photos, scores, strict=True))


def test_out_of_fold_distances_never_use_an_images_own_fold():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 8))
    features[:10] = features[0]  # fold 0: ten copies of one image
    folds = np.repeat([0, 1, 2, 3], 10)
    distances = out_of_fold_distances(features, folds)
    assert (distances[:10] > 0.1).all()  # its copies are in its own fold: not neighbours
    extra = np.full(40, -1)
    extra[:20] = folds[:20]
    only_neighbours = out_of_fold_distances(features, extra)
    assert np.isnan(only_neighbours[20:]).all() and not np.isnan(only_neighbours[:20]).any()
    image = Image.open(REPO / NOT_LESIONS_DIR / "chelsea.jpg")
    assert image.size[0] <= 320  # kept small in git
