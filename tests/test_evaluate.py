"""evaluate component: metric definitions, reconstruction / denoising / VAE metrics, probe,
plots."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

import numpy as np
import pytest

from components.evaluate import metrics as M
from components.train import model_io
from pipeline.artifacts import Artifact
from pipeline.errors import ConfigError
from tests.helpers import fit_scorer, output_artifacts, params, run_executor

# Small probe and scatter samples (the fixture has 320 train and 128 test examples).
EVALUATE_KEYS = ("evaluate.probe_max_train=200", "evaluate.tsne_points=100")
PROBE_TRAIN = 200
GRID_IMAGES = 6  # a smaller reconstruction / sample grid than the default (no config key)
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


# --- anomaly detection quality (pure numpy + scikit-learn) -------------------------------------


def test_detection_auroc_precision_and_recall_on_known_cases():
    from components.evaluate import detection

    held_out = np.array([False, False, False, False, True, True])
    perfect = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    assert detection.held_out_detection(perfect, held_out, 0.5)["anomaly_auroc"] == 1.0
    assert detection.held_out_detection(-perfect, held_out, 0.0)["anomaly_auroc"] == 0.0
    # one held-out example (0.35) ranks below two seen ones: 6 of 8 pairs in order
    mixed = np.array([0.1, 0.2, 0.4, 0.5, 0.35, 0.9])
    d = detection.held_out_detection(mixed, held_out, 0.3)
    assert d["anomaly_auroc"] == pytest.approx(6 / 8)
    # flagged (> 0.3): 0.4, 0.5 (seen) and 0.35, 0.9 (held out)
    assert (d["anomaly_true_positives"], d["anomaly_false_positives"]) == (2, 2)
    assert d["anomaly_precision"] == 0.5 and d["anomaly_recall"] == 1.0
    assert d["anomaly_false_positive_rate"] == 0.5
    assert (d["anomaly_held_out_examples"], d["anomaly_seen_examples"]) == (2, 4)
    assert d["anomaly_score_mean_held_out"] == pytest.approx(0.625)
    d = detection.held_out_detection(mixed, held_out, 0.45)  # 0.5 and 0.9 flagged
    assert (d["anomaly_precision"], d["anomaly_recall"]) == (0.5, 0.5)
    # flagged means strictly above the threshold: 0.5 and 0.9, not 0.4
    assert detection.flagged(mixed, 0.4) == {
        "anomaly_flagged": 2,
        "anomaly_flagged_fraction": 2 / 6,
    }
    # what cannot be measured is None, not a made-up number
    d = detection.held_out_detection(mixed, np.zeros(6, bool), 10.0)
    assert d["anomaly_auroc"] is None and d["anomaly_precision"] is None
    assert d["anomaly_recall"] is None and d["anomaly_false_positive_rate"] == 0.0


# --- the component on trained models ---------------------------------------------------------


def train(examples, root, variant, epochs, *overrides) -> dict[str, Artifact]:
    """Train with parameters from the real config: a short run without early stopping."""
    p = params(
        "train",
        f"model.variant={variant}",
        f"train.epochs={epochs}",
        "train.early_stopping_patience=0",
        *overrides,
    )
    outputs = output_artifacts("train", root)
    run_executor("train", p, {"examples": examples}, outputs)
    outputs["scorer"] = fit_scorer(examples, outputs["model"], root, *overrides)
    return outputs


def evaluate(examples, trained, root, *overrides, baseline=None, blessing=None, evaluation=None):
    p = dataclasses.replace(params("evaluate", *EVALUATE_KEYS, *overrides), grid_images=GRID_IMAGES)
    outputs = output_artifacts("evaluate", root)
    inputs = {"examples": examples, **trained}
    if baseline is not None:
        inputs["baseline_model"] = baseline["model"]
    metrics = run_executor("evaluate", p, inputs, outputs)
    if blessing is not None:
        blessing.update(outputs["blessing"].properties, uri=outputs["blessing"].uri)
    if evaluation is not None:
        evaluation.update(outputs["evaluation"].properties)
    return metrics, outputs["evaluation"].uri


def majority_rate(examples, split="test") -> float:
    """Accuracy of always answering the split's most frequent class: what a probe on
    uninformative (or misaligned) features scores."""
    from components import examples_io

    labels = examples_io.load_split(examples, split)["label"]
    return float(np.bincount(labels).max() / len(labels))


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


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
    trained = train(normalized_examples, tmp_path, "dense", 6)
    m, out = evaluate(normalized_examples, trained, tmp_path)

    assert_reconstruction_metrics_sane(m)
    assert "noisy_input_bce" not in m and "neg_elbo" not in m
    # A trained model beats predicting mid-grey everywhere.
    assert m["bce"] < -np.log(0.5)
    # The class (the blob's height) is linearly readable from the code and from the pixels:
    # both probes clearly beat always answering the most frequent class (0.14 here; chance
    # is 0.1). Codes or labels out of step with each other would score about that.
    baseline = majority_rate(normalized_examples)
    assert m["probe_accuracy"] > baseline + 0.1, (m["probe_accuracy"], baseline)
    assert m["probe_accuracy_raw_pixels"] > baseline + 0.05, (
        m["probe_accuracy_raw_pixels"],
        baseline,
    )
    assert m["probe_train_examples"] == PROBE_TRAIN

    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["metrics"] == m
    for png in (
        "reconstructions.png",
        "loss_curves.png",
        "latent_scatter.png",
        "score_histogram.png",
    ):
        assert png in saved["plots"] and is_png(os.path.join(out, png)), png
    # The anomaly score's threshold is always reported; detection quality needs held-out
    # classes, and the reconstruction metrics cover the whole test split.
    assert m["anomaly_score"] == "combined" and m["anomaly_threshold_quantile"] == 0.99
    assert m["anomaly_validation_examples"] == 64 and 0.0 <= m["anomaly_flagged_fraction"] <= 1
    assert "anomaly_auroc" not in m and "reconstruction_test_examples" not in m
    assert_same_as_whole_arrays(m, normalized_examples, trained)


def assert_same_as_whole_arrays(m, examples, trained):
    """evaluate streams the splits (one test pass, a compiled forward pass, probes fitted on
    a streamed train sample): its numbers are those of the whole-array computation it
    replaced (eager model calls on load_split arrays), to float32 rounding."""
    from components import examples_io, scoring
    from components.evaluate import probe
    from components.evaluate.executor import predict
    from components.novelty.component import SCORES
    from components.novelty.scores import Fitted, compiled
    from components.train import model_io

    p = params("evaluate", *EVALUATE_KEYS)
    model = model_io.load_model(trained["model"])
    test = examples_io.load_split(examples, "test", noisy=False)
    train_split = examples_io.load_split(examples, "train", noisy=False)
    val = examples_io.load_split(examples, "validation", noisy=False)
    whole = M.rounded(M.reconstruction(test["image"], predict(model.reconstruct, test["image"])))
    for key, value in whole.items():
        assert m[key] == pytest.approx(value, rel=1e-5), key
    fitted = Fitted.load(trained["scorer"].uri)
    run = compiled(model, fitted)
    val_scores = run(val["image"])["scores"][p.score]
    threshold = scoring.threshold(val_scores, 0.99, "here")  # novelty.threshold_quantile
    assert m["anomaly_threshold"] == pytest.approx(threshold, rel=1e-5, abs=1e-5)
    assert m["anomaly_threshold"] == pytest.approx(fitted.thresholds[p.score], rel=1e-5)
    test_scores = run(test["image"])["scores"]
    flagged = int(np.sum(test_scores[p.score] > threshold))
    assert abs(m["anomaly_flagged"] - flagged) <= 1  # a score within rounding of the threshold
    for k in SCORES:
        assert m[f"novelty_{k}_threshold"] == pytest.approx(fitted.thresholds[k], rel=1e-5)
    idx = examples_io.subsample(len(train_split["label"]), p.probe_max_train, p.seed)
    x, y = train_split["image"][idx], train_split["label"][idx]
    code = probe.linear_probe(
        predict(model.encode, x), y, predict(model.encode, test["image"]), test["label"], p.seed
    )
    raw = probe.linear_probe(x, y, test["image"], test["label"], p.seed)
    assert m["probe_accuracy_raw_pixels"] == pytest.approx(raw, abs=1e-6)  # m: 6 digits
    assert m["probe_accuracy"] == pytest.approx(code, abs=1.5 / len(test["label"]))


def test_denoising_reports_the_noisy_input_error(normalized_examples, tmp_path):
    trained = train(normalized_examples, tmp_path, "dense", 6, "noise.kind=gaussian")
    m, out = evaluate(normalized_examples, trained, tmp_path)

    assert_reconstruction_metrics_sane(m)
    for key in (
        "noisy_input_bce",
        "noisy_input_mse",
        "noisy_input_psnr",
        "denoise_mse_reduction",
        "denoise_psnr_gain_db",
    ):
        assert np.isfinite(m[key]), key
    # The fixture's noise is strong (sigma 0.5): the noisy input is far off, the model better.
    assert m["noisy_input_mse"] > m["mse"]
    assert m["denoise_mse_reduction"] == pytest.approx(
        1 - m["mse"] / m["noisy_input_mse"], abs=1e-4
    )
    assert m["denoise_psnr_gain_db"] == pytest.approx(m["psnr"] - m["noisy_input_psnr"], abs=1e-3)
    assert is_png(os.path.join(out, "reconstructions.png"))


def test_vae_elbo_samples_and_latent_manifold(normalized_examples, tmp_path):
    trained = train(normalized_examples, tmp_path, "vae_mlp", 2, "model.latent_dim=2")
    m, out = evaluate(normalized_examples, trained, tmp_path)

    assert_reconstruction_metrics_sane(m)
    assert m["kl"] >= 0.0 and m["beta"] == 1.0 and m["latent_dim"] == 2
    # Even a 2-D posterior mean after 2 epochs carries some of the class.
    assert m["probe_accuracy"] > majority_rate(normalized_examples), m["probe_accuracy"]
    assert m["neg_elbo"] == pytest.approx(m["neg_elbo_reconstruction"] + m["kl"], rel=1e-4)
    # The reconstruction term is 784 x a per-pixel BCE (of one posterior sample), so it is
    # at least 784 x the target's pixel entropy.
    assert m["neg_elbo_reconstruction"] >= 784 * m["bce_floor"] - 1e-3
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert "one posterior sample" in saved["notes"]["neg_elbo"].lower()
    for png in (
        "prior_samples.png",
        "latent_manifold.png",
        "latent_scatter.png",
        "loss_curves.png",
    ):
        assert is_png(os.path.join(out, png)), png
    assert "code_sweep.png" not in saved["plots"]  # vae_tril only


def test_finetuned_classifier_head_on_the_encoder(normalized_examples, tmp_path, monkeypatch):
    # The dense preset's rate and a batch of 64, the recipe this comparison was set up with
    # (128 test images: a different encoder moves both accuracies by several points).
    trained = train(
        normalized_examples, tmp_path, "dense", 2, "train.learning_rate=1e-3", "train.batch_size=64"
    )
    weights_file = os.path.join(trained["model"].uri, model_io.WEIGHTS_FILE)
    digest = sha256(weights_file)
    # Record every model evaluate rebuilds from the artifact: the evaluated one, then the
    # copy that is fine-tuned.
    load_model, loaded = model_io.load_model, []

    def recording_load_model(artifact):
        loaded.append(load_model(artifact))
        return loaded[-1]

    monkeypatch.setattr(model_io, "load_model", recording_load_model)
    m, _ = evaluate(normalized_examples, trained, tmp_path, "evaluate.finetune_epochs=15")
    monkeypatch.undo()

    assert m["finetune_epochs"] == 15
    # The classifier was trained: it beats the most-frequent-class baseline clearly and the
    # linear probe on the frozen code of the same encoder (an untrained head scores chance).
    assert m["finetune_accuracy"] > majority_rate(normalized_examples) + 0.1, m
    assert m["finetune_accuracy"] > m["probe_accuracy"], m
    assert len(loaded) == 2
    evaluated, finetuned = loaded
    reference = load_model(trained["model"])
    # ... end to end: the fine-tuned copy's encoder moved away from the trained weights ...
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(finetuned.encoder.get_weights(), reference.encoder.get_weights())
    )
    # ... while the evaluated model (used for the plots after the fine-tune too) and the
    # artifact on disk are untouched.
    for a, b in zip(evaluated.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sha256(weights_file) == digest


@pytest.mark.parametrize(
    "override, key",
    [
        ("evaluate.tsne_points=5", "evaluate.tsne_points"),
        ("evaluate.tsne_points=20001", "evaluate.tsne_points"),
        ("evaluate.finetune_epochs=-1", "evaluate.finetune_epochs"),
        ("evaluate.finetune_epochs=1001", "evaluate.finetune_epochs"),
        ("evaluate.probe_max_train=-1", "evaluate.probe_max_train"),
        ("gate.relative_tolerance=-0.1", "gate.relative_tolerance"),
        ("gate.relative_tolerance=1.5", "gate.relative_tolerance"),
        ("gate.max_bce_excess=0", "gate.max_bce_excess"),
        ("gate.max_neg_elbo=-1", "gate.max_neg_elbo"),
        ("gate.baseline=previous", "gate.baseline"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        params("evaluate", override)


def test_params_come_from_the_config():
    p = params("evaluate", *EVALUATE_KEYS, "evaluate.finetune_epochs=3", "train.seed=5")
    assert (p.probe_max_train, p.tsne_points, p.finetune_epochs) == (PROBE_TRAIN, 100, 3)
    assert p.seed == 5 == params("train", "train.seed=5").seed  # the run seed, train's key


# --- the blessing gate inside evaluate --------------------------------------------------------

DENSE = "model.variant=dense"  # evaluate's params from the same config as training


def test_gate_compares_with_the_baseline_measured_on_the_same_split(normalized_examples, tmp_path):
    # Adam 1e-3 at batch 64: slow enough on 320 images that 1 epoch is clearly worse than 6
    # (at the defaults' 3e-3 and batch 32 both plateau at the same excess).
    recipe = ("train.learning_rate=1e-3", "train.batch_size=64")
    good = train(normalized_examples, tmp_path / "good", "dense", 6, *recipe)
    poor = train(normalized_examples, tmp_path / "poor", "dense", 1, *recipe)
    loose = "gate.max_bce_excess=1.0"  # synthetic images: far from Fashion-MNIST's ceiling
    first = {}
    m_good, _ = evaluate(normalized_examples, good, tmp_path / "e1", loose, DENSE, blessing=first)
    assert first["blessed"] is True and m_good["blessed"] is True
    assert first["reason"].startswith("first model") and first["baseline_value"] is None
    assert first["lineage"] == "fashion_mnist/dense/clean"
    assert os.path.exists(os.path.join(first["uri"], "BLESSED"))

    worse = {}
    m_poor, _ = evaluate(
        normalized_examples, poor, tmp_path / "e2", loose, DENSE, baseline=good, blessing=worse
    )
    assert m_poor["bce_excess"] > m_good["bce_excess"]
    assert worse["blessed"] is False and m_poor["blessed"] is False
    assert worse["reason"].startswith("worse than the blessed baseline")
    # the baseline was measured here, on this test split: the same number as its own evaluation
    assert worse["baseline_value"] == pytest.approx(m_good["bce_excess"], abs=1e-6)
    assert worse["candidate_value"] == m_poor["bce_excess"]
    assert os.path.exists(os.path.join(worse["uri"], "NOT_BLESSED"))
    decision = json.load(open(os.path.join(worse["uri"], "blessing.json")))
    assert decision["baseline_model"]["metrics"]["bce_excess"] == worse["baseline_value"]

    better = {}
    evaluate(
        normalized_examples, good, tmp_path / "e3", loose, DENSE, baseline=poor, blessing=better
    )
    assert better["blessed"] is True and better["reason"].startswith("better")

    # a baseline that no longer loads (e.g. models/ changed): fail closed, say how to go on
    import shutil

    broken_uri = str(tmp_path / "broken_model")
    shutil.copytree(good["model"].uri, broken_uri)
    for name in os.listdir(broken_uri):
        if name.endswith(".h5"):
            open(os.path.join(broken_uri, name), "wb").write(b"not an HDF5 file")
    broken = {
        "model": Artifact(
            good["model"].type,
            broken_uri,
            properties={**good["model"].properties, "run_id": "old"},
            id=1,
        )
    }
    closed = {}
    evaluate(
        normalized_examples, good, tmp_path / "e5", loose, DENSE, baseline=broken, blessing=closed
    )
    assert closed["blessed"] is False
    assert "could not be loaded" in closed["reason"] and "gate.baseline=none" in closed["reason"]

    strict = {}  # the default ceiling, 0.15
    evaluate(normalized_examples, good, tmp_path / "e4", DENSE, blessing=strict)
    assert m_good["bce_excess"] > 0.15 and strict["blessed"] is False
    assert "gate.max_bce_excess" in strict["reason"]


# --- novelty detection: classes held out of training ------------------------------------------

HOLDOUT = "data.holdout_labels=[9]"


@pytest.mark.slow
def test_held_out_classes_are_detected_and_the_gate_measures_seen_classes(
    normalized_examples, tmp_path, caplog
):
    import logging

    from components import examples_io
    from components.evaluate import metrics as metrics_module
    from components.novelty.component import SCORES
    from components.novelty.scores import Fitted, compiled
    from pipeline.errors import StageError

    q = "novelty.threshold_quantile=0.9"  # the scorer's: evaluate reports its threshold
    trained = train(normalized_examples, tmp_path, "dense", 3, HOLDOUT, q)
    blessing, evaluation = {}, {}
    with caplog.at_level(logging.INFO, logger="pipeline"):
        m, out = evaluate(
            normalized_examples,
            trained,
            tmp_path,
            HOLDOUT,
            DENSE,
            "gate.max_bce_excess=1.0",
            blessing=blessing,
            evaluation=evaluation,
        )

    model = model_io.load_model(trained["model"])
    test = examples_io.load_split(normalized_examples, "test")
    held = test["label"] == 9
    val = examples_io.load_split(normalized_examples, "validation")
    run = compiled(model, Fitted.load(trained["scorer"].uri))
    val_scores = run(val["image"])["scores"]["combined"].astype(np.float64)
    # The threshold: the 0.9 quantile of validation scores without the held-out class.
    expected = np.quantile(val_scores[val["label"] != 9], 0.9)
    assert m["anomaly_threshold"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert m["anomaly_threshold"] != pytest.approx(np.quantile(val_scores, 0.9), rel=1e-4)
    assert m["anomaly_validation_examples"] == int(np.sum(val["label"] != 9))
    assert m["anomaly_threshold_quantile"] == 0.9 and m["anomaly_score"] == "combined"

    # Detection on test: held-out class 9 (positive) vs the rest, from the same scores.
    every = run(test["image"])["scores"]
    scores = every["combined"].astype(np.float64)
    flagged = scores > m["anomaly_threshold"]
    assert m["anomaly_held_out_examples"] == held.sum() > 0
    assert m["anomaly_seen_examples"] == 128 - held.sum()
    assert 0.0 <= m["anomaly_auroc"] <= 1.0
    from sklearn.metrics import roc_auc_score

    assert m["anomaly_auroc"] == pytest.approx(roc_auc_score(held, scores), abs=1e-5)
    assert m["anomaly_true_positives"] == int(np.sum(flagged & held))
    assert m["anomaly_recall"] == pytest.approx(np.sum(flagged & held) / held.sum(), abs=1e-6)
    assert m["anomaly_flagged_fraction"] == pytest.approx(flagged.mean(), abs=1e-6)
    from sklearn.metrics import average_precision_score

    for k in SCORES:  # every score's ranking of the held-out class
        assert m[f"novelty_{k}_auroc"] == pytest.approx(roc_auc_score(held, every[k]), abs=1e-5)
        assert m[f"novelty_{k}_auprc"] == pytest.approx(
            average_precision_score(held, every[k]), abs=1e-5
        )
        assert 0.0 <= m[f"novelty_{k}_tpr_at_5fpr"] <= 1.0

    # The gate's metric is measured on the seen classes only (a held-out class that
    # reconstructs badly is the detector working, not a worse model).
    recon = np.asarray(model.reconstruct(test["image"]), np.float32)
    seen = metrics_module.reconstruction(test["image"][~held], recon[~held])
    assert m["bce_excess"] == pytest.approx(seen["bce_excess"], rel=1e-4)
    assert m["reconstruction_test_examples"] == 128 - held.sum() and m["test_examples"] == 128
    assert m["held_out_bce"] == pytest.approx(
        metrics_module.reconstruction(test["image"][held], recon[held])["bce"], rel=1e-4
    )
    assert blessing["candidate_value"] == m["bce_excess"]
    assert blessing["lineage"] == "fashion_mnist/dense/clean/holdout:9"

    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["metrics"] == m
    for png in ("score_histogram.png", "novelty_roc.png"):
        assert png in saved["plots"] and is_png(os.path.join(out, png)), png
    assert (evaluation["anomaly_auroc"], evaluation["holdout_labels"]) == (m["anomaly_auroc"], [9])
    assert f"anomaly auroc {m['anomaly_auroc']:.3f}" in caplog.text

    # Evaluated as if no class were held out, the same model is refused, naming the key.
    with pytest.raises(StageError, match=r"trained without classes \[9\].*data.holdout_labels"):
        evaluate(normalized_examples, trained, tmp_path / "mismatch", DENSE)
