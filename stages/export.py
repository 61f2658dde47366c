"""Stage export: the served model (models/served.json) as one TensorFlow SavedModel and TFLite.

models/export/saved_model/  for TF Serving or tf.saved_model.load (signature `serve`)
models/export/model.tflite  for phones and edge devices; float16 weights when
                            params.yaml export.float16 (half the size, ~1e-3 off)
models/export/model.json    the card: classes (the output order), image size, preprocessing,
                            members, calibration, referral threshold and the estimate
Both take float32 RGB 0..255, (n, size, size, 3), and answer the members' mean probabilities,
calibrated. The out-of-distribution guard is not in the graph: models/export/ood.npz with its
feature space in model.json ("ood"), as predict and the web app apply it. Nor is the
balanced-accuracy rule (compare.class_decision): with it, the predicted class is
argmax(log p + decision.class_bias) of the graph's probabilities, as model.json says.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import keras
import numpy as np

from stages.core.cli import run_stage
from stages.core.errors import PipelineError
from stages.core.inference import member_outputs
from stages.core.layers import TemperatureScaling
from stages.core.model_io import write_model
from stages.core.params import flag, stage_params
from stages.core.paths import EXPORT_DIR, GUARD_FILE, MODEL_CARD, SERVED_CARD
from stages.core.predictor import Predictor
from stages.core.worklog import work


def to_tflite(saved_model: Path, float16: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if float16:
        # Weights stored as float16, computed in float32: the one quantization that needs
        # no calibration images and keeps probabilities within ~1e-3.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _content_uuid(saved_model: Path) -> None:
    """fingerprint.pb's uuid is random per write, so the same model exported twice differed
    and DVC saw a changed output on every fresh `dvc repro`. Replaced by one derived from the
    fingerprint's own content hashes: an id of what was saved, as stable as the rest."""
    from tensorflow.core.protobuf.fingerprint_pb2 import FingerprintDef

    path = saved_model / "fingerprint.pb"
    fingerprint = FingerprintDef.FromString(path.read_bytes())
    fingerprint.ClearField("uuid")
    fingerprint.uuid = str(int(hashlib.sha256(fingerprint.SerializeToString(
        deterministic=True)).hexdigest()[:32], 16))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def write_saved_model(model: keras.Model, path: Path) -> None:
    """model as a SavedModel with the signature `serve` (and `serving_default`, TF Serving's),
    the same model giving the same bytes. Keras' model.export stores the variables in an
    order that changes from process to process; here they are tracked in the model's own."""
    import tensorflow as tf

    # Dropout's seed state is a variable drawn anew by each process that loads the model;
    # inference never reads it.
    for variable in model.non_trainable_variables:
        if variable.path.endswith("seed_generator_state"):
            variable.assign(np.zeros(variable.shape, variable.dtype))
    size = model.input_shape[1]
    archive = tf.Module()
    archive.model_variables = [variable.value for variable in model.variables]
    archive.serve = tf.function(
        lambda image: model(image, training=False),
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="image")])
    tf.saved_model.save(archive, str(path),
                        signatures={"serve": archive.serve, "serving_default": archive.serve})
    _content_uuid(path)


def export_model(model: keras.Model, card: dict, out_dir: Path, float16: bool) -> None:
    """SavedModel + TFLite + the Keras file (what `python -m stages.app.predict --model
    models/export` loads) + the card into out_dir, replacing what was there; the same model
    gives the same bytes."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    saved = out_dir / "saved_model"
    write_saved_model(model, saved)
    (out_dir / "model.tflite").write_bytes(to_tflite(saved, float16))
    write_model(model, out_dir / "model.keras",
                {**card, "exported_from": card.get("name"), "tflite_float16": float16})


def tflite_predict(path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities from a .tflite file for a float32 batch: the check that export worked.

    LiteRT (ai-edge-litert) is the interpreter's new home; TF 2.21 still ships the old one.
    """
    import warnings

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TF's own: "tf.lite.Interpreter is deprecated"
        interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def served_graph(predictor: Predictor) -> keras.Model:
    """The served model as one Keras graph: every member on the same input (members that
    share a frozen backbone share its pass and its weights), their mean, then the
    calibration. A deployer loads one file."""
    size = predictor.image_size
    inputs = keras.Input((size, size, 3), name="image")
    outputs = [probs for probs, _ in member_outputs(predictor.members, inputs)]
    mean = keras.layers.Average(name="mean")(outputs) if len(outputs) > 1 else outputs[0]
    calibrated = TemperatureScaling(predictor.temperature, name="calibration")(mean)
    return keras.Model(inputs, calibrated, name="served")


def main() -> None:
    float16 = flag(stage_params("export"), "export.float16")
    predictor = Predictor.load(SERVED_CARD, with_guard=False)  # its file is copied below
    model = served_graph(predictor)
    card = {k: v for k, v in predictor.card.items() if k != "members"} | {
        "members": [f"{m['backbone']}/{m['fold']}" for m in predictor.card["members"]],
        "calibration": {**predictor.card["calibration"], "inside_graph": True}}
    if predictor.clinical_inputs:  # one graph of images; the clinical halves are per member
        card["clinical_not_in_graph"] = (
            f"the members use {', '.join(predictor.clinical_inputs)} when given; this graph "
            "answers as for photos without clinical data (predict and the web app use them)")
    if predictor.class_bias:
        card["decision"] = {**card["decision"], "predicted_class": (
            "argmax(log p + class_bias) of this graph's probabilities (not in the graph)")}
    if "ood" in card:  # the guard travels beside the model (not in its graph)
        card["ood"] = {**card["ood"], "file": GUARD_FILE.name}
    with work("export"):
        export_model(model, card, EXPORT_DIR, float16)
        if "ood" in card:
            shutil.copyfile(GUARD_FILE, EXPORT_DIR / GUARD_FILE.name)
    if MODEL_CARD.exists():  # the card for people travels with the model (dvc artifacts get)
        shutil.copyfile(MODEL_CARD, EXPORT_DIR / MODEL_CARD.name)
    # Check the exported file answers like the served model (predict's path) before calling
    # it done.
    size = predictor.image_size
    images = np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype(np.uint8)
    want = predictor.predict(images)
    got = tflite_predict(EXPORT_DIR / "model.tflite", images.astype(np.float32))
    gap = float(np.abs(got - want).max())
    if gap > (2e-2 if float16 else 1e-3):
        raise PipelineError(f"the TFLite model differs from the served model by {gap:.2g}")
    tflite_mb = (EXPORT_DIR / "model.tflite").stat().st_size / 1e6
    print(f"exported {predictor.name} ({len(predictor.members)} member(s), calibrated) to "
          f"{EXPORT_DIR}/: saved_model/, model.tflite ({tflite_mb:.1f} MB"
          f"{', float16' if float16 else ''}; max |Δp| vs the served model {gap:.1e})")


if __name__ == "__main__":
    run_stage("export", main)
