"""Variational autoencoders: vae_mlp, vae_conv, vae_bn, vae_tril (models/README.md).

Loss per image, in nats: sum over the 784 pixels of BCE(target, decoded z) with z one
reparameterised draw from q(z|x), plus beta * KL(q(z|x) || N(0, I)). With beta = 1 that is
the negative ELBO. The reference write-ups' quirks are not copied (see models/README.md):
eps has stddev 1, z = mu + exp(log_var / 2) * eps, and the KL term is always in the loss.

Backend-neutral (keras.ops and keras.random only): the same code trains on TensorFlow, JAX
or PyTorch (models/README.md, "Portability").
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import keras
from keras import layers, ops

from models.base import IMAGE_SHAPE, PIXELS, Autoencoder, UpSampling2D
from models.conv import conv_small_decoder, conv_small_features


def gaussian_kl(mean, log_var):
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) per row, in nats."""
    return -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)


def reconstruction_nats(target, decoded):
    """Sum over pixels of the BCE = 784 x the mean per-pixel BCE Keras reports, per image."""
    bce = keras.losses.binary_crossentropy(
        ops.cast(target, "float32"), ops.cast(decoded, "float32")
    )  # [B, 28, 28]
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
        self._in_elbo_step = False

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
        # No `loss=`: the ELBO is computed in compute_loss.
        self.compile(
            optimizer=optimizer, jit_compile=jit_compile, steps_per_execution=steps_per_execution
        )

    # fit/evaluate run Keras' own train_step/test_step, one per backend (tf.GradientTape,
    # jax.value_and_grad over stateless variables, torch autograd; loss scaling included):
    # forward pass, compute_loss, gradients, optimizer. Within a step the forward pass is the
    # ELBO's sampled one and returns (decoded z, KL), so a step runs the network once, with
    # the same seed-generator draws, BatchNorm updates and dropout masks as a hand-written
    # step, while call() outside a step stays the deterministic posterior-mean path.
    # (JAX traces train_step under jit: the flag is read while tracing, so it holds there too.)

    def call(self, x, training=False):
        if self._in_elbo_step:
            z, kl = self.posterior_sample(x, training=training)
            return self.decoder(z, training=training), kl
        return super().call(x, training=training)

    @contextlib.contextmanager
    def _elbo_step(self):
        self._in_elbo_step = True
        try:
            yield
        finally:
            self._in_elbo_step = False

    def train_step(self, *args):
        with self._elbo_step():
            return super().train_step(*args)

    def test_step(self, *args):
        with self._elbo_step():
            return super().test_step(*args)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        decoded, kl = y_pred
        if y is None:
            y = x
        recon = reconstruction_nats(y, decoded)
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


class TriLGaussian(NamedTuple):
    """N(loc, scale_tril scale_tril^T) per row: loc [B, k], scale_tril [B, k, k]."""

    loc: object
    scale_tril: object


def fill_scale_tril(params, latent_dim: int):
    """tfp.bijectors.FillScaleTriL(diag_bijector=Softplus(), diag_shift=1e-5).forward in
    keras.ops (equal to within 1 ulp): tfp's fill_triangular layout (its rows are filled from
    both ends of the vector, not row-major, so trained weights keep their meaning), then
    softplus(diagonal) + 1e-5, a valid Cholesky factor for any network output."""
    n = latent_dim
    filled = ops.concatenate([params[:, n:], ops.flip(params, axis=-1)], axis=-1)
    tril = ops.tril(ops.reshape(filled, (-1, n, n)))
    on_diagonal = ops.cast(ops.eye(n), "bool")
    return ops.where(on_diagonal, ops.softplus(tril) + 1e-5, tril)


def tril_gaussian_kl(loc, scale_tril):
    """KL(N(loc, L L^T) || N(0, I)) per row, in nats:
    1/2 (||L||_F^2 + ||loc||^2 - k) - sum log diag(L)."""
    k = ops.shape(loc)[-1]
    log_det = ops.sum(ops.log(ops.diagonal(scale_tril, axis1=-2, axis2=-1)), axis=-1)
    return (
        0.5
        * (ops.sum(ops.square(scale_tril), axis=(-2, -1)) + ops.sum(ops.square(loc), axis=-1) - k)
        - log_det
    )


class FullCovarianceVAE(VariationalAutoencoder):
    """VAE whose posterior is a full-covariance Gaussian, N(loc, L L^T) with L lower-triangular.

    `posterior` outputs latent + latent*(latent+1)/2 numbers per image: loc, then the
    entries of L. The reference builds it with tfp.distributions.MultivariateNormalTriL;
    tfp is TensorFlow-only (and its layers are tf-keras layers that do not mix with Keras
    3), so the few pieces used are written in keras.ops: tfp's fill_triangular layout, the
    reparameterised sample and the closed-form KL (tests/test_models.py pins all three to
    tfp's).
    """

    def posterior_distribution(self, x, training=False):
        params = ops.cast(self.posterior(x, training=training), "float32")
        loc, tril_params = params[:, : self.latent_dim], params[:, self.latent_dim :]
        return TriLGaussian(loc, fill_scale_tril(tril_params, self.latent_dim))

    def posterior_kl(self, x):
        return tril_gaussian_kl(*self.posterior_distribution(x))

    def posterior_sample(self, x, training=False):
        q = self.posterior_distribution(x, training=training)
        # Reparameterised with the model's seed generator (same stream as the diagonal VAEs).
        eps = keras.random.normal(ops.shape(q.loc), seed=self.seed_generator)
        z = q.loc + ops.squeeze(ops.matmul(q.scale_tril, ops.expand_dims(eps, -1)), -1)
        return z, tril_gaussian_kl(*q)


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
    decoder = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(256, activation="relu"),
            layers.Dense(PIXELS, activation="sigmoid", dtype="float32"),
            layers.Reshape(IMAGE_SHAPE, dtype="float32"),
        ],
        name="decoder",
    )
    return _gaussian_vae("vae_mlp", inputs, h, latent_dim, decoder, beta)


def vae_conv(latent_dim: int = 32, beta: float = 1.0) -> VariationalAutoencoder:
    inputs = keras.Input(IMAGE_SHAPE)
    h = layers.Conv2D(32, 3, activation="relu")(inputs)  # 26x26
    h = layers.MaxPooling2D(2)(h)  # 13x13
    h = layers.Conv2D(64, 3, activation="relu")(h)  # 11x11
    h = layers.MaxPooling2D(2)(h)  # 5x5x64 = 1600
    h = layers.Dropout(0.5)(layers.Flatten()(h))
    decoder = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(5 * 5 * 64, activation="relu"),
            layers.Reshape((5, 5, 64)),
            UpSampling2D(2),  # 10x10
            layers.Conv2DTranspose(64, 3, activation="relu"),  # 12x12
            UpSampling2D(2),  # 24x24
            layers.Conv2DTranspose(32, 3, activation="relu"),  # 26x26
            layers.Conv2DTranspose(1, 3, activation="sigmoid", dtype="float32"),  # 28x28
        ],
        name="decoder",
    )
    return _gaussian_vae("vae_conv", inputs, h, latent_dim, decoder, beta)


def vae_bn(latent_dim: int = 2, beta: float = 1.0) -> VariationalAutoencoder:
    inputs = keras.Input(IMAGE_SHAPE)
    h = inputs
    for filters, stride in ((128, 2), (256, 2), (512, 1), (1024, 1)):  # 28 -> 14 -> 7 -> 7 -> 7
        h = layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu")(h)
        h = layers.BatchNormalization()(h)
    h = layers.Dense(20, activation="relu")(layers.Flatten()(h))
    h = layers.BatchNormalization()(h)

    up = []
    for filters, stride in ((1024, 1), (512, 1), (256, 2), (128, 2)):  # 7 -> 7 -> 7 -> 14 -> 28
        up += [
            layers.Conv2DTranspose(filters, 3, strides=stride, padding="same", activation="relu"),
            layers.BatchNormalization(),
        ]
    decoder = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(7 * 7 * 1024, activation="relu"),
            layers.BatchNormalization(),
            layers.Reshape((7, 7, 1024)),
        ]
        + up
        + [layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid", dtype="float32")],
        name="decoder",
    )
    return _gaussian_vae("vae_bn", inputs, h, latent_dim, decoder, beta)


def vae_tril(latent_dim: int = 10, beta: float = 1.0) -> FullCovarianceVAE:
    inputs = keras.Input(IMAGE_SHAPE)
    h = inputs
    for layer in conv_small_features():
        h = layer(h)
    params = layers.Dense(latent_dim + latent_dim * (latent_dim + 1) // 2, name="posterior_params")(
        h
    )
    encoder = keras.Model(inputs, params[:, :latent_dim], name="encoder")
    posterior = keras.Model(inputs, params, name="posterior")
    return FullCovarianceVAE(
        encoder, posterior, conv_small_decoder(latent_dim), "vae_tril", beta=beta
    )
