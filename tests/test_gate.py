"""The blessing gate's decision (components/evaluate/gate.py) with the thresholds the
pipeline really uses: better, worse, equal within tolerance, first model, ceilings,
VAEs, and numbers that are not numbers."""

from __future__ import annotations

import math

import pytest

from components.evaluate import gate
from tests.helpers import params

THRESHOLDS = params("evaluate").thresholds  # the config's defaults


def _decide(candidate: float, baseline: float | None, metric: str = "bce_excess", **extra):
    cand = {
        metric: candidate,
        "bce_excess": extra.get("bce_excess", candidate if metric == "bce_excess" else 0.05),
    }
    base = None if baseline is None else {metric: baseline}
    return gate.decide(metric, cand, base, extra.get("thresholds", THRESHOLDS))


def test_defaults_come_from_the_config():
    assert (THRESHOLDS.relative_tolerance, THRESHOLDS.max_bce_excess, THRESHOLDS.max_neg_elbo) == (
        0.01,
        0.15,
        330.0,
    )
    p = params("evaluate", "gate.relative_tolerance=0.05", "gate.max_bce_excess=0.2")
    assert p.thresholds.relative_tolerance == 0.05 and p.thresholds.max_bce_excess == 0.2


def test_better_candidate_is_blessed_with_both_numbers_in_the_reason():
    d = _decide(0.030, 0.040)
    assert d["blessed"] is True
    assert d["reason"].startswith("better")
    assert "0.03" in d["reason"] and "0.04" in d["reason"]
    assert (d["candidate"], d["baseline"]) == (0.030, 0.040)


def test_worse_candidate_is_not_blessed():
    d = _decide(0.0420, 0.0400)  # +5%, tolerance 1%
    assert d["blessed"] is False
    assert d["reason"].startswith("worse than the blessed baseline")
    assert "+5.00%" in d["reason"] and "gate.relative_tolerance" in d["reason"]


def test_equal_within_tolerance_passes_and_just_outside_does_not():
    assert _decide(0.0400, 0.0400)["blessed"] is True
    assert _decide(0.04039, 0.0400)["blessed"] is True  # +0.975% <= 1%
    d = _decide(0.04039, 0.0400)
    assert d["reason"].startswith("no worse within tolerance")
    assert _decide(0.04041, 0.0400)["blessed"] is False  # +1.025%


def test_first_model_of_a_lineage_is_blessed_when_under_the_ceiling():
    d = _decide(0.05, None)
    assert d["blessed"] is True and d["baseline"] is None
    assert "first model" in d["reason"]
    d = _decide(0.20, None)  # above gate.max_bce_excess 0.15
    assert d["blessed"] is False and "gate.max_bce_excess" in d["reason"]


def test_ceiling_applies_even_when_better_than_the_baseline():
    d = _decide(0.16, 0.30)
    assert d["blessed"] is False and "ceiling" in d["reason"]


def test_vaes_compare_neg_elbo_and_have_their_own_ceiling():
    assert gate.main_metric(True) == "neg_elbo" and gate.main_metric(False) == "bce_excess"
    d = _decide(250.0, 260.0, metric="neg_elbo")
    assert d["blessed"] is True and d["metric"] == "neg_elbo"
    assert _decide(265.0, 260.0, metric="neg_elbo")["blessed"] is False  # +1.9%
    d = _decide(340.0, None, metric="neg_elbo")
    assert d["blessed"] is False and "gate.max_neg_elbo" in d["reason"]
    # a VAE must also pass the BCE-excess ceiling
    d = _decide(250.0, None, metric="neg_elbo", bce_excess=0.2)
    assert d["blessed"] is False and "bce_excess" in d["reason"]


@pytest.mark.parametrize("value", [math.nan, math.inf, None])
def test_non_finite_metrics_are_never_blessed(value):
    d = gate.decide("bce_excess", {"bce_excess": value}, None, THRESHOLDS)
    assert d["blessed"] is False and "not a finite number" in d["reason"]


def test_exactly_at_the_allowed_limit_is_blessed():
    """ "At most the baseline plus the tolerance": the limit itself passes (exact in binary)."""
    t = params("evaluate", "gate.relative_tolerance=0.25").thresholds
    d = gate.decide("neg_elbo", {"neg_elbo": 250.0, "bce_excess": 0.05}, {"neg_elbo": 200.0}, t)
    assert d["blessed"] is True and d["reason"].startswith("no worse within tolerance")
    d = gate.decide("neg_elbo", {"neg_elbo": 250.5, "bce_excess": 0.05}, {"neg_elbo": 200.0}, t)
    assert d["blessed"] is False


def test_a_model_trained_without_some_classes_is_a_lineage_of_its_own():
    # Normal models keep their lineage strings (blessed models recorded under them stay
    # baselines); held-out classes add a part, in one order whatever the config's order.
    assert params("evaluate").lineage() == "fashion_mnist/best/clean"
    assert params("evaluate", "data.holdout_labels=[]").lineage() == "fashion_mnist/best/clean"
    assert (
        params("evaluate", "noise.kind=gaussian", "model.variant=dense").lineage()
        == "fashion_mnist/dense/gaussian:0.5"
    )
    assert (
        params("evaluate", "data.holdout_labels=[9]").lineage()
        == "fashion_mnist/best/clean/holdout:9"
    )
    assert (
        params("evaluate", "data.holdout_labels=[9, 3]", "noise.kind=gaussian").lineage()
        == params("evaluate", "data.holdout_labels=[3, 9]", "noise.kind=gaussian").lineage()
        == "fashion_mnist/best/gaussian:0.5/holdout:3,9"
    )
    # the baseline is looked up in that lineage, by evaluate and again by push
    held_out = params("evaluate", "data.holdout_labels=[9]").baseline_lineage()
    assert held_out == params("push", "data.holdout_labels=[9]").baseline_lineage()
    assert held_out != params("evaluate").baseline_lineage()
