"""The anomaly score and its threshold, defined once (README, "Anomaly scores"); the
SavedModel's `score` signature, export's calibration and evaluate's detection metrics
all call these.

score: how badly the model reconstructs an image, higher = more unusual, measured above
what no model can remove: the image's own pixel entropy (the floor of its BCE, README
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
excluded): above it an example is flagged.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

_TINY = 1e-12  # only multiplies a zero: the value of 0 log 0

def is_variational(model) -> bool:
    return bool(getattr(model, "is_variational", False))


def score_name(model) -> str:
    return "neg_elbo_excess" if is_variational(model) else "bce_excess"


def score(model, images):
    """Per-image anomaly score [B] of images [B,28,28,1] in [0,1] (Keras ops: eager, traced
    into the SavedModel, or on any Keras backend)."""
    images = ops.cast(images, "float32")
    recon = ops.cast(model.reconstruct(images), "float32")
    bce = keras.losses.binary_crossentropy(images, recon)  # [B, 28, 28], clipped at 1e-7
    excess = bce - pixel_entropy(images)[..., 0]
    if is_variational(model):
        return ops.sum(excess, axis=(1, 2)) + ops.cast(model.posterior_kl(images), "float32")
    return ops.mean(excess, axis=(1, 2))


def pixel_entropy(images):
    """Per-pixel entropy of grey levels in [0, 1] read as Bernoulli probabilities (0 log 0
    = 0), same shape as `images`."""
    p = ops.clip(images, 0.0, 1.0)
    return -(p * ops.log(ops.maximum(p, _TINY)) + (1.0 - p) * ops.log(ops.maximum(1.0 - p, _TINY)))


def threshold(validation_scores: np.ndarray, quantile: float) -> float:
    """The score above which an example is flagged: a quantile of the validation scores."""
    scores = np.asarray(validation_scores, np.float64)
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError(f"cannot calibrate a threshold on {scores.size} validation scores "
                         f"({int(np.sum(~np.isfinite(scores)))} not finite)")
    return float(np.quantile(scores, quantile))
