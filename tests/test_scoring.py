"""The anomaly score (components/scoring.py) is the per-image bce_excess of
components/evaluate/metrics.py, whatever the decoder's last layer, and its threshold is
a float32 quantile with clear errors."""

import numpy as np
import pytest

import models
from components import scoring
from components.evaluate import metrics as M
from pipeline.errors import DataError, StageError


def _saturating(variant):
    """A model whose reconstructions are exactly 0 or 1 in places: the clipping matters."""
    model = models.build(variant)
    last = [layer for layer in model.decoder.layers if layer.weights][-1]
    kernel, bias = last.get_weights()
    signs = np.where(np.arange(bias.size) % 2 == 0, 30.0, -30.0).reshape(bias.shape)
    last.set_weights([kernel, bias + signs])  # sigmoid(+-30) is 1 or 0 in float32
    return model


@pytest.mark.parametrize("variant", ["conv_pool", "dense"])  # sigmoid conv vs Dense+Reshape
def test_score_is_the_per_image_bce_excess_of_the_metrics(variant):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (6, 28, 28, 1)).astype(np.float32)
    images[images < 0.4] = 0.0
    images[images > 0.9] = 1.0
    model = _saturating(variant)
    recon = np.asarray(model.reconstruct(images), np.float64)
    assert np.mean((recon < 1e-7) | (recon > 1 - 1e-7)) > 0.01  # some pixels saturate
    expected = M.bce_per_image(images, recon) - M.entropy_per_image(images)
    # 2%: float32 cannot hold 1 - 1e-7, so a saturated wrong pixel costs 15.94 nats there
    # against 16.12 in the float64 metrics; taking the sigmoid's logits unclipped (the
    # defect this guards against) costs 30.
    np.testing.assert_allclose(scoring.scores(model, images), expected, rtol=0.02)
    # The serving path passes the reconstruction it already has: the same numbers.
    np.testing.assert_allclose(
        np.asarray(scoring.score(model, images, recon.astype(np.float32))), expected, rtol=0.02
    )


def test_a_perfect_reconstruction_scores_zero_whatever_the_image():
    class Identity:
        def reconstruct(self, x):
            return x

    images = np.random.default_rng(1).uniform(0, 1, (4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(scoring.scores(Identity(), images), 0.0, atol=1e-5)


def test_threshold_is_a_float32_quantile_and_bad_scores_fail_clearly():
    values = np.arange(101, dtype=np.float64) / 7.0
    t = scoring.threshold(values, 0.99, "here")
    assert t == float(np.float32(np.quantile(values, 0.99)))
    with pytest.raises(DataError, match=r"no validation examples .*\(split 'validation' of X\)"):
        scoring.threshold(np.zeros(0), 0.99, "split 'validation' of X")
    with pytest.raises(StageError, match=r"2 of 5 validation anomaly scores are not finite"):
        scoring.threshold(np.array([1.0, np.nan, 2.0, np.inf, 3.0]), 0.99, "here")
