"""novelty: the constants of the novelty scores (components/novelty/scores.py) fitted on
train and validation (components/novelty/fit.py), and each score's anomaly threshold;
evaluate reports every score with them, export bakes them into the SavedModel. Owns the
[novelty] config keys."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import artifacts
from pipeline.component import Component, Input
from pipeline.config import Params, key, require
from pipeline.views import View

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
SCORER_KEY = "scorer"
# The novelty scores, in the order every view lists them (components/novelty/scores.py).
SCORES = ("reconstruction", "latent", "activations", "combined")


@dataclass(frozen=True, kw_only=True)
class NoveltyParams(Params):
    fit_examples: int = key(
        "novelty.fit_examples",
        10000,
        "train examples the latent density and the activation scales are fitted on; 0 = all",
    )
    threshold_quantile: float = key(
        "novelty.threshold_quantile",
        0.99,
        "anomaly threshold: this quantile of the validation split's scores",
    )
    holdout_labels: tuple[int, ...] = key("data.holdout_labels")  # left out of every fit
    seed: int = key("train.seed")

    def check(self) -> None:
        require(
            0.5 <= self.threshold_quantile < 1.0,
            "novelty.threshold_quantile",
            "a quantile in [0.5, 1)",
            self.threshold_quantile,
        )
        require(
            self.fit_examples == 0 or self.fit_examples >= 100,
            "novelty.fit_examples",
            "0 (all) or at least 100",
            self.fit_examples,
        )


NOVELTY = Component(
    name="novelty",
    inputs={MODEL_KEY: Input(artifacts.MODEL), EXAMPLES_KEY: Input(artifacts.EXAMPLES)},
    outputs={SCORER_KEY: artifacts.SCORER},
    params=NoveltyParams,
    executor_module="components.novelty.executor",
    description="novelty scores fitted on train and validation, with their thresholds",
    view=View(headline=("threshold_combined", "fit_examples")),
)
