"""The novelty scores' constants, fitted on train and validation only (never on test):

  train sample      the seen classes' class means and shared Ledoit-Wolf covariance of the
                    codes (latent), each hidden layer's mean activation difference
                    (activations); shrinkage comes from Ledoit-Wolf's closed form and the
                    mixture's modes from the train labels, so nothing is tuned
  validation        the seen classes' scores: their mean and standard deviation standardize
                    the combined score, their threshold_quantile is each score's threshold

Every example is read through examples_io, split by name: the test split is never opened
(tests/test_novelty.py checks that a run without a test split fits the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from components import examples_io, scoring
from components import features as F
from components.novelty.component import SCORES
from components.novelty.scores import (
    COMPONENTS,
    Fitted,
    activations_model,
    compiled,
    layer_differences,
)

TRAIN, VALIDATION = "train", "validation"
BATCH = 512
_MIN_SCALE = 1e-12  # a layer whose activations never differ must not divide by zero


@dataclass(frozen=True)
class Sample:
    """What the fit measured on the train sample."""

    codes: np.ndarray  # [n, D] float64
    labels: np.ndarray  # [n]
    differences: np.ndarray  # [n, layers]: layer_differences


def train_sample(model, examples, k: int, seed: int, exclude_labels) -> Sample:
    """Codes and layer differences of k train examples (0 = all) of the seen classes, picked
    reproducibly while the split streams by."""
    hidden = activations_model(model)

    @tf.function(reduce_retracing=True, autograph=False)  # as Scorer's: nothing to convert
    def measure(images):
        seen = hidden(images, training=False)
        again = hidden(model.decode(seen[-1]), training=False)
        return tf.cast(seen[-1], tf.float32), layer_differences(seen, again)

    images, labels = examples_io.sample_split(examples, TRAIN, k, seed, exclude_labels)
    codes, diffs = [], []
    for i in range(0, len(images), BATCH):
        c, d = measure(tf.constant(images[i : i + BATCH]))
        codes.append(c.numpy())
        diffs.append(d.numpy())
    return Sample(
        np.concatenate(codes).astype(np.float64),
        labels,
        np.concatenate(diffs).astype(np.float64),
    )


def density(codes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whitening [D,D], whitened class means [K,D]) of class-conditional Gaussians with one
    shared covariance, shrunk by Ledoit-Wolf (pooled within-class deviations)."""
    from sklearn.covariance import LedoitWolf

    classes = np.unique(labels)
    means = np.stack([codes[labels == c].mean(axis=0) for c in classes])
    deviations = codes - means[np.searchsorted(classes, labels)]
    covariance = LedoitWolf(assume_centered=True).fit(deviations).covariance_
    whitening = np.linalg.cholesky(np.linalg.inv(covariance))  # L L^T = the precision
    return whitening.astype(np.float32), (means @ whitening).astype(np.float32)


def fit(model, examples, *, fit_examples: int, quantile: float, seed: int, exclude_labels):
    """(Fitted, a summary of what it was fitted on)."""
    sample = train_sample(model, examples, fit_examples, seed, exclude_labels)
    whitening, class_means = density(sample.codes, sample.labels)
    scales = np.maximum(sample.differences.mean(axis=0), _MIN_SCALE).astype(np.float32)
    # Standardization and thresholds come from validation: first the three raw scores with
    # a neutral standardization, then `combined` from their validation moments.
    neutral = Fitted(
        whitening, class_means, scales, np.zeros(3, np.float32), np.ones(3, np.float32), {}
    )
    raw = validation_scores(model, neutral, examples, exclude_labels)
    stacked = np.stack([raw[k] for k in COMPONENTS], axis=1).astype(np.float64)
    centre = stacked.mean(axis=0).astype(np.float32)
    spread = stacked.std(axis=0)
    spread = np.where(spread > 0, spread, 1.0).astype(np.float32)
    raw["combined"] = ((stacked - centre) / spread).mean(axis=1).astype(np.float32)
    where = f"split {VALIDATION!r} of {examples.uri}"
    thresholds = {k: scoring.threshold(raw[k], quantile, f"{k} scores, {where}") for k in SCORES}
    fitted = Fitted(whitening, class_means, scales, centre, spread, thresholds)
    summary = {
        "fit_examples": int(len(sample.labels)),
        "validation_examples": int(len(raw["combined"])),
        "classes": [int(c) for c in np.unique(sample.labels)],
        "code_dims": int(whitening.shape[0]),
        "layers": int(len(scales)),
        "threshold_quantile": quantile,
    }
    return fitted, summary


def validation_scores(model, fitted: Fitted, examples, exclude_labels) -> dict[str, np.ndarray]:
    """Every score of the seen classes' validation examples, streamed in batches."""
    run = compiled(model, fitted)
    parts: dict[str, list] = {k: [] for k in SCORES}
    kept = total = 0
    for batch in examples_io.iter_split(examples, VALIDATION):
        keep = examples_io.kept_mask(batch[F.LABEL], exclude_labels)
        total += len(keep)
        kept += int(keep.sum())
        if keep.any():
            scores = run(batch[F.IMAGE][keep])["scores"]
            for k in SCORES:
                parts[k].append(scores[k])
    examples_io.require_examples_left(kept, total, examples, VALIDATION, exclude_labels)
    return {k: np.concatenate(v) for k, v in parts.items()}
