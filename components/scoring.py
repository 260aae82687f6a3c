"""The reconstruction anomaly score and the threshold rule, defined once (docs/stages.md,
"Novelty scores").

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

This is the `reconstruction` novelty score; the others, fitted on train and validation,
are components/novelty/scores.py's. threshold: the `quantile` of a score's validation
values (held-out classes excluded), above which an example is flagged; the novelty stage
calibrates it for every score (components/novelty/fit.py).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from components.evaluate.metrics import EPS  # predictions are clipped as the metrics clip them
from pipeline.errors import DataError, StageError

_TINY = 1e-12  # only multiplies a zero: the value of 0 log 0
BATCH = 512  # images per call when scoring numpy arrays


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


def encoder(model):
    """The code alone, compiled like `forward` (images -> code [B,latent] float32 numpy):
    where only the code is wanted, the decoder, the larger half of the conv models, is
    not run."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],
        reduce_retracing=True,
        autograph=False,  # as Scorer's (novelty/scores.py): nothing for autograph to convert
    )
    def run(images):
        return tf.cast(model.encode(images), tf.float32)

    return lambda images: run(tf.constant(images, tf.float32)).numpy()


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
