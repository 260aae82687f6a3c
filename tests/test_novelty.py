"""novelty component: the scores' constants fitted on train and validation only, each score
finite, deterministic and ordering a planted novelty above seen examples; the latent
density's maths on data whose answer is known."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from components import examples_io
from components.novelty import fit
from components.novelty.component import SCORES
from components.novelty.scores import SCORER_JSON, SCORER_NPZ, Fitted, compiled
from components.train import model_io
from pipeline.artifacts import SPLITS, Artifact
from pipeline.errors import ConfigError, DataError
from tests.helpers import fit_scorer, output_artifacts, params, run_executor

HOLDOUT = "data.holdout_labels=[9]"


@pytest.fixture(scope="module")
def scored(normalized_examples, tmp_path_factory):
    """A dense model trained 3 epochs without class 9, and its scorer."""
    root = tmp_path_factory.mktemp("novelty")
    trained = output_artifacts("train", root)
    train_params = params(
        "train",
        "model.variant=dense",
        "model.latent_dim=8",
        "train.epochs=3",
        "train.early_stopping_patience=0",
        HOLDOUT,
    )
    run_executor("train", train_params, {"examples": normalized_examples}, trained)
    scorer = fit_scorer(normalized_examples, trained["model"], root / "fit", HOLDOUT)
    net = model_io.load_model(trained["model"])
    return {
        "scorer": scorer,
        "model": trained["model"],
        "net": net,
        "fitted": Fitted.load(scorer.uri),
    }


def test_every_score_is_finite_and_the_same_for_the_same_image(scored, normalized_examples):
    test = examples_io.load_split(normalized_examples, "test")
    run = compiled(scored["net"], scored["fitted"])
    first, again = run(test["image"])["scores"], run(test["image"][::-1])["scores"]
    for k in SCORES:
        assert first[k].shape == (128,) and np.isfinite(first[k]).all(), k
        np.testing.assert_allclose(again[k][::-1], first[k], rtol=1e-5, atol=1e-6)
    # One image alone scores as it does in a batch.
    one = run(test["image"][:1])["scores"]
    for k in SCORES:
        assert one[k][0] == pytest.approx(first[k][0], rel=1e-5, abs=1e-6), k


def test_inverted_images_score_above_seen_ones_on_every_score(scored, normalized_examples):
    from sklearn.metrics import roc_auc_score

    test = examples_io.load_split(normalized_examples, "test")
    seen = test["image"][test["label"] != 9]
    run = compiled(scored["net"], scored["fitted"])
    normal, planted = run(seen)["scores"], run(1.0 - seen)["scores"]
    for k in SCORES:
        y = np.r_[np.zeros(len(seen)), np.ones(len(seen))]
        auroc = roc_auc_score(y, np.r_[normal[k], planted[k]])
        assert auroc > 0.85 and planted[k].mean() > normal[k].mean(), (k, auroc)


def test_thresholds_are_the_quantile_of_the_seen_validation_scores(scored, normalized_examples):
    p = params("novelty", HOLDOUT)
    val = examples_io.load_split(normalized_examples, "validation")
    run = compiled(scored["net"], scored["fitted"])
    kept = val["label"] != 9
    out = run(val["image"][kept])["scores"]
    for k in SCORES:
        expected = np.quantile(out[k].astype(np.float64), p.threshold_quantile)
        assert scored["fitted"].thresholds[k] == pytest.approx(expected, rel=1e-4, abs=1e-5), k
    # combined: the three standardized on those very scores, so mean 0 on them.
    assert abs(float(np.mean(out["combined"]))) < 1e-3
    props = scored["scorer"].properties
    assert props["validation_examples"] == int(kept.sum())
    assert props["classes"] == sorted(set(range(10)) - {9})
    saved = json.load(open(os.path.join(scored["scorer"].uri, SCORER_JSON)))
    assert saved["thresholds"] == scored["fitted"].thresholds


def test_the_fit_never_reads_the_test_split(scored, normalized_examples, tmp_path):
    """With the test split gone the fit gives the same constants: nothing chosen in it
    depends on test examples (the held-out classes' included)."""
    copy = tmp_path / "examples"
    shutil.copytree(normalized_examples.uri, copy)
    shutil.rmtree(copy / "Split-test")
    props = {**normalized_examples.properties, "splits": ["train", "validation"]}
    without_test = Artifact(normalized_examples.type, str(copy), props)
    scorer = fit_scorer(without_test, scored["model"], tmp_path / "fit", HOLDOUT)
    again = Fitted.load(scorer.uri)
    for name in ("whitening", "class_means", "layer_scales", "centre", "spread"):
        np.testing.assert_array_equal(getattr(again, name), getattr(scored["fitted"], name))
    assert again.thresholds == scored["fitted"].thresholds
    assert os.path.exists(os.path.join(scorer.uri, SCORER_NPZ))


def test_latent_distance_is_the_mahalanobis_distance_to_the_nearest_class():
    """Two classes with a known shared covariance: the whitened distance matches the
    analytic one, and a point at a class mean is at distance ~0."""
    from components.novelty.scores import latent_distance

    rng = np.random.default_rng(0)
    cov = np.array([[4.0, 1.0], [1.0, 1.0]])
    means = np.array([[0.0, 0.0], [10.0, -5.0]])
    labels = np.repeat([0, 1], 20000)
    codes = means[labels] + rng.multivariate_normal([0, 0], cov, size=len(labels))
    whitening, class_means = fit.density(codes, labels)
    points = np.array([[0.0, 0.0], [10.0, -5.0], [2.0, 1.0], [30.0, 0.0]], np.float32)
    got = np.asarray(latent_distance(points, whitening, class_means))
    precision = np.linalg.inv(cov)
    d = [[(p - m) @ precision @ (p - m) / 2 for m in means] for p in points.astype(np.float64)]
    np.testing.assert_allclose(got, np.min(d, axis=1), rtol=0.03, atol=0.01)
    assert got[0] < 0.01 and got[1] < 0.01


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("novelty.fit_examples=50", "novelty.fit_examples"),
        ("novelty.threshold_quantile=1.0", "novelty.threshold_quantile"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        params("novelty", override)


def test_validation_of_held_out_classes_only_is_one_clear_error(scored, tmp_path):
    """A validation split made of held-out classes only: one clear error, nothing written."""
    from tests.helpers import synthetic_images, write_examples_artifact

    images, _ = synthetic_images(20, 4)
    splits = {s: (images.astype(np.float32) / 255.0, np.full(20, 9)) for s in SPLITS}
    splits["train"] = (images.astype(np.float32) / 255.0, np.arange(20) % 9)
    examples = write_examples_artifact(str(tmp_path / "examples"), splits, normalized=True)
    outputs = output_artifacts("novelty", tmp_path)
    with pytest.raises(
        DataError,
        match=r"split 'validation' in .* has no examples left after "
        r"leaving out classes \[9\] \(data.holdout_labels\)",
    ):
        run_executor(
            "novelty",
            params("novelty", HOLDOUT),
            {"examples": examples, "model": scored["model"]},
            outputs,
        )
    assert not os.listdir(outputs["scorer"].uri)  # failed before writing anything
