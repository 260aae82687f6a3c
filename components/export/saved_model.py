"""The exported SavedModel: a trained model-zoo autoencoder behind its serving signatures.

Raw inputs (what a production client has), normalized inside the graph by
components/preprocessing.py, the same function transform applies, so there is no
training/serving skew:

    serving_default  examples string [None]: serialized tf.Examples exactly as ingest writes
                     them (`image` int64[784], raw pixels 0..255, row-major 28x28; `id` and
                     `label` may be present and are ignored)
                     -> reconstruction float32 [None,28,28,1], code float32 [None,latent],
                        score float32 [None], is_anomaly bool [None]
    images_uint8     images uint8 [None,28,28] (raw pixels, no channel axis: the layout of
                     the IDX files and of keras.datasets) -> the same four outputs
    score            examples string [None] (as serving_default) -> score, is_anomaly

Normalized inputs (float32 in [0, 1], as transform writes them):

    images_float32   images float32 [None,28,28,1] -> the same four outputs (what the
                     TFLite models compute, components/export/tflite.py)
    encode           images float32 [None,28,28,1]  -> code [None, latent]
    decode           code float32 [None, latent]    -> images [None,28,28,1]
    reconstruct      images float32 [None,28,28,1]  -> reconstruction [None,28,28,1]

score is the anomaly score defined in components/scoring.py (its name is the artifact's
`score_name` property); is_anomaly is score > the threshold export calibrated on the
validation split, a float32 constant in the graph.

Loads with plain TensorFlow, no project code needed:

    loaded = tf.saved_model.load(path)
    loaded.signatures["serving_default"](examples=tf.constant(serialized))["score"]
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from components import features as F
from components import scoring
from components.preprocessing import normalize

# The signatures taking images or examples and answering with all four outputs.
IMAGE_SIGNATURES = ("serving_default", "images_uint8", "images_float32")
SIGNATURES = IMAGE_SIGNATURES + ("score", "encode", "decode", "reconstruct")
OUTPUTS = ("reconstruction", "code", "score", "is_anomaly")
RAW_EXAMPLE_SPEC = {F.IMAGE: tf.io.FixedLenFeature([F.PIXELS], tf.int64)}


def score_outputs(model, threshold: float):
    """(images float32 [B,28,28,1] in [0,1], their reconstruction or None) -> score [B] and
    is_anomaly [B] (score > threshold, compared in float32)."""
    limit = tf.constant(threshold, tf.float32)

    def compute(images, reconstruction=None):
        score = tf.cast(scoring.score(model, images, reconstruction), tf.float32)
        return {"score": score, "is_anomaly": tf.greater(score, limit)}

    return compute


def float_outputs(model, threshold: float, with_score: bool = True):
    """The float-image computation: images float32 [B,28,28,1] in [0,1] -> the OUTPUTS
    (only reconstruction and code without `with_score`). Every image signature serves it,
    and the TFLite models are converted from it."""
    scores = score_outputs(model, threshold)

    def compute(images):
        code = model.encode(images)
        reconstruction = model.decode(code)
        out = {"reconstruction": tf.cast(reconstruction, tf.float32),
               "code": tf.cast(code, tf.float32)}
        if with_score:  # from the reconstruction just computed: the decoder runs once
            out.update(scores(images, reconstruction))
        return out

    return compute


def raw_images(examples):
    """Serialized raw tf.Examples [B] -> normalized images float32 [B,28,28,1]."""
    pixels = tf.io.parse_example(examples, RAW_EXAMPLE_SPEC)[F.IMAGE]
    return tf.reshape(normalize(pixels), [-1, F.HEIGHT, F.WIDTH, 1])


def max_diff(got, expected) -> float:
    """Largest |got - expected| / max(1, |expected|): absolute for values in [0, 1] (pixels,
    per-pixel BCE), relative for larger ones (codes, -ELBO in nats per image), so one
    tolerance means "float32 rounding" for every output."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected))))


def export(model, path: str, threshold: float) -> None:
    """Write the SavedModel with all SIGNATURES; `threshold` (a finite float) is baked in."""
    if not math.isfinite(threshold):
        raise ValueError(f"the anomaly threshold must be finite, got {threshold}")
    latent = int(model.latent_dim)
    images_spec = tf.TensorSpec([None, F.HEIGHT, F.WIDTH, 1], tf.float32, name="images")
    uint8_spec = tf.TensorSpec([None, F.HEIGHT, F.WIDTH], tf.uint8, name="images")
    code_spec = tf.TensorSpec([None, latent], tf.float32, name="code")
    examples_spec = tf.TensorSpec([None], tf.string, name="examples")
    compute = float_outputs(model, threshold)
    scores = score_outputs(model, threshold)

    def serve(examples):
        return compute(raw_images(examples))

    def images_uint8(images):
        return compute(tf.reshape(normalize(images), [-1, F.HEIGHT, F.WIDTH, 1]))

    def score(examples):
        return scores(raw_images(examples))

    def encode(images):
        return {"code": tf.cast(model.encode(images), tf.float32)}

    def decode(code):
        return {"images": tf.cast(model.decode(code), tf.float32)}

    def reconstruct(images):
        return {"reconstruction": tf.cast(model.reconstruct(images), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[examples_spec])
    archive.add_endpoint("images_uint8", images_uint8, input_signature=[uint8_spec])
    archive.add_endpoint("images_float32", compute, input_signature=[images_spec])
    archive.add_endpoint("score", score, input_signature=[examples_spec])
    archive.add_endpoint("encode", encode, input_signature=[images_spec])
    archive.add_endpoint("decode", decode, input_signature=[code_spec])
    archive.add_endpoint("reconstruct", reconstruct, input_signature=[images_spec])
    archive.write_out(path, verbose=False)
