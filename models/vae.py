"""Variational autoencoders: vae_mlp, vae_conv, vae_bn, vae_tril (models/README.md).

Loss per image, in nats: sum over the 784 pixels of BCE(target, decoded z) with z one
reparameterised draw from q(z|x), plus beta * KL(q(z|x) || N(0, I)). With beta = 1 that is
the negative ELBO. The reference write-ups' quirks are not copied (see models/README.md):
eps has stddev 1, z = mu + exp(log_var / 2) * eps, and the KL term is always in the loss.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf
from keras import layers, ops

from models.base import IMAGE_SHAPE, PIXELS, Autoencoder
from models.conv import conv_small_decoder, conv_small_features


def gaussian_kl(mean, log_var):
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) per row, in nats."""
    return -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)


def reconstruction_nats(target, decoded):
    """Sum over pixels of the BCE = 784 x the mean per-pixel BCE Keras reports, per image."""
    bce = keras.losses.binary_crossentropy(ops.cast(target, "float32"),
                                           ops.cast(decoded, "float32"))   # [B, 28, 28]
    return ops.sum(bce, axis=(1, 2))


class VariationalAutoencoder(Autoencoder):
    """Diagonal-Gaussian VAE. `posterior` maps images to (mean, log_var); `encoder` shares its
    layers and outputs the mean only, so encode()/call()/reconstruct() are deterministic and
    sampling happens only where the ELBO needs it (train/test steps, elbo_terms, sample)."""

    is_variational = True

    def __init__(self, encoder, posterior, decoder, variant, beta=1.0, seed=0, **kwargs):
        super().__init__(encoder, decoder, variant, **kwargs)
        self.posterior = posterior
        # A Python float, baked into the traced train step: set it before compiling.
        self.beta = float(beta)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self):
        # Listed here so Keras resets them at each epoch and reports them as loss/val_loss etc.
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def posterior_sample(self, x, training=False):
        """One draw z ~ q(z|x) and KL(q(z|x) || N(0, I)), both float32, per image."""
        mean, log_var = self.posterior(x, training=training)
        # float32 even under mixed_float16: exp(log_var) overflows half precision quickly.
        mean, log_var = ops.cast(mean, "float32"), ops.cast(log_var, "float32")
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        z = mean + ops.exp(0.5 * log_var) * eps
        return z, gaussian_kl(mean, log_var)

    def elbo_terms(self, x, y, training=False):
        """(reconstruction nats [B], KL nats [B]); the reconstruction term uses one posterior
        sample, exactly as the training loss does, so it is a stochastic estimate."""
        z, kl = self.posterior_sample(x, training=training)
        return reconstruction_nats(y, self.decoder(z, training=training)), kl

    def posterior_kl(self, x):
        """Analytic KL(q(z|x) || N(0, I)) per image, no sampling (the anomaly score)."""
        mean, log_var = self.posterior(x, training=False)
        return gaussian_kl(ops.cast(mean, "float32"), ops.cast(log_var, "float32"))

    def sample(self, n, seed=0):
        """n images decoded from z ~ N(0, I)."""
        return self.decode(keras.random.normal((n, self.latent_dim), seed=seed))

    def compile_for_training(self, optimizer, jit_compile=False, steps_per_execution=1):
        # No `loss=`: the ELBO is computed in train_step/test_step.
        self.compile(optimizer=optimizer, jit_compile=jit_compile,
                     steps_per_execution=steps_per_execution)

    def _step_loss(self, data, training):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            y = x
        recon, kl = self.elbo_terms(x, y, training=training)
        per_image = recon + self.beta * kl
        if sample_weight is not None:
            sample_weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            loss = ops.mean(per_image * sample_weight)
        else:
            loss = ops.mean(per_image)
        # Per-image updates, so the epoch figures are means over images, not over batches.
        self.loss_tracker.update_state(per_image, sample_weight=sample_weight)
        self.reconstruction_tracker.update_state(recon, sample_weight=sample_weight)
        self.kl_tracker.update_state(kl, sample_weight=sample_weight)
        return loss

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self._step_loss(data, training=True)
            # A no-op unless mixed_float16 made compile() wrap the optimizer in a
            # LossScaleOptimizer, whose apply() unscales the gradients again.
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        self._step_loss(data, training=False)
        return {m.name: m.result() for m in self.metrics}


@functools.cache
def _tfp():
    # Imported on first use: tensorflow_probability pulls in tf_keras, which only vae_tril needs.
    import tensorflow_probability as tfp
    return tfp


class FullCovarianceVAE(VariationalAutoencoder):
    """VAE whose posterior is a full-covariance Gaussian, N(loc, L L^T) with L lower-triangular.

    `posterior` outputs latent + latent*(latent+1)/2 numbers per image: loc, then the
    entries of L. tfp.layers are tf-keras layers and do not mix with Keras 3, so the
    distribution is built from plain tensors here instead.
    """

    def posterior_distribution(self, x, training=False):
        tfp = _tfp()
        params = ops.cast(self.posterior(x, training=training), "float32")
        loc, tril_params = params[:, :self.latent_dim], params[:, self.latent_dim:]
        # fill_triangular, then softplus(diagonal) + 1e-5: a valid Cholesky factor for any
        # network output.
        scale_tril = tfp.bijectors.FillScaleTriL(
            diag_bijector=tfp.bijectors.Softplus(), diag_shift=1e-5).forward(tril_params)
        return tfp.distributions.MultivariateNormalTriL(loc=loc, scale_tril=scale_tril)

    def posterior_kl(self, x):
        q = self.posterior_distribution(x)
        return _tfp().distributions.kl_divergence(
            q, _tfp().distributions.MultivariateNormalDiag(loc=tf.zeros_like(q.loc)))

    def posterior_sample(self, x, training=False):
        tfd = _tfp().distributions
        q = self.posterior_distribution(x, training=training)
        # Reparameterised by hand with the model's seed generator (same stream as the
        # diagonal VAEs) rather than tfp's own seeding.
        eps = keras.random.normal(ops.shape(q.loc), seed=self.seed_generator)
        z = q.loc + tf.linalg.matvec(q.scale_tril, eps)
        prior = tfd.MultivariateNormalDiag(loc=tf.zeros_like(q.loc))
        return z, tfd.kl_divergence(q, prior)


def _gaussian_vae(variant, inputs, features, latent_dim, decoder, beta):
    """Put (mean, log_var) heads on `features` and wrap everything in a VAE."""
    mean = layers.Dense(latent_dim, name="z_mean")(features)
    log_var = layers.Dense(latent_dim, name="z_log_var")(features)
    encoder = keras.Model(inputs, mean, name="encoder")
    posterior = keras.Model(inputs, [mean, log_var], name="posterior")
    return VariationalAutoencoder(encoder, posterior, decoder, variant, beta=beta)


def vae_mlp(latent_dim: int = 2, beta: float = 1.0) -> VariationalAutoencoder:
    inputs = keras.Input(IMAGE_SHAPE)
    h = layers.Dense(256, activation="relu")(layers.Flatten()(inputs))
    decoder = keras.Sequential([
        keras.Input((latent_dim,)),
        layers.Dense(256, activation="relu"),
        layers.Dense(PIXELS, activation="sigmoid", dtype="float32"),
        layers.Reshape(IMAGE_SHAPE, dtype="float32"),
    ], name="decoder")
    return _gaussian_vae("vae_mlp", inputs, h, latent_dim, decoder, beta)


def vae_conv(latent_dim: int = 32, beta: float = 1.0) -> VariationalAutoencoder:
    inputs = keras.Input(IMAGE_SHAPE)
    h = layers.Conv2D(32, 3, activation="relu")(inputs)    # 26x26
    h = layers.MaxPooling2D(2)(h)                          # 13x13
    h = layers.Conv2D(64, 3, activation="relu")(h)         # 11x11
    h = layers.MaxPooling2D(2)(h)                          # 5x5x64 = 1600
    h = layers.Dropout(0.5)(layers.Flatten()(h))
    decoder = keras.Sequential([
        keras.Input((latent_dim,)),
        layers.Dense(5 * 5 * 64, activation="relu"),
        layers.Reshape((5, 5, 64)),
        layers.UpSampling2D(2),                                  # 10x10
        layers.Conv2DTranspose(64, 3, activation="relu"),        # 12x12
        layers.UpSampling2D(2),                                  # 24x24
        layers.Conv2DTranspose(32, 3, activation="relu"),        # 26x26
        layers.Conv2DTranspose(1, 3, activation="sigmoid", dtype="float32"),   # 28x28
    ], name="decoder")
    return _gaussian_vae("vae_conv", inputs, h, latent_dim, decoder, beta)


def vae_bn(latent_dim: int = 2, beta: float = 1.0) -> VariationalAutoencoder:
    inputs = keras.Input(IMAGE_SHAPE)
    h = inputs
    for filters, stride in ((128, 2), (256, 2), (512, 1), (1024, 1)):   # 28 -> 14 -> 7 -> 7 -> 7
        h = layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu")(h)
        h = layers.BatchNormalization()(h)
    h = layers.Dense(20, activation="relu")(layers.Flatten()(h))
    h = layers.BatchNormalization()(h)

    up = []
    for filters, stride in ((1024, 1), (512, 1), (256, 2), (128, 2)):   # 7 -> 7 -> 7 -> 14 -> 28
        up += [layers.Conv2DTranspose(filters, 3, strides=stride, padding="same",
                                      activation="relu"),
               layers.BatchNormalization()]
    decoder = keras.Sequential(
        [keras.Input((latent_dim,)),
         layers.Dense(7 * 7 * 1024, activation="relu"),
         layers.BatchNormalization(),
         layers.Reshape((7, 7, 1024))]
        + up
        + [layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid", dtype="float32")],
        name="decoder")
    return _gaussian_vae("vae_bn", inputs, h, latent_dim, decoder, beta)


def vae_tril(latent_dim: int = 10, beta: float = 1.0) -> FullCovarianceVAE:
    inputs = keras.Input(IMAGE_SHAPE)
    h = inputs
    for layer in conv_small_features():
        h = layer(h)
    params = layers.Dense(latent_dim + latent_dim * (latent_dim + 1) // 2,
                          name="posterior_params")(h)
    encoder = keras.Model(inputs, params[:, :latent_dim], name="encoder")
    posterior = keras.Model(inputs, params, name="posterior")
    return FullCovarianceVAE(encoder, posterior, conv_small_decoder(latent_dim), "vae_tril",
                             beta=beta)
