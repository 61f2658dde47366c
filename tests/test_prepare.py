"""prepare's optional dermoscopy corrections: the shards hold exactly what load_image gives with
the same settings, meta.json records them, and a bad setting is refused naming its key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stages import prepare
from stages.core.images import Preprocessing, load_image
from stages.core.params import ParamsError
from stages.core.shards import read_split
from tests.bad_files import encode
from tests.test_bad_input import raw_and_split, run_stage, write_params
from tests.tiny_models import dermoscope_photo

SIZE = 32


def test_crop_and_colour_constancy_reach_the_shards_and_meta(tmp_path, params):
    photos = {f"ISIC_{i:07d}.png": encode(Image.fromarray(dermoscope_photo(120, seed=i)), "PNG")
              for i in range(6)}
    raw_and_split(tmp_path, photos, {"ISIC_0000000.png": "val", "ISIC_0000001.png": "test"})
    write_params(tmp_path, params, prepare__size=SIZE, prepare__crop_border=True,
                 prepare__color_constancy="shades_of_gray")

    result = run_stage("prepare", tmp_path)
    assert result.returncode == 0, result.stderr

    prepared = tmp_path / "data/processed/prepared"
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["preprocessing"] == {"crop_border": True, "color_constancy": "shades_of_gray"}
    for split in ("train", "val", "test"):
        shard = read_split(prepared, split)
        for image, isic_id in zip(shard.images, shard.ids, strict=True):
            raw = tmp_path / "data/raw" / f"{isic_id}.png"
            steps = Preprocessing(True, "shades_of_gray")
            assert np.array_equal(image, load_image(raw, SIZE, steps))
            assert not np.array_equal(image, load_image(raw, SIZE))  # the steps did something


def test_both_corrections_default_to_off_in_params(params):
    steps = prepare.preprocessing(params)
    assert steps.to_dict() == {"crop_border": False, "color_constancy": "none"}


@pytest.mark.parametrize("key, value, message", [
    ("color_constancy", "grey_world", "'prepare.color_constancy' must be one of none, "
                                      "shades_of_gray; got 'grey_world'"),
    ("color_constancy", False, "'prepare.color_constancy' must be one of"),
    ("crop_border", "yes", "'prepare.crop_border' must be true or false, got 'yes'"),
])
def test_a_bad_setting_names_the_key(params, key, value, message):
    params["prepare"][key] = value
    with pytest.raises(ParamsError, match=message):
        prepare.preprocessing(params)
