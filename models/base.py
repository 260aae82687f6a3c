"""The Autoencoder base class every variant is an instance (or subclass) of.

A model is an `encoder` (images [B,28,28,1] in [0,1] -> flat code [B, latent_dim]) and a
`decoder` (code -> images, sigmoid), both functional Keras models, so callers that need only
one half (embedding export, latent-grid plots) can use it directly.
"""

from __future__ import annotations

import keras
from keras import layers, ops

IMAGE_SHAPE = (28, 28, 1)
PIXELS = 28 * 28


@keras.saving.register_keras_serializable(package="models")
class UpSampling2D(layers.UpSampling2D):
    """keras.layers.UpSampling2D with static output shapes: the same nearest-neighbour
    repeat, written as stack + reshape to the known output size.

    Keras' own (nearest) is ops.repeat, which TensorFlow lowers to a reshape by a shape
    computed at run time from the batch size; with a free batch axis the TFLite converter
    then loses height, width and channels downstream and cannot lower the next Conv2D
    ("'tf.Conv2D' op is neither a custom op nor a flex op"). Stacking copies and reshaping
    to constant sizes keeps every dimension but the batch static, on every backend.

    The numbers are exactly Keras' (each output pixel a copy of one input pixel, the same
    one), and the layer has no weights and the same class name, so weights files keep their
    layout: checkpoints written with keras.layers.UpSampling2D load unchanged
    (tests/test_serving_contract.py). Other interpolations, channels_first and inputs of
    unknown spatial size fall back to Keras' implementation.
    """

    def call(self, inputs):
        _, height, width, channels = inputs.shape
        if (
            self.interpolation != "nearest"
            or self.data_format != "channels_last"
            or None in (height, width, channels)
        ):
            return super().call(inputs)
        rows, cols = self.size
        # Rows first, then columns, as Keras repeats: the gradient then sums the copies in
        # the same order too, so training steps give the same numbers as well.
        x = ops.stack([inputs] * rows, axis=2)  # [B, H, rows, W, C]
        x = ops.reshape(x, (-1, height * rows, width, channels))
        x = ops.stack([x] * cols, axis=3)  # [B, H*rows, W, cols, C]
        return ops.reshape(x, (-1, height * rows, width * cols, channels))


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
        # Targets are grey levels in [0,1], so BCE has a floor above zero
        # (components/evaluate/metrics.py); MSE is tracked alongside because it has none.
        self.compile(
            optimizer=optimizer,
            loss="binary_crossentropy",
            metrics=["mse"],
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
