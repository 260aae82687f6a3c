"""Convolutional autoencoders: conv_pool, denoise, conv_dense, conv_small (models/README.md)."""

from __future__ import annotations

import keras
from keras import layers

from models.base import IMAGE_SHAPE, Autoencoder, UpSampling2D


def _pooled_autoencoder(variant: str, filters: tuple[int, int, int]) -> Autoencoder:
    """3 x [bias-free conv relu -> BatchNorm -> pool] down to 4x4, and the mirror image back.

    'same' pooling rounds 7 up to 4, so the way back is 4 -> 8 -> 16 -> (one 'valid' conv) 14 -> 28.
    """

    def conv_bn(f, padding="same"):
        return [
            layers.Conv2D(f, 3, padding=padding, activation="relu", use_bias=False),
            layers.BatchNormalization(),
        ]

    down = []
    for f in filters:
        down += conv_bn(f) + [layers.MaxPooling2D(2, padding="same")]
    encoder = keras.Sequential(
        [keras.Input(IMAGE_SHAPE)] + down + [layers.Flatten()], name="encoder"
    )
    first, second, third = filters
    decoder = keras.Sequential(
        [keras.Input((4 * 4 * third,)), layers.Reshape((4, 4, third))]
        + conv_bn(third)
        + [UpSampling2D(2)]  # 8x8
        + conv_bn(second)
        + [UpSampling2D(2)]  # 16x16
        + conv_bn(first, padding="valid")
        + [UpSampling2D(2)]  # 14x14 -> 28x28
        + [layers.Conv2D(1, 3, padding="same", activation="sigmoid", dtype="float32")],
        name="decoder",
    )
    return Autoencoder(encoder, decoder, variant)


def conv_pool() -> Autoencoder:
    return _pooled_autoencoder("conv_pool", (32, 16, 16))


def denoise() -> Autoencoder:
    # Same network as conv_pool, wider; the noise is added by the transform stage, not here.
    return _pooled_autoencoder("denoise", (32, 32, 32))


def conv_dense(latent_dim: int = 16) -> Autoencoder:
    encoder = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            layers.Conv2D(32, 3, strides=1, padding="same"),
            layers.LeakyReLU(),
            layers.Conv2D(64, 3, strides=2, padding="same"),
            layers.LeakyReLU(),
            layers.Conv2D(128, 3, strides=2, padding="same"),
            layers.LeakyReLU(),
            layers.Flatten(),
            layers.Dense(latent_dim, name="code"),
        ],
        name="encoder",
    )
    decoder = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(7 * 7 * 128),
            layers.LeakyReLU(),
            layers.Reshape((7, 7, 128)),
            layers.Conv2DTranspose(64, 3, strides=2, padding="same"),
            layers.LeakyReLU(),
            layers.Conv2DTranspose(32, 3, strides=2, padding="same"),
            layers.LeakyReLU(),
            layers.Conv2DTranspose(
                1, 3, strides=1, padding="same", activation="sigmoid", dtype="float32"
            ),
        ],
        name="decoder",
    )
    return Autoencoder(encoder, decoder, "conv_dense")


def conv_small_features() -> list[layers.Layer]:
    """conv_small's encoder up to the code layer; vae_tril reuses it."""
    return [
        layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),  # 14x14
        layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),  # 7x7
        layers.Flatten(),
    ]


def conv_small_decoder(latent_dim: int, upsample: str = "transpose") -> keras.Sequential:
    if upsample == "transpose":
        up = [
            layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(
                1, 3, strides=1, padding="same", activation="sigmoid", dtype="float32"
            ),
        ]
    else:
        # The reference's alternative: resize then convolve, which avoids the checkerboard
        # artefacts strided transposed convolutions can leave.
        up = [
            UpSampling2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            UpSampling2D(2),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(1, 3, padding="same", activation="sigmoid", dtype="float32"),
        ]
    return keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(7 * 7 * 32, activation="relu"),
            layers.Reshape((7, 7, 32)),
        ]
        + up,
        name="decoder",
    )


def conv_small(latent_dim: int = 10, decoder: str = "transpose") -> Autoencoder:
    encoder = keras.Sequential(
        [keras.Input(IMAGE_SHAPE)]
        + conv_small_features()
        + [layers.Dense(latent_dim, name="code")],
        name="encoder",
    )
    return Autoencoder(encoder, conv_small_decoder(latent_dim, decoder), "conv_small")
