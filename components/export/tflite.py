"""TensorFlow Lite models of the float-image computation, beside the SavedModel.

    <saved_model uri>/tflite/model_float32.tflite   float32 weights and compute
    <saved_model uri>/tflite/model_int8.tflite      dynamic-range quantization: int8
                                                    weights, float compute
                                                    (Optimize.DEFAULT, no representative
                                                    dataset)

One signature, `serving_default`: images float32 [1,28,28,1] in [0,1] (normalized, as the
SavedModel's `images_float32` takes them; one image per call) -> reconstruction
[1,28,28,1], code [1,latent], score [1], is_anomaly [1], and every novelty score as
score_<name> [1] (the same function, saved_model.float_outputs, with the same baked-in
constants and threshold).

Why batch 1: it was forced. Keras 3's UpSampling2D (nearest) is `ops.repeat`, i.e.
tf.repeat, which reshapes by a shape computed at run time from the batch size; with a
dynamic batch the converter lost the height, width and channel sizes downstream and the
next Conv2D failed to convert ("'tf.Conv2D' op is neither a custom op nor a flex op";
conv_pool, denoise). The zoo now uses models.base.UpSampling2D, the same numbers with
static shapes, so a free batch axis converts too: the exported SavedModel's own float
signatures convert with the standard TFLiteConverter.from_saved_model
(components/export/saved_model.py, "TensorFlow Lite"; tests/test_serving_contract.py).
These edge models keep batch 1, the interface their artifact properties promise, with every
shape static. Flex ops (Select TF ops) are not used: they need the much larger flex
runtime on the device.

No input checks: the SavedModel's signatures check their inputs in the graph (saved_model.py,
"Contract"), but TFLite has no Assert op, the converter drops it (with or without Select
TF ops), and these models are converted from saved_model.float_outputs, which checks
nothing. So values are not checked (255.0 is computed on, NaN gives NaN scores) and the
caller validates. What the interpreter checks itself: the dtype (float64 -> ValueError
"Cannot set tensor: Got value of type FLOAT64 but expected type FLOAT32"), and with
Interpreter.set_tensor the static shape [1,28,28,1] (ValueError "Dimension mismatch"); a
SignatureRunner instead resizes the input to what it is given, after which the model
fails to prepare (RuntimeError) or, for the dense variants, may compute on a batch of
another layout (tests/test_tflite.py).

What does not convert is recorded, not fatal: when the score cannot be converted the
models carry reconstruction and code only, and `not_converted` says why (vae_tril: the
full-covariance KL takes the diagonal of its Cholesky factor, `keras.ops.diagonal`, which
TensorFlow lowers to MatrixDiagPartV3, an op TFLite's builtins lack).

Parity: the float32 model must reproduce the SavedModel on a few test images within
FLOAT32_TOL (saved_model.max_diff); the int8 model's difference is measured and reported.
"""

from __future__ import annotations

import posixpath
import re
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.io import gfile

from components import features as F
from components.export import saved_model as sm
from pipeline import console

TFLITE_SUBDIR = "tflite"
FILES = {"float32": "model_float32.tflite", "int8": "model_int8.tflite"}
SIGNATURE = "serving_default"
INPUT = "images"
# float32 TFLite kernels (XNNPACK by default) sum in another order than TensorFlow's and
# have their own exp/log/sigmoid: a few ulps to a few dozen on values of order 1 (1e-7 to
# 1e-6). 1e-5 leaves that a margin while a real conversion fault (a wrong layout, a
# dropped bias, quantized weights: 1e-3 and more) cannot pass.
FLOAT32_TOL = 1e-5


def _reason(error: Exception) -> str:
    """One line saying why the converter refused."""
    text = str(error)
    select = re.search(r"TF Select ops: ([^\n]+)", text)
    if select:
        return (
            "needs TensorFlow ops that TFLite's builtin op set lacks (convertible only "
            f"as flex/Select TF ops, not used): {select.group(1).strip()}"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'conversion failed'}"[:500]


def _write_edge_saved_model(model, fitted, served: str, path: str, with_score: bool) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE,
        sm.float_outputs(model, fitted, served, with_score),
        input_signature=[tf.TensorSpec([1, F.HEIGHT, F.WIDTH, 1], tf.float32, name=INPUT)],
    )
    archive.write_out(path, verbose=False)


def _convert(path: str, quantize: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=[SIGNATURE])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with console.native_stderr_to_log():  # the converter's absl warnings
        return converter.convert()


def run_tflite(flatbuffer: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
    """The model's outputs for images [n,28,28,1], one image per call, stacked."""
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner(SIGNATURE)
    rows = [runner(**{INPUT: images[i : i + 1].astype(np.float32)}) for i in range(len(images))]
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]} if rows else {}


def _max_diff(got: dict, expected: dict) -> float:
    return max(sm.max_diff(got[k], expected[k]) for k in got if got[k].dtype != np.bool_)


def export(
    model,
    fitted,
    served: str,
    out_dir: str,
    images: np.ndarray,
    expected: dict[str, np.ndarray],
) -> dict:
    """Convert, check and write the TFLite models to `out_dir` (`fitted`, `served`: the
    scorer's constants and the served score, as the SavedModel has them).

    images: a few normalized test images [n,28,28,1]; expected: the SavedModel's
    images_float32 outputs on them. Returns what the artifact properties record:
    files (variant -> file name), bytes, max_diff (saved_model.max_diff per variant),
    outputs (the outputs the models have), input, not_converted (what is missing -> why).
    """
    result: dict[str, Any] = {
        "files": {},
        "bytes": {},
        "max_diff": {},
        "outputs": [],
        "not_converted": {},
        "input": f"{INPUT} float32 [1,{F.HEIGHT},{F.WIDTH},1] in [0,1], one image per call",
        "signature": SIGNATURE,
    }
    with tempfile.TemporaryDirectory(prefix="tflite-") as tmp:
        flatbuffers = {}
        for with_score in (True, False):
            path = posixpath.join(tmp, f"edge-{int(with_score)}")
            _write_edge_saved_model(model, fitted, served, path, with_score)
            try:
                flatbuffers["float32"] = _convert(path, quantize=False)
            except Exception as e:  # noqa: BLE001 - the converter raises several types
                result["not_converted"]["score" if with_score else "model"] = _reason(e)
                continue
            try:
                flatbuffers["int8"] = _convert(path, quantize=True)
            except Exception as e:  # noqa: BLE001
                result["not_converted"]["int8"] = _reason(e)
            break
    for variant, flatbuffer in flatbuffers.items():  # float32 first
        got = run_tflite(flatbuffer, images)
        diff = _max_diff(got, expected)
        result["max_diff"][variant] = diff
        if variant == "float32" and not diff <= FLOAT32_TOL:
            result["not_converted"]["model"] = (
                f"the float32 model differs from the SavedModel by {diff:.3g} > "
                f"{FLOAT32_TOL:g} on {len(images)} test images: nothing written"
            )
            break
        gfile.makedirs(out_dir)
        with gfile.GFile(posixpath.join(out_dir, FILES[variant]), "wb") as f:
            f.write(flatbuffer)
        result["files"][variant] = FILES[variant]
        result["bytes"][variant] = len(flatbuffer)
        result["outputs"] = sorted(got, key=sm.OUTPUTS.index)
    return result
