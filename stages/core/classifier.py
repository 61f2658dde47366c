"""The classifier: backbone + head from params, and the compile/freeze rules of the two phases.

Phase 1 (train) freezes a pretrained backbone and trains only the head; phase 2 (finetune)
unfreezes the top of the backbone at a lower learning rate. A backbone trained from random
weights has nothing to protect, so it trains whole in both phases.
"""

from __future__ import annotations

import keras

from stages.core.backbones import build_base, get_backbone
from stages.core.layers import DihedralViews, ViewMean, batch_norm, probs_layer
from stages.core.params import HeadConfig, ModelConfig


def build_classifier(cfg: ModelConfig, image_size: int, n_classes: int) -> keras.Model:
    """Raw RGB (0..255) in, class probabilities out; with head.views > 1 the pooled features
    are the mean over that many flips/rotations of the image (multi-view inference, inside
    the model so every tool that runs it gets it)."""
    shape = (image_size, image_size, 3)
    inputs = keras.Input(shape, name="image")
    x = inputs
    for layer in get_backbone(cfg.arch).scaling():
        x = layer(x)
    if cfg.head.views > 1:
        x = DihedralViews(cfg.head.views, name="views")(x)
    base = build_base(cfg.arch, shape, cfg.weights)
    pretrained = cfg.weights is not None
    if pretrained:
        # The keras.io transfer-learning recipe. Note that Keras 3 does not keep this
        # training=False once the whole model trains: what keeps the ImageNet BatchNorm
        # statistics frozen is trainable=False on those layers (see unfreeze_backbone);
        # Lite0's stochastic-depth dropout does run while fine-tuning.
        base.trainable = False
        x = base(x, training=False)
    else:
        x = base(x)
    outputs = _head(x, cfg.head, n_classes)
    return keras.Model(inputs, outputs, name=cfg.name)


def _head(x, head: HeadConfig, n_classes: int):
    pool = keras.layers.GlobalAveragePooling2D if head.pooling == "avg" else (
        keras.layers.GlobalMaxPooling2D
    )
    if head.views > 1:  # pooled per view, then averaged over the views: "pool" as ever
        x = ViewMean(head.views, name="pool")(pool(name="pool_views")(x))
    else:
        x = pool(name="pool")(x)
    for i, (units, rate) in enumerate(zip(head.dense, head.dropout, strict=True)):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense{i}")(x)
        if head.batch_norm:
            x = batch_norm(name=f"head_bn{i}")(x)
        x = keras.layers.Dropout(rate, name=f"head_dropout{i}")(x)
    return probs_layer(n_classes)(x)


def compile_classifier(model: keras.Model, lr: float) -> None:
    """Give the model its optimizer; the loss and the metrics live in train_loop, which
    computes the validation AUC exactly (scikit-learn) rather than Keras' estimate."""
    model.compile(optimizer=keras.optimizers.Adam(lr))


def unfreeze_backbone(model: keras.Model, unfreeze: int | str) -> int:
    """Make the top `unfreeze` layers (or all) of the backbone trainable; returns how many."""
    base = model.get_layer("backbone")
    base.trainable = True
    layers = base.layers if unfreeze == "all" else base.layers[-int(unfreeze):] if unfreeze else []
    for layer in base.layers:
        # BatchNorm stays frozen: its statistics came from millions of images, ours are few.
        layer.trainable = layer in layers and not isinstance(
            layer, keras.layers.BatchNormalization
        )
    return sum(layer.trainable for layer in base.layers)


def model_card(cfg: ModelConfig, image_size: int, classes: list[str],
               preprocessing: dict | None = None) -> dict:
    """What predict and serve need to feed the model exactly as prepare fed it (train writes
    it; finetune copies it)."""
    return {"name": cfg.name, "arch": cfg.arch, "weights": cfg.weights,
            "image_size": image_size, "classes": classes,
            "preprocessing": preprocessing or {}}
