"""The Autoencoder base class every variant is an instance (or subclass) of.

A model is an `encoder` (images [B,28,28,1] in [0,1] -> flat code [B, latent_dim]) and a
`decoder` (code -> images, sigmoid), both functional Keras models, so callers that need only
one half (embedding export, latent-grid plots) can use it directly.
"""

from __future__ import annotations

import keras

IMAGE_SHAPE = (28, 28, 1)
PIXELS = 28 * 28


class Autoencoder(keras.Model):
    """Deterministic autoencoder trained with Keras' stock `fit` on (input, target) pairs."""

    is_variational: bool = False

    def __init__(self, encoder: keras.Model, decoder: keras.Model, variant: str, **kwargs):
        super().__init__(name=variant, **kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.variant = variant
        self.latent_dim = int(encoder.outputs[0].shape[-1])
        # Both halves are functional models, built when constructed, so there is nothing left
        # to build: summary(), count_params() and save_weights() work before the first call.
        self.built = True

    def call(self, x, training=False):
        # `training` must reach the sub-models explicitly or BatchNorm/Dropout inside them
        # would run in inference mode during fit.
        return self.decoder(self.encoder(x, training=training), training=training)

    def encode(self, x):
        return self.encoder(x, training=False)

    def decode(self, z):
        return self.decoder(z, training=False)

    def reconstruct(self, x):
        return self.decode(self.encode(x))

    def compile_for_training(self, optimizer, jit_compile=False, steps_per_execution=1):
        # Targets are grey levels in [0,1], so BCE has a floor above zero (components/evaluate/metrics.py);
        # MSE is tracked alongside because it has none.
        self.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["mse"],
                     jit_compile=jit_compile, steps_per_execution=steps_per_execution)
