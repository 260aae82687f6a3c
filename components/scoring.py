"""The anomaly score and its threshold, defined once (README, "Anomaly scores"); the
SavedModel's `score` signature, export's calibration and evaluate's detection metrics
all call these.

score: how badly the model reconstructs an image, higher = more unusual.
  - autoencoders: the image's mean per-pixel binary cross-entropy (the `bce` of
    components/evaluate/metrics.py, per image);
  - VAEs: the negative ELBO in nats per image, made deterministic: the decoding of the
    posterior mean instead of a sample, plus the analytic KL. Serving must give the same
    number for the same image twice.
The input is the clean image, also for denoising models (what a client has to score).

threshold: the `quantile` of the scores of the validation split (held-out classes
excluded): above it an example is flagged.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def score_name(model) -> str:
    return "neg_elbo" if getattr(model, "is_variational", False) else "bce"


def score(model, images):
    """Per-image anomaly score [B] of images [B,28,28,1] in [0,1] (Keras ops: eager, traced
    into the SavedModel, or on any Keras backend)."""
    images = ops.cast(images, "float32")
    recon = ops.cast(model.reconstruct(images), "float32")
    bce = keras.losses.binary_crossentropy(images, recon)  # [B, 28, 28], clipped at 1e-7
    if getattr(model, "is_variational", False):
        return ops.sum(bce, axis=(1, 2)) + ops.cast(model.posterior_kl(images), "float32")
    return ops.mean(bce, axis=(1, 2))


def threshold(validation_scores: np.ndarray, quantile: float) -> float:
    """The score above which an example is flagged: a quantile of the validation scores."""
    scores = np.asarray(validation_scores, np.float64)
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError(f"cannot calibrate a threshold on {scores.size} validation scores "
                         f"({int(np.sum(~np.isfinite(scores)))} not finite)")
    return float(np.quantile(scores, quantile))
