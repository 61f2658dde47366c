"""The out-of-distribution guard on real images: ImageNet EfficientNet-Lite0 features (the
backbone the pipeline serves) of real UDA-1 dermoscopy images against everyday photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stages.core import lite
from stages.core.images import load_image
from stages.core.ood import fit_guard
from stages.core.sources.local import read_source
from tests.conftest import UDA1_DIR

SIZE = 128


def _screenshot() -> np.ndarray:
    """A page of a document: white, lines of dark text, a blue title bar."""
    img = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 400, 30), fill=(40, 90, 200))
    for y in range(50, 290, 18):
        draw.text((12, y), "Lorem ipsum dolor sit amet, consectetur adipiscing elit", fill="black")
    return np.asarray(img.resize((SIZE, SIZE)))


@pytest.mark.slow
@pytest.mark.skipif(not UDA1_DIR.is_dir(), reason="needs ../shared/data/isic-uda1-dev")
def test_everyday_photos_are_flagged_and_held_out_lesions_are_not():
    from skimage import data

    items, _ = read_source(UDA1_DIR)
    paths = items["image_path"].sample(n=300, random_state=0).tolist()
    lesions = np.stack([load_image(p, SIZE) for p in paths]).astype("float32")
    base = lite.build_efficientnet_lite("lite0", (SIZE, SIZE, 3), include_top=False, pooling="avg")
    lite.load_imagenet_weights(base, "lite0")
    features = base.predict(lesions, batch_size=32, verbose=0)
    guard = fit_guard(features[:160], features[160:220])
    held_out = guard.score(features[220:])
    assert np.mean(held_out <= 1.0) >= 0.95, np.sort(held_out)[-8:]

    photos = {name: getattr(data, name)() for name in ("chelsea", "coffee", "astronaut",
                                                       "rocket")}
    photos["screenshot"] = _screenshot()
    others = np.stack([np.asarray(Image.fromarray(p).convert("RGB").resize((SIZE, SIZE)))
                       for p in photos.values()]).astype("float32")
    scores = dict(zip(photos, guard.score(base.predict(others, verbose=0)), strict=True))
    assert all(s > 1.0 for s in scores.values()), {k: round(float(s), 2) for k, s in scores.items()}
