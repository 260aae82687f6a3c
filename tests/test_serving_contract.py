"""The serving contract on a convolutional model, and TFLite from the exported SavedModel.

conv_pool (UpSampling2D in its decoder) trained for one epoch from the real config and
exported by the export stage: the standard converter, TFLiteConverter.from_saved_model,
converts each of its float signatures and the TFLite models compute what the SavedModel
computes; a badly shaped batch is an InvalidArgumentError, not a crash of the process; the
TFLite models do not check their inputs (components/export/saved_model.py, "Contract").
The dense model's contract is tested in tests/test_export.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
import models.conv
import models.vae
from components import examples_io
from components.export import saved_model as sm
from components.export import tflite
from pipeline import console
from tests.helpers import fit_scorer, neutral_fitted, output_artifacts, params, run_executor

FLOAT_SIGNATURES = ("images_float32", "encode", "decode", "reconstruct")
UPSAMPLING_VARIANTS = (
    ("conv_pool", {}),
    ("denoise", {}),
    ("conv_small", {"decoder": "upsample"}),
    ("vae_conv", {}),
)


@pytest.fixture(scope="module")
def exported(normalized_examples, tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    trained = output_artifacts("train", root)
    run_executor(
        "train",
        params(
            "train", "model.variant=conv_pool", "train.epochs=1", "train.early_stopping_patience=0"
        ),
        {"examples": normalized_examples},
        trained,
    )
    scorer = fit_scorer(normalized_examples, trained["model"], root)
    outputs = output_artifacts("export", root)
    run_executor(
        "export",
        params("export"),
        {"examples": normalized_examples, "model": trained["model"], "scorer": scorer},
        outputs,
    )
    saved = outputs["saved_model"]
    images = examples_io.load_split(normalized_examples, "test")["image"][:5]
    return {
        "dir": os.path.join(saved.uri, saved.properties["path"]),
        "images": images,
        "latent": saved.properties["latent_dim"],
    }


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported["dir"])


def _convert(saved_model_dir: str, signature: str) -> tf.lite.Interpreter:
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[signature]
    )
    with console.native_stderr_to_log():  # the converter's absl warnings
        return tf.lite.Interpreter(model_content=converter.convert())


def _inputs(exported, loaded, signature):
    if signature == "decode":
        return {
            "code": loaded.signatures["encode"](images=tf.constant(exported["images"]))[
                "code"
            ].numpy()
        }
    return {"images": exported["images"]}


@pytest.mark.parametrize("variant, kwargs", UPSAMPLING_VARIANTS)
def test_upsampling_decoders_convert_to_tflite_with_a_free_batch_axis(variant, kwargs, tmp_path):
    """(was: keras.layers.UpSampling2D is tf.repeat, a reshape by a shape computed at run
    time from the batch size, after which the converter lost height, width and channels and
    left the next Conv2D unconvertible: "'tf.Conv2D' op is neither a custom op nor a flex
    op") Every variant with UpSampling2D (vae_conv's is followed by Conv2DTranspose, which
    converted before too), untrained: the exported SavedModel's `decode`."""
    model = models.build(variant, **kwargs)
    path = str(tmp_path / "model")
    sm.export(model, path, neutral_fitted(model, 0.5), "reconstruction")
    runner = _convert(path, "decode").get_signature_runner("decode")
    code = np.random.default_rng(0).normal(size=(3, model.latent_dim)).astype(np.float32)
    got = runner(code=code)["images"]
    assert got.shape == (3, 28, 28, 1)
    assert sm.max_diff(got, model.decode(code)) <= tflite.FLOAT32_TOL


@pytest.mark.parametrize("variant, kwargs", UPSAMPLING_VARIANTS)
def test_decoders_compute_what_keras_upsampling2d_computes_and_load_its_weights(
    variant, kwargs, tmp_path, monkeypatch
):
    """A checkpoint of the model built with keras.layers.UpSampling2D (every model trained
    before) loads into today's model, which computes the same numbers, bit for bit, and the
    same gradients. (A guard: it passes with either layer.)"""
    with monkeypatch.context() as m:
        for module in (models.conv, models.vae):
            m.setattr(module, "UpSampling2D", keras.layers.UpSampling2D, raising=False)
        keras.utils.set_random_seed(3)
        stock = models.build(variant, **kwargs)
    assert any(type(layer) is keras.layers.UpSampling2D for layer in stock.decoder.layers)
    path = str(tmp_path / "w.weights.h5")
    stock.save_weights(path)
    model = models.build(variant, **kwargs)
    model.load_weights(path)
    x = np.random.default_rng(0).random((3, 28, 28, 1), np.float32)
    code = np.asarray(stock.encode(x))
    np.testing.assert_array_equal(np.asarray(model.decode(code)), np.asarray(stock.decode(code)))
    np.testing.assert_array_equal(
        np.asarray(model.reconstruct(x)), np.asarray(stock.reconstruct(x))
    )
    # A training step's gradients too: the copies are summed in the same order.
    grads = []
    for m in (stock, model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                keras.losses.binary_crossentropy(x, m.decoder(code, training=True))
            )
        grads.append(tape.gradient(loss, m.decoder.trainable_variables))
    for got, want in zip(grads[1], grads[0]):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("signature", FLOAT_SIGNATURES)
def test_standard_converter_converts_each_float_signature_and_matches(exported, loaded, signature):
    """(was: "Could not translate MLIR to FlatBuffer": tf.Conv2D after UpSampling2D)
    from_saved_model on the exported SavedModel, a batch of 5 in one call."""
    interpreter = _convert(exported["dir"], signature)
    runner = interpreter.get_signature_runner(signature)
    inputs = _inputs(exported, loaded, signature)
    got = runner(**inputs)
    expected = {
        k: v.numpy()
        for k, v in loaded.signatures[signature](
            **{k: tf.constant(v) for k, v in inputs.items()}
        ).items()
    }
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        if value.dtype == np.bool_:
            np.testing.assert_array_equal(got[key], value)
        else:
            assert sm.max_diff(got[key], value) <= tflite.FLOAT32_TOL, key


def test_tflite_from_the_saved_model_does_not_check_inputs(exported, loaded):
    """What TFLite does with what the SavedModel rejects: the converter drops the contract's
    Assert ops (TFLite has no Assert kernel), so the TFLite model computes on."""
    interpreter = _convert(exported["dir"], "images_float32")
    assert not [op for op in interpreter._get_ops_details() if "Assert" in op["op_name"]]
    runner = interpreter.get_signature_runner("images_float32")
    raw = exported["images"][:1] * np.float32(255.0)  # raw pixels, not normalized
    with pytest.raises(tf.errors.InvalidArgumentError, match="values must be in"):
        loaded.signatures["images_float32"](images=tf.constant(raw))
    out = runner(images=raw)
    assert out["reconstruction"].shape == (1, 28, 28, 1) and np.isfinite(out["score"]).all()
    nan = np.full((1, 28, 28, 1), np.nan, np.float32)
    assert np.isnan(runner(images=nan)["score"]).all()


def test_a_badly_shaped_batch_is_an_error_not_a_crash(exported, loaded):
    """(was: a [1,28,28] batch for images_float32 aborted the serving process in Conv2D:
    "Check failed: index >= 0 && index < num_total_dims")"""
    script = textwrap.dedent(f"""
        import tensorflow as tf
        sigs = tf.saved_model.load({exported["dir"]!r}).signatures
        for name in ("images_float32", "encode", "reconstruct"):
            try:
                sigs[name](images=tf.zeros([1, 28, 28]))
                print(name, "accepted")
            except tf.errors.InvalidArgumentError as e:
                print(name, [l for l in str(e).splitlines() if "must have shape" in l][0])
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("images_float32", "encode", "reconstruct"):
        assert f"{name}: input images must have shape [N,28,28,1], got [1,28,28]" in proc.stdout, (
            proc.stdout
        )
    # decode's code of another size: an error naming the expected [N,latent]
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=rf"decode: input code must have shape \[N,{exported['latent']}\]",
    ):
        loaded.signatures["decode"](code=tf.zeros([2, 10]))
