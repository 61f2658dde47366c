"""Fine-tuning the top of a pretrained backbone on its frozen trunk's activations, computed
once per image (`finetune.cache_trunk: true`, issue #26 item 3).

With `finetune.unfreeze: N`, only the backbone's top layers train; everything below them
(the trunk) answers the same for an image in every epoch, since augment varied the images
once, offline. So the trunk runs once per image (through the feature cache, like a frozen
head's features) and the epochs run the top alone: on the isic2017 profile an epoch over
~1,900 images took 1-2 s on 2 CPU cores (docs/research.md), where every epoch would otherwise
run the whole network forward over every image. What trains is the same model and the same layers as
without the cache, except that the trunk's stochastic-depth dropout no longer runs (its
activations are the inference ones). `split_at_trunk` cuts a classifier (classifier.py) into
the trunk and the top, sharing its layers, so training the top trains the model that is saved.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from stages.core.errors import PipelineError


def frontier(base: keras.Model) -> list:
    """The trunk's tensors the trainable top reads: outputs of layers that neither have
    trainable weights nor read one that does, consumed by layers that do (in base's order).
    Weightless layers (pooling, concatenation, activation) stay in the trunk when all they
    read is frozen, so the cut is as high as it can be."""
    above: set[int] = set()  # id() of the layers at or above a trainable one
    for layer in base.layers[1:]:
        producers = [t._keras_history.operation for t in _inputs(layer)]
        if layer.trainable_weights or any(id(p) in above for p in producers):
            above.add(id(layer))
    if not above:
        raise PipelineError("finetune.cache_trunk: no layer of the backbone trains "
                            "(finetune.unfreeze makes only layers without weights trainable)")
    cut: list = []
    for layer in base.layers[1:]:
        if id(layer) in above:
            cut += [t for t in _inputs(layer) if id(t._keras_history.operation) not in above
                    and all(t is not c for c in cut)]
    return cut


def _inputs(layer: keras.layers.Layer) -> list:
    # Keras 3 has no public way to walk a functional graph; tests/test_frozen_trunk.py fails
    # if a Keras release renames these attributes.
    return list(layer._inbound_nodes[0].input_tensors)  # its call inside the backbone


def split_at_trunk(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(image → the trunk's activations flattened into one float32 vector, that vector →
    class probabilities), sharing `model`'s layers: training the second trains `model`.
    Call after classifier.unfreeze_backbone."""
    names = [layer.name for layer in model.layers]
    if "views" in names:
        raise PipelineError("finetune.cache_trunk needs head.views: 1 (the trunk's "
                            "activations are cached per image, not per view)")
    base = model.get_layer("backbone")
    cut = frontier(base)
    shapes = [tuple(t.shape[1:]) for t in cut]
    sizes = [math.prod(shape) for shape in shapes]
    below = keras.Model(base.input, cut, name="trunk_maps")
    above = keras.Model(cut, base.output, name="top")
    at = names.index("backbone")
    x = model.input
    for layer in model.layers[1:at]:  # the backbone's input scaling, if any: a plain chain
        x = layer(x)
    maps = below(x)
    flat = keras.layers.Concatenate(name="trunk_flat")(
        [keras.layers.Flatten(name=f"trunk_flat{i}")(m) for i, m in enumerate(maps)])
    trunk = keras.Model(model.input, flat, name=f"{model.name}_trunk")
    vector = keras.Input((sum(sizes),), name="trunk")
    offsets = np.cumsum([0, *sizes])
    y = above([keras.layers.Reshape(shape, name=f"trunk_map{i}")(vector[:, a:b])
               for i, (shape, a, b) in enumerate(zip(shapes, offsets, offsets[1:],
                                                     strict=False))])
    for layer in model.layers[at + 1:]:  # pool and head: a plain chain
        y = layer(y)
    return trunk, keras.Model(vector, y, name=f"{model.name}_top")
