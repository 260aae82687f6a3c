"""TFLite export (components/export/tflite.py): conv_pool, whose upsampling convolutions did
not convert with a free batch axis, converts and matches; vae_tril, whose score does not
convert, is exported without it and says why, and the export stage still succeeds; the
models do not check their inputs (TFLite has no Assert op)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import models
from components import examples_io
from components.export import saved_model as sm
from components.export import tflite
from tests.helpers import fit_scorer, neutral_fitted, output_artifacts, params, run_executor


def _edge_models(model, images, tmp_path):
    """(the float outputs on `images`, tflite.export's result) with neutral scorer
    constants, the reconstruction score served against 0.3."""
    import tensorflow as tf

    fitted = neutral_fitted(model, 0.3)
    outputs = sm.float_outputs(model, fitted, "reconstruction")(tf.constant(images))
    expected = {k: v.numpy() for k, v in outputs.items()}
    out_dir = str(tmp_path / "tflite")
    return expected, tflite.export(model, fitted, "reconstruction", out_dir, images, expected)


def test_conv_pool_converts_with_every_output_and_matches(normalized_examples, tmp_path):
    import tensorflow as tf

    model = models.build("conv_pool")
    model(np.zeros((1, 28, 28, 1), np.float32))
    images = examples_io.load_split(normalized_examples, "test")["image"][:4]
    expected, result = _edge_models(model, images, tmp_path)

    assert result["not_converted"] == {}
    assert result["outputs"] == list(sm.OUTPUTS)
    assert result["max_diff"]["float32"] <= tflite.FLOAT32_TOL
    files = {v: tmp_path / "tflite" / f for v, f in result["files"].items()}
    assert {v: os.path.getsize(p) for v, p in files.items()} == result["bytes"]
    assert result["bytes"]["int8"] < result["bytes"]["float32"]

    interpreter = tf.lite.Interpreter(model_path=str(files["float32"]))
    assert list(interpreter.get_signature_list()) == [tflite.SIGNATURE]
    runner = interpreter.get_signature_runner(tflite.SIGNATURE)
    assert runner.get_input_details()["images"]["shape"].tolist() == [1, 28, 28, 1]
    got = runner(images=images[:1])
    np.testing.assert_allclose(got["reconstruction"], expected["reconstruction"][:1], atol=1e-5)
    np.testing.assert_allclose(got["score"], expected["score"][:1], atol=1e-5)
    assert got["is_anomaly"][0] == (expected["score"][0] > np.float32(0.3))


@pytest.mark.slow
def test_a_variant_whose_score_does_not_convert_is_reported_not_fatal(
    normalized_examples, tmp_path
):
    trained = output_artifacts("train", tmp_path)
    run_executor(
        "train",
        params(
            "train", "model.variant=vae_tril", "train.epochs=1", "train.early_stopping_patience=0"
        ),
        {"examples": normalized_examples},
        trained,
    )
    scorer = fit_scorer(normalized_examples, trained["model"], tmp_path)
    outputs = output_artifacts("export", tmp_path)
    metrics = run_executor(
        "export",
        params("export"),
        {"examples": normalized_examples, "model": trained["model"], "scorer": scorer},
        outputs,
    )
    props = outputs["saved_model"].properties
    assert props["score_name"] == "combined" and metrics["score_name"] == props["score_name"]
    assert list(props["tflite_not_converted"]) == ["score"]
    assert "MatrixDiagPartV3" in props["tflite_not_converted"]["score"]
    assert metrics["tflite_not_converted"] == props["tflite_not_converted"]
    assert props["tflite_outputs"] == ["reconstruction", "code"]
    assert set(props["tflite_files"]) == {"float32", "int8"}
    assert props["tflite_max_diff"]["float32"] <= tflite.FLOAT32_TOL
    for name in props["tflite_files"].values():
        assert (
            os.path.getsize(os.path.join(outputs["saved_model"].uri, props["tflite_dir"], name)) > 0
        )
    # The SavedModel itself has the score.
    assert "score" in props["signatures"] and metrics["scored_examples"] == 128


def test_edge_models_do_not_check_their_inputs(normalized_examples, tmp_path):
    """What the SavedModel's contract rejects, the TFLite models compute on: TFLite has no
    Assert op (components/export/tflite.py, "No input checks"). The interpreter itself
    checks the dtype, and the static shape when the tensor is set directly."""
    import tensorflow as tf

    model = models.build("conv_pool")
    model(np.zeros((1, 28, 28, 1), np.float32))
    images = examples_io.load_split(normalized_examples, "test")["image"][:2]
    expected, result = _edge_models(model, images, tmp_path)
    path = str(tmp_path / "tflite" / result["files"]["float32"])
    runner = tf.lite.Interpreter(model_path=path).get_signature_runner(tflite.SIGNATURE)

    raw = runner(images=images[:1] * np.float32(255.0))  # raw pixels: no error
    assert raw["reconstruction"].shape == (1, 28, 28, 1) and np.isfinite(raw["score"]).all()
    assert np.isnan(runner(images=np.full((1, 28, 28, 1), np.nan, np.float32))["score"]).all()
    with pytest.raises(ValueError, match="FLOAT64"):
        runner(images=images[:1].astype(np.float64))
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    with pytest.raises(ValueError, match="Dimension mismatch"):
        interpreter.set_tensor(
            interpreter.get_input_details()[0]["index"], np.zeros((1, 14, 56, 1), np.float32)
        )
