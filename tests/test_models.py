"""Unit tests for the model zoo: shapes, the weights round trip, the VAE maths, training."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from models.vae import gaussian_kl, reconstruction_nats

FAST_VAES = ("vae_mlp", "vae_conv", "vae_tril")


def images(n=8, seed=0):
    """Structured [0,1] images (a bright block on a dim noisy background), not pure noise,
    so a few training steps have something to learn."""
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.random((n, 28, 28, 1))
    for i in range(n):
        top, left = rng.integers(2, 14, size=2)
        x[i, top : top + 12, left : left + 10] = rng.uniform(0.6, 1.0)
    return x.astype("float32")


@pytest.mark.parametrize("variant", models.VARIANTS)
def test_shapes_and_inference_paths(variant):
    x = images(4)
    model = models.build(variant)
    assert model.variant == variant
    assert model.latent_dim == models.DEFAULT_LATENT[variant]
    assert model.is_variational == variant.startswith("vae_")

    out = model(x)
    assert out.shape == (4, 28, 28, 1) and out.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0

    code = model.encode(x)
    assert code.shape == (4, model.latent_dim)
    assert model.encoder(x).shape == (4, model.latent_dim)
    assert model.decode(code).shape == (4, 28, 28, 1)
    assert model.decoder.outputs[0].shape[1:] == (28, 28, 1)
    np.testing.assert_allclose(model.reconstruct(x), model(x, training=False), atol=1e-6)


@pytest.mark.parametrize("variant", models.VARIANTS)
def test_weights_round_trip(variant, tmp_path):
    x = images(4)
    model = models.build(variant, beta=2.0)
    model(x, training=True)  # moves any BatchNorm statistics away from their initial values
    expected = model(x).numpy()
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)

    restored = models.build(variant, beta=2.0)
    restored(np.zeros((1, 28, 28, 1), "float32"))
    assert not np.allclose(restored(x), expected)
    restored.load_weights(path)
    np.testing.assert_array_equal(restored(x), expected)


def test_latent_dim_and_decoder_options():
    assert models.build("dense", latent_dim=8).encode(images(2)).shape == (2, 8)
    assert models.build("vae_tril", latent_dim=3).encode(images(2)).shape == (2, 3)
    assert models.build("conv_pool", latent_dim=256).latent_dim == 256
    upsample = models.build("conv_small", decoder="upsample")
    assert not any(
        isinstance(layer, keras.layers.Conv2DTranspose) for layer in upsample.decoder.layers
    )
    assert upsample(images(2)).shape == (2, 28, 28, 1)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(variant="resnet"), "model.variant"),
        (dict(variant="conv_pool", latent_dim=32), "model.latent_dim"),
        (dict(variant="denoise", latent_dim=256), "model.latent_dim"),
        (dict(variant="best", latent_dim=100), "model.latent_dim"),
        (dict(variant="dense", latent_dim=-1), "model.latent_dim"),
        (dict(variant="dense", latent_dim=5000), "model.latent_dim"),
        (dict(variant="conv_small", decoder="pixelshuffle"), "model.decoder"),
    ],
)
def test_bad_arguments_name_the_key(kwargs, key):
    # The zoo's rules live in check_args (the config check calls it); build applies them.
    with pytest.raises(ValueError, match=key) as checked:
        models.check_args(**kwargs)
    with pytest.raises(ValueError, match=key) as built:
        models.build(**kwargs)
    assert str(built.value) == str(checked.value)


def test_check_args_accepts_what_build_builds():
    for variant in models.VARIANTS:
        models.check_args(variant)
        models.check_args(variant, models.DEFAULT_LATENT[variant])
    for decoder in models.DECODERS:
        models.check_args("conv_small", 3, decoder)
    models.check_args("dense", 4096)


def test_architecture_details():
    deep = models.build("deep")
    assert [
        layer.units
        for layer in deep.encoder.layers + deep.decoder.layers
        if isinstance(layer, keras.layers.Dense)
    ] == [128, 64, 32, 64, 128, 784]
    conv_pool = models.build("conv_pool")
    assert [
        layer.filters
        for layer in conv_pool.encoder.layers
        if isinstance(layer, keras.layers.Conv2D)
    ] == [32, 16, 16]
    assert not any(getattr(layer, "use_bias", False) for layer in conv_pool.encoder.layers)
    assert models.build("vae_bn").count_params() == pytest.approx(23e6, rel=0.05)


def test_best_is_residual_with_a_7x7_code():
    model = models.build("best")
    assert model.latent_dim == 7 * 7 * 8 > models.DEFAULT_LATENT["conv_pool"]
    adds = [
        layer
        for layer in model.encoder.layers + model.decoder.layers
        if isinstance(layer, keras.layers.Add)
    ]
    assert len(adds) == 3  # at 7x7: one in the encoder, two in the decoder
    code_conv = [layer for layer in model.encoder.layers if isinstance(layer, keras.layers.Conv2D)][
        -1
    ]
    assert code_conv.kernel_size == (1, 1) and code_conv.output.shape[1:] == (7, 7, 8)
    narrower = models.build("best", latent_dim=7 * 7 * 4)
    assert narrower.encode(images(2)).shape == (2, 196)


def test_best_learns():
    x = images(16)
    model = models.build("best")
    model.compile_for_training(keras.optimizers.Adam(3e-3))
    history = model.fit(x, x, batch_size=8, epochs=8, verbose=0).history
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]


def test_sparse_adds_an_l1_activity_penalty():
    x = images(4)
    sparse, dense = models.build("sparse", activity_l1=1e-2), models.build("dense")
    sparse(x), dense(x)
    code = sparse.encode(x).numpy()
    assert len(sparse.losses) == 1 and not dense.losses
    # Keras 3 divides activity penalties by the batch size.
    np.testing.assert_allclose(float(sparse.losses[0]), 1e-2 * np.abs(code).sum() / 4, rtol=1e-5)


def test_batchnorm_follows_the_training_flag():
    x = images(8)
    model = models.build("conv_pool")
    bn = next(
        layer
        for layer in model.encoder.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    model(x, training=False)
    assert np.all(bn.moving_mean.numpy() == 0.0)
    model(x, training=True)
    assert np.any(bn.moving_mean.numpy() != 0.0)


def test_plain_autoencoder_learns():
    x = images(16)
    model = models.build("dense")
    model.compile_for_training(keras.optimizers.Adam(1e-2))
    history = model.fit(x, x, batch_size=16, epochs=20, verbose=0).history
    assert set(history) >= {"loss", "mse"}
    assert history["loss"][-1] < 0.8 * history["loss"][0]


def test_plain_autoencoder_fits_a_dataset_with_validation():
    x = images(16)
    noisy = np.clip(x + 0.2 * np.random.default_rng(1).standard_normal(x.shape), 0, 1)
    ds = tf.data.Dataset.from_tensor_slices((noisy.astype("float32"), x)).batch(8)
    model = models.build("conv_small")
    model.compile_for_training(keras.optimizers.Adam())
    history = model.fit(ds, validation_data=ds, epochs=1, verbose=0).history
    assert np.isfinite(history["val_loss"][0])


def test_gaussian_kl_matches_numpy():
    mean = np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 0.3]], "float32")
    log_var = np.array([[0.0, 0.0], [0.2, -1.0], [-3.0, 1.5]], "float32")
    expected = -0.5 * np.sum(1 + log_var - mean**2 - np.exp(log_var), axis=-1)
    np.testing.assert_allclose(gaussian_kl(mean, log_var), expected, rtol=1e-6)
    assert expected[0] == 0.0


def test_reconstruction_is_784_times_mean_bce():
    x = images(3)
    decoded = np.clip(x + 0.1, 0.01, 0.99).astype("float32")
    mean_bce = keras.losses.binary_crossentropy(x.reshape(3, -1), decoded.reshape(3, -1))
    np.testing.assert_allclose(reconstruction_nats(x, decoded), 784 * mean_bce, rtol=1e-5)


def test_reparameterisation_uses_unit_noise_and_half_log_var():
    # The references' quirks: eps ~ N(0, 1e-4^2), or z scaled by exp(log_var). Pin sigma = 2.
    model = models.build("vae_mlp")
    log_var_head = model.posterior.get_layer("z_log_var")
    kernel, bias = log_var_head.get_weights()
    log_var_head.set_weights([np.zeros_like(kernel), np.full_like(bias, np.log(4.0))])
    x = np.repeat(images(1), 2000, axis=0)
    z, kl = model.posterior_sample(x)
    centred = z.numpy() - model.encode(x).numpy()
    np.testing.assert_allclose(centred.std(axis=0), [2.0, 2.0], rtol=0.1)
    assert np.all(kl.numpy() > 0)


def test_full_covariance_kl_matches_closed_form():
    model = models.build("vae_tril", latent_dim=4)
    x = images(3)
    q = model.posterior_distribution(x)
    _, kl = model.posterior_sample(x)
    mu, tril = q.loc.numpy(), q.scale_tril.numpy()
    cov = tril @ np.transpose(tril, (0, 2, 1))
    expected = 0.5 * (
        np.trace(cov, axis1=1, axis2=2)
        + np.sum(mu**2, axis=1)
        - 4
        - 2 * np.sum(np.log(np.diagonal(tril, axis1=1, axis2=2)), axis=1)
    )
    np.testing.assert_allclose(kl, expected, rtol=1e-4)
    assert np.all(np.diagonal(tril, axis1=1, axis2=2) > 0)
    np.testing.assert_allclose(model.encode(x), mu, rtol=1e-6)


def _train_vae(model, x, epochs=2):
    model.compile_for_training(keras.optimizers.Adam(1e-3))
    return model.fit(
        x, x, batch_size=len(x), epochs=epochs, validation_data=(x, x), verbose=0
    ).history


@pytest.mark.parametrize("variant", FAST_VAES)
def test_vae_trains_and_validates(variant):
    x = images(8)
    model = models.build(variant)
    history = _train_vae(model, x)
    assert set(history) >= {
        "loss",
        "reconstruction",
        "kl",
        "val_loss",
        "val_reconstruction",
        "val_kl",
    }
    assert all(np.isfinite(v).all() for v in history.values())
    assert history["kl"][-1] > 0 and history["val_kl"][-1] > 0
    np.testing.assert_allclose(
        history["loss"][0], history["reconstruction"][0] + history["kl"][0], rtol=1e-5
    )
    assert model.sample(5).shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(model.sample(3, seed=7), model.sample(3, seed=7))


def test_vae_beta_weights_the_kl():
    x = images(8)
    model = models.build("vae_mlp", beta=4.0)
    assert model.beta == 4.0
    history = _train_vae(model, x, epochs=1)
    np.testing.assert_allclose(
        history["loss"][0], history["reconstruction"][0] + 4.0 * history["kl"][0], rtol=1e-5
    )


def test_vae_elbo_terms_and_dataset_input():
    x = images(8)
    model = models.build("vae_conv")
    recon, kl = model.elbo_terms(x, x)
    assert recon.shape == (8,) and kl.shape == (8,)
    assert np.all(recon.numpy() > 0)
    model.compile_for_training(keras.optimizers.Adam())
    ds = tf.data.Dataset.from_tensor_slices((x, x)).batch(4)
    assert np.isfinite(model.fit(ds, epochs=1, verbose=0).history["loss"][0])
    assert np.isfinite(model.evaluate(ds, verbose=0, return_dict=True)["loss"])


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_keeps_outputs_and_vae_loss_in_float32(mixed_float16):
    x = images(4)
    dense = models.build("dense")
    assert dense(x).dtype == tf.float32
    vae = models.build("vae_mlp")
    assert vae.posterior(x)[0].dtype == tf.float16  # i.e. the policy really is in force
    history = _train_vae(vae, x, epochs=1)
    assert isinstance(vae.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(history["loss"][0]) and history["kl"][0] > 0


@pytest.mark.slow
def test_vae_bn_trains():
    x = images(4)
    history = _train_vae(models.build("vae_bn"), x, epochs=1)
    assert np.isfinite(history["loss"][0]) and history["kl"][0] > 0


def test_full_covariance_pieces_match_tensorflow_probability():
    # vae_tril's posterior was tfp.distributions.MultivariateNormalTriL over
    # FillScaleTriL(Softplus(), 1e-5); models/vae.py now writes it in keras.ops so it runs on
    # every backend. Same Cholesky factor (to 1 ulp: trained weights keep their meaning),
    # same KL within float tolerance.
    tfp = pytest.importorskip("tensorflow_probability")
    from models.vae import fill_scale_tril, tril_gaussian_kl

    k = 5
    params = np.random.default_rng(3).normal(size=(6, k + k * (k + 1) // 2)).astype("float32")
    loc, tril_params = params[:, :k], params[:, k:]
    expected_tril = tfp.bijectors.FillScaleTriL(
        diag_bijector=tfp.bijectors.Softplus(), diag_shift=1e-5
    ).forward(tril_params)
    tril = fill_scale_tril(tril_params, k)
    np.testing.assert_allclose(tril, expected_tril, rtol=1e-6, atol=0)
    q = tfp.distributions.MultivariateNormalTriL(loc=loc, scale_tril=expected_tril)
    prior = tfp.distributions.MultivariateNormalDiag(loc=tf.zeros_like(loc))
    np.testing.assert_allclose(
        tril_gaussian_kl(loc, tril), tfp.distributions.kl_divergence(q, prior), rtol=1e-5
    )


def _imported_modules(path):
    import ast

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


# Backend-specific modules models/ must not import, so the zoo trains on whichever Keras 3
# backend is installed (bench/gpu_models.py runs it on JAX where TensorFlow is absent).
# TensorFlow stays at the pipeline's edges (tf.data input, SavedModel/TFLite export).
BACKEND_MODULES = {"tensorflow", "tensorflow_probability", "tf_keras", "jax", "jaxlib", "torch"}
# Documented exceptions (models/README.md, "Portability"): none today.
BACKEND_IMPORT_EXCEPTIONS: dict[str, set[str]] = {}


def test_models_import_no_backend_specific_module():
    import pathlib

    files = sorted((pathlib.Path(models.__file__).parent).glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "base.py", "dense.py", "conv.py", "vae.py"}
    found = {f.name: set(_imported_modules(f)) & BACKEND_MODULES for f in files}
    offending = {
        name: mods - BACKEND_IMPORT_EXCEPTIONS.get(name, set()) for name, mods in found.items()
    }
    assert not {name: mods for name, mods in offending.items() if mods}
    assert set(_imported_modules(files[0].parent / "vae.py")) >= {"keras"}  # the scan sees imports


def test_sparse_trains_under_mixed_precision(mixed_float16):
    # Its float16 L1 penalty used to fail to add to the float32 loss (TypeError).
    x = images(8)
    model = models.build("sparse", activity_l1=1e-2)
    model.compile_for_training(keras.optimizers.Adam())
    assert np.isfinite(model.fit(x, x, batch_size=8, epochs=1, verbose=0).history["loss"][0])
    assert model.losses[0].dtype == "float32"
