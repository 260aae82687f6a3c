"""The exported SavedModel: a trained model-zoo autoencoder behind its serving signatures.

Raw inputs (what a production client has), normalized inside the graph by
components/preprocessing.py, the same function transform applies, so there is no
training/serving skew:

    serving_default  examples string [None]: serialized tf.Examples exactly as ingest writes
                     them (`image` int64[784], raw pixels 0..255, row-major 28x28; `id` and
                     `label` may be present and are ignored)
                     -> reconstruction float32 [None,28,28,1], code float32 [None,latent],
                        score float32 [None], is_anomaly bool [None], and every novelty
                        score as score_<name> float32 [None]
    images_uint8     images uint8 [None,28,28] (raw pixels, no channel axis: the layout of
                     the IDX files and of keras.datasets) -> the same outputs
    score            examples string [None] (as serving_default) -> score, is_anomaly,
                     score_<name>

Normalized inputs (float32 in [0, 1], as transform writes them):

    images_float32   images float32 [None,28,28,1] -> the same outputs (what the
                     TFLite models compute, components/export/tflite.py)
    encode           images float32 [None,28,28,1]  -> code [None, latent]
    decode           code float32 [None, latent]    -> images [None,28,28,1]
    reconstruct      images float32 [None,28,28,1]  -> reconstruction [None,28,28,1]

score_<name> are the novelty scores of components/novelty/scores.py, with the novelty
stage's constants; score is the one export.score serves (the artifact's `score_name`
property), is_anomaly is score > its threshold from the scorer, a float32 constant.

Loads with plain TensorFlow, no project code needed:

    loaded = tf.saved_model.load(path)
    loaded.signatures["serving_default"](examples=tf.constant(serialized))["score"]

Contract: every signature checks its input inside its own graph (tf.debugging.Assert ops,
run before the model through tf.control_dependencies), so the checks travel with the
SavedModel and hold for any caller: `tf.saved_model.load` without project code,
TensorFlow Serving, the export stage itself. Whatever the documentation above does not
allow is rejected, nothing is reshaped or clipped:

    serving_default, score   examples a vector [N]; in each, `image` exactly 784 int64
                             values; every pixel in 0..255
    images_uint8             images exactly [N,28,28] (uint8: 0..255 by its type)
    images_float32, encode,  images exactly [N,28,28,1]; no NaN; every value in [0, 1]
    reconstruct              (normalized pixels: raw 0..255 floats are refused, so is Inf)
    decode                   code exactly [N,latent]; no NaN, no Inf

N may be 0. A violation raises tf.errors.InvalidArgumentError ("Graph execution error")
whose message has one line (wrapped here) naming the signature, the input and what was
expected:

    assertion failed: [images_uint8: input images must have shape [N,28,28], got [1,14,56]]
    assertion failed: [serving_default: input examples: pixel values must be in 0..255,
                       got min 0, max 1000]
    assertion failed: [score: input examples: feature image must have 784 int64 values
                       per example, got 783 in example 1]
    assertion failed: [images_float32: input images: values must be in [0, 1], got min 0,
                       max 255]
    assertion failed: [encode: input images: values must not be NaN]
    assertion failed: [decode: input code must have shape [N,8], got [1,3]]
    assertion failed: [decode: input code: values must be finite, got min 0, max inf]

(TensorFlow escapes quote characters in Assert messages, hence none around the names.) The
checks run one after the other in the order of the table (the shape first), so the first
failing one is reported. For the checks to see every shape, the signatures declare their
inputs with unknown shape (TensorSpec(None, dtype)): a declared shape is not enforced when
a signature is called (before these checks a [1,14,56] uint8 batch was silently reshaped,
and a [1,28,28] float batch reached a Conv2D and aborted the serving process), yet graph
construction and TensorFlow's graph optimizer trust it and fold a rank check on it away.
So `saved_model_cli show` lists dtypes and unknown shapes; the shapes are the ones
documented here.

What TensorFlow does itself, before the graph runs: a tf.Tensor of the wrong dtype ->
InvalidArgumentError "cannot compute ... as input #0(zero-based) was expected to be a
uint8 tensor but is a float tensor"; a missing or unknown argument name -> TypeError
"Binding inputs to tf.function failed ...". A numpy array or list is converted to the
signature's dtype first, and for images_uint8 that conversion casts without a check
(int64 1000 becomes uint8 232, float32 0.6 becomes 0): send uint8 there, or raw int64
pixels through serving_default, which checks them. A tf.Example whose `image` is not an
int64 list -> the parser's InvalidArgumentError ("Data types don't match", key image).
The restored tf.functions (`loaded.images_uint8(x)`, ...) run the same graphs and raise the
same errors as `loaded.signatures[...]`.

TensorFlow Lite: the float signatures (images_float32, encode, decode, reconstruct) convert
with the standard converter, TFLiteConverter.from_saved_model(path, signature_keys=[...]),
for every variant (models.base.UpSampling2D keeps the decoders' shapes static) except
vae_tril's images_float32, whose score needs MatrixDiagPartV3, a TensorFlow op TFLite's
builtins lack (encode, decode and reconstruct convert). Their inputs have unknown shape
there too: a SignatureRunner resizes them to what it is given; with Interpreter, call
resize_tensor_input(index, [n,28,28,1]) and allocate_tensors() first. The converter drops
the contract's Assert ops (also with Select TF ops: TFLite has no Assert), so TFLite models
do NOT check their inputs: 255.0 or NaN is computed on (NaN in, NaN out) and a batch of
another shape is reshaped or fails in the interpreter. Validate on the device side. The
edge models of components/export/tflite.py check nothing either.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from components import features as F
from components.novelty.component import SCORES
from components.novelty.scores import Scorer
from components.preprocessing import normalize

# The signatures taking images or examples and answering with all the OUTPUTS.
IMAGE_SIGNATURES = ("serving_default", "images_uint8", "images_float32")
SIGNATURES = IMAGE_SIGNATURES + ("score", "encode", "decode", "reconstruct")
SCORE_OUTPUTS = tuple(f"score_{k}" for k in SCORES)
OUTPUTS = ("reconstruction", "code", "score", "is_anomaly", *SCORE_OUTPUTS)
# VarLen, not FixedLen([784]): a wrong pixel count is then the contract's own error, naming
# the signature and the example, rather than the parser's.
RAW_EXAMPLE_SPEC = {F.IMAGE: tf.io.VarLenFeature(tf.int64)}


def float_outputs(model, fitted, served: str, with_score: bool = True):
    """The float-image computation: images float32 [B,28,28,1] in [0,1] -> the OUTPUTS
    (only reconstruction and code without `with_score`): every novelty score as
    score_<name>, the served one also as score and is_anomaly (score > its threshold,
    compared in float32). Every image signature serves it, and the TFLite models are
    converted from it."""
    scorer = Scorer(model, fitted)
    limit = tf.constant(fitted.thresholds[served], tf.float32)

    def compute(images):
        if not with_score:
            code = model.encode(images)
            return {
                "reconstruction": tf.cast(model.decode(code), tf.float32),
                "code": tf.cast(code, tf.float32),
            }
        out = scorer.forward(images)
        return {
            "reconstruction": out["reconstruction"],
            "code": out["code"],
            "score": out["scores"][served],
            "is_anomaly": tf.greater(out["scores"][served], limit),
            **{f"score_{k}": out["scores"][k] for k in SCORES},
        }

    return compute


# --- The contract, checked in the graph -------------------------------------------------


def _shape_text(shape):
    """An int32 shape vector -> the string "[1,14,56]" (a graph op)."""
    return tf.strings.join(
        ["[", tf.strings.reduce_join(tf.strings.as_string(shape), separator=","), "]"]
    )


def _number_text(x):
    if x.dtype.is_floating:
        return tf.strings.as_string(x, shortest=True)
    return tf.strings.as_string(x)


def check_shape(signature: str, name: str, expected):
    """A check (for `checked`): the input has exactly len(expected) dimensions, each equal
    to its entry (None: any size, written N)."""
    shown = "[" + ",".join("N" if d is None else str(d) for d in expected) + "]"
    rank = len(expected)

    def check(x):
        # The inputs' TensorSpecs have unknown rank, so nothing here is folded to a constant
        # from a declared shape: the caller's actual shape is what is compared.
        shape = tf.shape(x, out_type=tf.int32)
        dims = tf.concat([shape, tf.zeros([rank], tf.int32)], 0)[:rank]
        ok = tf.equal(tf.size(shape), rank)
        for i, d in enumerate(expected):
            if d is not None:
                ok = tf.logical_and(ok, tf.equal(dims[i], d))
        return tf.debugging.Assert(
            ok,
            [
                tf.strings.join(
                    [f"{signature}: input {name} must have shape {shown}, got ", _shape_text(shape)]
                )
            ],
        )

    return check


def check_not_nan(signature: str, name: str):
    def check(x):
        return tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(tf.math.is_nan(x))),
            [tf.constant(f"{signature}: input {name}: values must not be NaN")],
        )

    return check


def check_finite(signature: str, name: str):
    def check(x):
        return tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(x)),
            [
                tf.strings.join(
                    [
                        f"{signature}: input {name}: values must be finite, got min ",
                        _number_text(tf.reduce_min(x)),
                        ", max ",
                        _number_text(tf.reduce_max(x)),
                    ]
                )
            ],
        )

    return check


def check_range(signature: str, name: str, low, high, what: str, shown: str):
    """A check: every value in [low, high] (`shown` says so in the message, with the batch's
    min and max). An empty batch passes."""

    def check(x):
        ok = tf.reduce_all(tf.logical_and(x >= tf.cast(low, x.dtype), x <= tf.cast(high, x.dtype)))
        return tf.debugging.Assert(
            ok,
            [
                tf.strings.join(
                    [
                        f"{signature}: input {name}: {what} must be {shown}, got min ",
                        _number_text(tf.reduce_min(x)),
                        ", max ",
                        _number_text(tf.reduce_max(x)),
                    ]
                )
            ],
        )

    return check


def checked(x, *checks):
    """x, once every check's Assert op has passed, in order (the first failing one is the
    error): tf.control_dependencies, so whatever uses the result runs after them."""
    for check in checks:
        with tf.control_dependencies([check(x)]):
            x = tf.identity(x)
    return x


def float_images(signature: str, images):
    """The contract of the normalized-image signatures: float32 [N,28,28,1], no NaN, values
    in [0, 1] (which also rules out +-Inf) -> images with that static shape."""
    images = checked(
        images,
        check_shape(signature, "images", [None, F.HEIGHT, F.WIDTH, 1]),
        check_not_nan(signature, "images"),
        check_range(signature, "images", 0.0, 1.0, "values", "in [0, 1]"),
    )
    return tf.reshape(images, [-1, F.HEIGHT, F.WIDTH, 1])


def raw_images(examples, signature: str = "serving_default"):
    """Serialized raw tf.Examples [N] -> normalized images float32 [N,28,28,1], after the
    contract's checks: examples a vector, `image` exactly 784 int64 values in each, every
    pixel in 0..255."""
    examples = tf.reshape(checked(examples, check_shape(signature, "examples", [None])), [-1])
    sparse = tf.io.parse_example(examples, RAW_EXAMPLE_SPEC)[F.IMAGE]
    ragged = tf.RaggedTensor.from_sparse(sparse)
    lengths = tf.cast(ragged.row_lengths(), tf.int64)
    bad = tf.not_equal(lengths, F.PIXELS)
    # The first offending example (an index one past the end, of length 784, when none is).
    first = tf.argmax(tf.cast(tf.concat([bad, [True]], 0), tf.int32), output_type=tf.int64)
    length = tf.gather(tf.concat([lengths, [F.PIXELS]], 0), first)
    counted = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [
            tf.strings.join(
                [
                    f"{signature}: input examples: feature {F.IMAGE} must have {F.PIXELS} "
                    "int64 values per example, got ",
                    tf.strings.as_string(length),
                    " in example ",
                    tf.strings.as_string(first),
                ]
            )
        ],
    )
    with tf.control_dependencies([counted]):
        pixels = tf.reshape(ragged.values, [-1, F.PIXELS])
    pixels = checked(
        pixels, check_range(signature, "examples", 0, 255, "pixel values", "in 0..255")
    )
    return tf.reshape(normalize(pixels), [-1, F.HEIGHT, F.WIDTH, 1])


def max_diff(got, expected) -> float:
    """Largest |got - expected| / max(1, |expected|): absolute for values in [0, 1] (pixels,
    per-pixel BCE), relative for larger ones (codes, -ELBO in nats per image), so one
    tolerance means "float32 rounding" for every output."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected))))


def export(model, path: str, fitted, served: str) -> None:
    """Write the SavedModel with all SIGNATURES; the scorer's constants (`fitted`,
    components/novelty/scores.py) and the threshold of the `served` score are baked in."""
    threshold = fitted.thresholds[served]
    if not math.isfinite(threshold):
        raise ValueError(f"the anomaly threshold must be finite, got {threshold}")
    endpoints = _endpoints(model, fitted, served)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name in SIGNATURES:
        fn, spec = endpoints[name]
        archive.add_endpoint(name, fn, input_signature=[spec])
    archive.write_out(path, verbose=False)


def _endpoints(model, fitted, served: str) -> dict:
    """Each of SIGNATURES -> (its function, its input's TensorSpec)."""
    latent = int(model.latent_dim)
    # Unknown rank on purpose (the docstring's "Contract"): every shape reaches the checks
    # in the graph. A declared shape would be trusted by TensorFlow's graph optimizer, which
    # folds a rank check on it away, while a signature call does not enforce it.
    images_spec = tf.TensorSpec(None, tf.float32, name="images")
    uint8_spec = tf.TensorSpec(None, tf.uint8, name="images")
    code_spec = tf.TensorSpec(None, tf.float32, name="code")
    examples_spec = tf.TensorSpec(None, tf.string, name="examples")
    # Traced once: the image signatures call this one function (a call op in each graph)
    # instead of tracing the model and the scorer four times over.
    compute = tf.function(
        float_outputs(model, fitted, served),
        input_signature=[tf.TensorSpec([None, F.HEIGHT, F.WIDTH, 1], tf.float32)],
        autograph=False,  # as Keras' own endpoints: no control flow on tensors to convert
    )

    def serve(examples):
        return compute(raw_images(examples, "serving_default"))

    def images_uint8(images):
        images = checked(images, check_shape("images_uint8", "images", [None, F.HEIGHT, F.WIDTH]))
        return compute(tf.reshape(normalize(images), [-1, F.HEIGHT, F.WIDTH, 1]))

    def images_float32(images):
        return compute(float_images("images_float32", images))

    def score(examples):
        out = compute(raw_images(examples, "score"))
        return {k: out[k] for k in ("score", "is_anomaly", *SCORE_OUTPUTS)}

    def encode(images):
        return {"code": tf.cast(model.encode(float_images("encode", images)), tf.float32)}

    def decode(code):
        code = checked(
            code,
            check_shape("decode", "code", [None, latent]),
            check_not_nan("decode", "code"),
            check_finite("decode", "code"),
        )
        code = tf.reshape(code, [-1, latent])
        return {"images": tf.cast(model.decode(code), tf.float32)}

    def reconstruct(images):
        return {
            "reconstruction": tf.cast(
                model.reconstruct(float_images("reconstruct", images)), tf.float32
            )
        }

    return {
        "serving_default": (serve, examples_spec),
        "images_uint8": (images_uint8, uint8_spec),
        "images_float32": (images_float32, images_spec),
        "score": (score, examples_spec),
        "encode": (encode, images_spec),
        "decode": (decode, code_spec),
        "reconstruct": (reconstruct, images_spec),
    }
