"""evaluate component: metric definitions, reconstruction / denoising / VAE metrics, probe,
plots."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from components.evaluate import metrics as M
from components.evaluate.component import COMPONENT as EVALUATE
from components.train.component import COMPONENT as TRAIN
from pipeline.artifacts import EVALUATION, MODEL, MODEL_RUN, Artifact
from pipeline.component import ExecutionContext, run_executor

PARAMS = {"seed": 3, "grid_images": 6, "probe_max_train": 200, "tsne_points": 100}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- metric definitions (pure numpy) ----------------------------------------------------------

def test_bce_matches_keras_and_floor_is_reached_by_the_target_itself():
    import keras

    rng = np.random.default_rng(0)
    target = rng.random((4, 28, 28, 1)).astype(np.float32)
    pred = rng.random((4, 28, 28, 1)).astype(np.float32)
    keras_bce = float(np.mean(keras.losses.binary_crossentropy(target, pred)))
    assert M.bce_per_image(target, pred).mean() == pytest.approx(keras_bce, rel=1e-4)
    # BCE(t, t) is the pixel entropy of t: the floor, and nothing does better.
    floor = M.entropy_per_image(target).mean()
    assert M.bce_per_image(target, target).mean() == pytest.approx(floor, abs=1e-6)
    assert M.bce_per_image(target, pred).mean() > floor
    # Binary targets have a zero floor; 0 log 0 = 0 gives no NaN.
    binary = (target > 0.5).astype(np.float32)
    assert M.entropy_per_image(binary).mean() == 0.0


def test_psnr_is_capped_for_identical_images_and_averaged_per_image():
    a = np.zeros((2, 28, 28), np.float32)
    assert M.psnr_per_image(a, a).tolist() == [M.PSNR_CAP_DB, M.PSNR_CAP_DB]
    b = a.copy()
    b[0] += 0.1  # mse 0.01 -> 20 dB; image 1 identical -> cap
    m = M.reconstruction(a, b)
    assert m["psnr"] == pytest.approx((20.0 + M.PSNR_CAP_DB) / 2)
    assert m["mse"] == pytest.approx(0.005)


# --- the component on trained models ---------------------------------------------------------

def train(examples, root, variant, epochs, denoising=False, latent_dim=0) -> dict[str, Artifact]:
    outputs = {"model": Artifact(MODEL, str(root / "model")),
               "model_run": Artifact(MODEL_RUN, str(root / "model_run"))}
    for artifact in outputs.values():
        os.makedirs(artifact.uri)
    params = {
        "model": {"variant": variant, "latent_dim": latent_dim, "beta": 1.0,
                  "activity_l1": 1e-5, "decoder": "transpose"},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": "adam",
                  "learning_rate": 3e-3, "seed": 5, "early_stopping_patience": 0,
                  "shuffle_buffer": 1000, "mixed_precision": False, "jit_compile": False,
                  "steps_per_execution": 1},
        "denoising": denoising,
    }
    run_executor(TRAIN, {"examples": examples}, outputs, params, ExecutionContext())
    return outputs


def evaluate(examples, trained, root, **extra):
    out = Artifact(EVALUATION, str(root / "evaluation"))
    os.makedirs(out.uri)
    metrics = run_executor(EVALUATE, {"examples": examples, **trained}, {"evaluation": out},
                           {**PARAMS, **extra}, ExecutionContext())
    return metrics, out.uri


def is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def assert_reconstruction_metrics_sane(m):
    for key in ("bce", "bce_floor", "bce_excess", "mse", "psnr"):
        assert np.isfinite(m[key]), key
    assert m["bce"] >= m["bce_floor"] - 1e-6
    assert m["bce_excess"] == pytest.approx(m["bce"] - m["bce_floor"], abs=1e-5)
    assert 0.0 < m["mse"] < 1.0 and m["psnr"] > 0.0
    assert m["psnr"] < M.PSNR_CAP_DB
    assert m["test_examples"] == 128


def test_autoencoder_metrics_probe_and_plots(normalized_examples, tmp_path):
    trained = train(normalized_examples, tmp_path, "dense", epochs=6)
    m, out = evaluate(normalized_examples, trained, tmp_path)

    assert_reconstruction_metrics_sane(m)
    assert "noisy_input_bce" not in m and "neg_elbo" not in m
    # A trained model beats predicting mid-grey everywhere.
    assert m["bce"] < -np.log(0.5)
    assert 0.0 <= m["probe_accuracy"] <= 1.0 and 0.0 <= m["probe_accuracy_raw_pixels"] <= 1.0
    assert m["probe_accuracy"] > 0.15  # 10 classes: chance is 0.1
    assert m["probe_train_examples"] == PARAMS["probe_max_train"]

    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["metrics"] == m
    for png in ("reconstructions.png", "loss_curves.png", "latent_scatter.png"):
        assert png in saved["plots"] and is_png(os.path.join(out, png)), png


def test_denoising_reports_the_noisy_input_error(normalized_examples, tmp_path):
    trained = train(normalized_examples, tmp_path, "dense", epochs=6, denoising=True)
    m, out = evaluate(normalized_examples, trained, tmp_path)

    assert_reconstruction_metrics_sane(m)
    for key in ("noisy_input_bce", "noisy_input_mse", "noisy_input_psnr",
                "denoise_mse_reduction", "denoise_psnr_gain_db"):
        assert np.isfinite(m[key]), key
    # The fixture's noise is strong (sigma 0.5): the noisy input is far off, the model better.
    assert m["noisy_input_mse"] > m["mse"]
    assert m["denoise_mse_reduction"] == pytest.approx(1 - m["mse"] / m["noisy_input_mse"],
                                                       abs=1e-4)
    assert m["denoise_psnr_gain_db"] == pytest.approx(m["psnr"] - m["noisy_input_psnr"], abs=1e-3)
    assert is_png(os.path.join(out, "reconstructions.png"))


def test_vae_elbo_samples_and_latent_manifold(normalized_examples, tmp_path):
    trained = train(normalized_examples, tmp_path, "vae_mlp", epochs=2, latent_dim=2)
    m, out = evaluate(normalized_examples, trained, tmp_path)

    assert_reconstruction_metrics_sane(m)
    assert m["kl"] >= 0.0 and m["beta"] == 1.0 and m["latent_dim"] == 2
    assert m["neg_elbo"] == pytest.approx(m["neg_elbo_reconstruction"] + m["kl"], rel=1e-4)
    # The reconstruction term is 784 x a per-pixel BCE (of one posterior sample), so it is
    # at least 784 x the target's pixel entropy.
    assert m["neg_elbo_reconstruction"] >= 784 * m["bce_floor"] - 1e-3
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert "one posterior sample" in saved["notes"]["neg_elbo"].lower()
    for png in ("prior_samples.png", "latent_manifold.png", "latent_scatter.png",
                "loss_curves.png"):
        assert is_png(os.path.join(out, png)), png
    assert "code_sweep.png" not in saved["plots"]  # vae_tril only


def test_finetuned_classifier_head_on_the_encoder(normalized_examples, tmp_path):
    trained = train(normalized_examples, tmp_path, "dense", epochs=2)
    m, _ = evaluate(normalized_examples, trained, tmp_path, finetune_epochs=15)
    assert m["finetune_epochs"] == 15
    assert 0.2 < m["finetune_accuracy"] <= 1.0  # labels are learnable here; chance is 0.1
    # the evaluated model is untouched: its probe still runs on the trained encoder
    assert "probe_accuracy" in m
