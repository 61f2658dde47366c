"""The clinical branch of a gradient-trained model (`clinical.inputs` with `train.solver: adam`).

The model is trained as two inputs: what it sees (the image, or a frozen backbone's features)
and the encoded clinical data (core/clinical.py), joined as

    softmax(log p_image + clinical @ kernel)

which is exactly the form a logistic head's clinical half takes, so the saved model stays the
image model and the kernel goes into its card as "clinical": evaluate, predict, the web app
and export apply it as they do for a logistic head, and a photo with no clinical data gets
p_image. Metadata dropout: each epoch every training image's clinical data is hidden (zero,
the encoding of "unknown") with probability DROPOUT, drawn from (seed, epoch, image) like the
epoch's order, so the image model alone learns to answer for photos that come with none, and a
resumed run sees the same draws. finetune carries the kernel on from train's card and trains
it with the unfrozen layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from stages.core.clinical import ClinicalEncoding
from stages.core.shards import Split, clinical_table

DROPOUT = 0.5  # share of training images shown without their clinical data, per epoch
INPUTS, CLINICAL, KERNEL = "inputs", "clinical", "clinical_logits"  # the joined model's names


@dataclass
class ClinicalBranch:
    """What a training phase needs for the branch: the encoding and each split's rows."""

    encoding: ClinicalEncoding
    train: np.ndarray  # (training images, encoded columns)
    val: np.ndarray

    @classmethod
    def of(cls, encoding: ClinicalEncoding, train: Split, val: Split) -> ClinicalBranch:
        """The branch's rows for a fold's training and validation images (split.csv's
        clinical columns)."""
        return cls(encoding, encoding.encode(clinical_table(train.ids)),
                   encoding.encode(clinical_table(val.ids)))

    def card_entry(self, joined: keras.Model) -> dict:
        """The card's "clinical" entry: the encoding and the trained kernel."""
        return self.encoding.card(joined.get_layer(KERNEL).get_weights()[0])


class LogitShift(keras.layers.Layer):
    """softmax(log p + shift), in float32 whatever the compute precision."""

    def __init__(self, **kwargs):
        super().__init__(dtype="float32", **kwargs)

    def call(self, inputs):
        probs, shift = inputs
        log_probs = keras.ops.log(keras.ops.clip(keras.ops.cast(probs, "float32"), 1e-30, 1.0))
        return keras.ops.softmax(log_probs + keras.ops.cast(shift, "float32"), axis=-1)


def joined_model(model: keras.Model, n_columns: int, kernel: np.ndarray | None = None,
                 ) -> keras.Model:
    """{"inputs": model's input, "clinical": encoded rows} → probabilities, sharing `model`'s
    layers (training it trains `model`); `kernel`: a card's coefficients to start from (else
    zeros: the image model's own answer)."""
    inputs = keras.Input(model.input_shape[1:], name=INPUTS)
    clinical = keras.Input((n_columns,), name=CLINICAL)
    probs = model(inputs)
    shift = keras.layers.Dense(probs.shape[-1], use_bias=False, kernel_initializer="zeros",
                               dtype="float32", name=KERNEL)(clinical)
    joined = keras.Model({INPUTS: inputs, CLINICAL: clinical},
                         LogitShift(name="with_clinical")([probs, shift]),
                         name=f"{model.name}_with_clinical")
    if kernel is not None:
        joined.get_layer(KERNEL).set_weights([np.asarray(kernel, np.float32)])
    return joined
