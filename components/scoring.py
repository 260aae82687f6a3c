"""The anomaly score and its threshold, defined once (docs/stages.md, "Anomaly scores"); the
SavedModel's `score` signature, export's calibration and evaluate's detection metrics
all call these.

score: how badly the model reconstructs an image, higher = more unusual, measured above
what no model can remove: the image's own pixel entropy (the floor of its BCE, docs/stages.md,
"Metrics"). Per pixel that is the Bernoulli KL divergence between the image and its
reconstruction: 0 for a perfect one, whatever the image.
  - autoencoders: the image's mean per-pixel BCE minus its mean per-pixel entropy (the
    `bce_excess` of components/evaluate/metrics.py, per image);
  - VAEs: the negative ELBO minus 784 x that entropy, in nats per image, made
    deterministic: the decoding of the posterior mean instead of a sample, plus the
    analytic KL. Serving must give the same number for the same image twice.
Without the entropy term the score mostly measures how much grey an image has: measured
on Fashion-MNIST with class 5 (sandals, sparse images) held out, plain BCE ranks them
*less* unusual than the seen classes (AUROC 0.30), BCE minus entropy 0.87.
The input is the clean image, also for denoising models (what a client has to score).

threshold: the `quantile` of the scores of the validation split (held-out classes
excluded): above it an example is flagged. calibrate_on_validation is where both evaluate
(the threshold it reports) and export (the one it bakes into the SavedModel) compute it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from components import examples_io
from components.evaluate.metrics import EPS  # predictions are clipped as the metrics clip them
from pipeline.errors import DataError, StageError

if TYPE_CHECKING:
    from pipeline.artifacts import Artifact

_TINY = 1e-12  # only multiplies a zero: the value of 0 log 0
BATCH = 512  # images per call when scoring numpy arrays
VALIDATION = "validation"  # the split the threshold is calibrated on


def is_variational(model) -> bool:
    return bool(getattr(model, "is_variational", False))


def score_name(model) -> str:
    return "neg_elbo_excess" if is_variational(model) else "bce_excess"


def score(model, images, reconstruction=None):
    """Per-image anomaly score [B] of images [B,28,28,1] in [0,1] (Keras ops: eager, traced
    into the SavedModel, or on any Keras backend). Pass `reconstruction` when it is
    already computed (the serving signatures), to run the model once."""
    images = ops.cast(images, "float32")
    if reconstruction is None:
        reconstruction = model.reconstruct(images)
    # Clipped as components/evaluate/metrics.py clips, which also drops the logits Keras'
    # sigmoid leaves on its output: binary_crossentropy would otherwise take them,
    # unclipped, for some decoders (a final sigmoid conv) and not others (Dense + Reshape).
    recon = ops.clip(ops.cast(reconstruction, "float32"), EPS, 1.0 - EPS)
    bce = keras.losses.binary_crossentropy(images, recon)  # [B, 28, 28]
    excess = bce - pixel_entropy(images)[..., 0]
    if is_variational(model):
        return ops.sum(excess, axis=(1, 2)) + ops.cast(model.posterior_kl(images), "float32")
    return ops.mean(excess, axis=(1, 2))


def scores(model, images: np.ndarray) -> np.ndarray:
    """`score` over a numpy array of images, in batches, as float32 numpy."""
    parts = [
        np.asarray(score(model, images[i : i + BATCH]), np.float32)
        for i in range(0, len(images), BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros([0], np.float32)


def forward(model):
    """One compiled pass (a tf.function, traced once for any batch size): images float32
    [B,28,28,1] -> code [B,latent], reconstruction [B,28,28,1], score [B], the decoder run
    once for both. Eager Keras calls cost ~10x more per image on CPU (measured: 6,086
    validation scores 12 s eager vs 70,000 SavedModel-graph embeddings 13 s)."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)], reduce_retracing=True
    )
    def run(images):
        code = model.encode(images)
        reconstruction = model.decode(code)
        return {
            "code": tf.cast(code, tf.float32),
            "reconstruction": tf.cast(reconstruction, tf.float32),
            "score": tf.cast(score(model, images, reconstruction), tf.float32),
        }

    return lambda images: {k: v.numpy() for k, v in run(tf.constant(images, tf.float32)).items()}


def encoder(model):
    """The code alone, compiled like `forward` (images -> code [B,latent] float32 numpy):
    where only the code is wanted, the decoder, the larger half of the conv models, is
    not run."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)], reduce_retracing=True
    )
    def run(images):
        return tf.cast(model.encode(images), tf.float32)

    return lambda images: run(tf.constant(images, tf.float32)).numpy()


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and the validation scores it came from."""

    threshold: float
    scores: np.ndarray  # float32, of the kept examples in read order
    left_out: int  # examples of the excluded classes

    @property
    def examples(self) -> int:
        """How many validation examples it was calibrated on."""
        return int(len(self.scores))


def calibrate_on_validation(fn, examples: Artifact, quantile: float, exclude_labels) -> Calibration:
    """The anomaly threshold of evaluate and export: the `quantile` of the scores of the
    validation split of `examples` without the classes `exclude_labels`
    (data.holdout_labels), the split streamed in batches; `fn` = forward(model). A
    DataError when no example is left."""
    return calibrate(
        fn,
        examples_io.iter_split(examples, VALIDATION),
        quantile,
        exclude_labels,
        f"split {VALIDATION!r} of {examples.uri}",
        lambda kept, total: examples_io.require_examples_left(
            kept, total, examples, VALIDATION, exclude_labels
        ),
    )


def calibrate(
    fn, batches, quantile: float, exclude_labels, where: str, require_left=lambda kept, total: None
) -> Calibration:
    """The threshold from streamed validation batches (components/examples_io.iter_split):
    `fn` = forward(model); examples of classes `exclude_labels` left out. Exact (the same
    np.quantile as on the whole split): the images pass in batches, only the scores are
    kept, 4 bytes per validation example (0.13% of the 3,136 bytes of its parsed image).
    `require_left(kept, total)` raises when nothing is left."""
    parts, left_out = [], 0
    excluded = np.asarray(tuple(exclude_labels), np.int64)
    for batch in batches:
        keep = ~np.isin(batch["label"], excluded)
        left_out += int((~keep).sum())
        if keep.any():
            parts.append(fn(batch["image"][keep])["score"])
    values = np.concatenate(parts) if parts else np.zeros([0], np.float32)
    require_left(len(values), len(values) + left_out)
    return Calibration(threshold(values, quantile, where), values, left_out)


def pixel_entropy(images):
    """Per-pixel entropy of grey levels in [0, 1] read as Bernoulli probabilities (0 log 0
    = 0), same shape as `images`."""
    p = ops.clip(images, 0.0, 1.0)
    return -(p * ops.log(ops.maximum(p, _TINY)) + (1.0 - p) * ops.log(ops.maximum(1.0 - p, _TINY)))


def threshold(validation_scores: np.ndarray, quantile: float, where: str) -> float:
    """The score above which an example is flagged: a quantile of the validation scores
    (`where`: the split and artifact, for errors), rounded to the float32 the SavedModel
    compares in, so evaluate and export report the same number."""
    values = np.asarray(validation_scores, np.float64)
    if values.size == 0:
        raise DataError(f"no validation examples to calibrate the anomaly threshold on ({where})")
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        raise StageError(
            f"{bad} of {values.size} validation anomaly scores are not finite "
            f"({where}): the model outputs NaN or infinity"
        )
    return float(np.float32(np.quantile(values, quantile)))
