"""Fully connected autoencoders: dense, sparse, deep (models/README.md)."""

from __future__ import annotations

import keras
from keras import layers, ops

from models import SPARSE_L1
from models.base import IMAGE_SHAPE, PIXELS, Autoencoder


class _L1(keras.regularizers.L1):
    """L1 on a float32 copy: under mixed_float16 the code is float16, and Keras sums a
    model's losses in float32 (a float16 penalty fails to add: TypeError on TensorFlow)."""

    def __call__(self, x):
        return super().__call__(ops.cast(x, "float32"))


def _mlp_autoencoder(
    variant: str, hidden: tuple[int, ...], latent_dim: int, activity_l1: float = 0.0
) -> Autoencoder:
    """784 -> hidden... -> latent_dim (relu) -> reversed hidden... -> 784 sigmoid."""
    # Keras 3 divides activity penalties by the batch size, as Keras 1/2 did in the reference.
    regularizer = _L1(activity_l1) if activity_l1 else None
    encoder = keras.Sequential(
        [keras.Input(IMAGE_SHAPE), layers.Flatten()]
        + [layers.Dense(units, activation="relu") for units in hidden]
        + [
            layers.Dense(
                latent_dim, activation="relu", activity_regularizer=regularizer, name="code"
            )
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [keras.Input((latent_dim,))]
        + [layers.Dense(units, activation="relu") for units in reversed(hidden)]
        # float32 from the last matmul on, so mixed_float16 training still gets a float32
        # sigmoid and loss.
        + [
            layers.Dense(PIXELS, activation="sigmoid", dtype="float32"),
            layers.Reshape(IMAGE_SHAPE, dtype="float32"),
        ],
        name="decoder",
    )
    return Autoencoder(encoder, decoder, variant)


def dense(latent_dim: int = 32) -> Autoencoder:
    return _mlp_autoencoder("dense", (), latent_dim)


def sparse(latent_dim: int = 32, activity_l1: float = SPARSE_L1) -> Autoencoder:
    return _mlp_autoencoder("sparse", (), latent_dim, activity_l1)


def deep(latent_dim: int = 32) -> Autoencoder:
    return _mlp_autoencoder("deep", (128, 64), latent_dim)
