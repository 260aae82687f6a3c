"""export: SavedModel serving raw inputs (serving_default on raw tf.Examples, images_uint8,
score) with a calibrated anomaly threshold, its TFLite models, the embeddings of every
example of every split (Parquet + TensorBoard projector) and the scores of the test split."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import artifacts
from pipeline.component import Component, Input
from pipeline.config import Params, key, require
from pipeline.views import View

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
SAVED_MODEL_KEY = "saved_model"
EMBEDDINGS_KEY = "embeddings"


@dataclass(frozen=True, kw_only=True)
class ExportParams(Params):
    batch_size: int = 512  # examples per embedding inference call
    threshold_quantile: float = key(
        "export.threshold_quantile",
        0.99,
        "anomaly threshold: this quantile of the validation split's scores",
    )
    holdout_labels: tuple[int, ...] = key("data.holdout_labels")  # left out of the calibration

    def check(self) -> None:
        require(
            0.5 <= self.threshold_quantile < 1.0,
            "export.threshold_quantile",
            "a quantile in [0.5, 1)",
            self.threshold_quantile,
        )


EXPORT = Component(
    name="export",
    inputs={MODEL_KEY: Input(artifacts.MODEL), EXAMPLES_KEY: Input(artifacts.EXAMPLES)},
    outputs={SAVED_MODEL_KEY: artifacts.SAVED_MODEL, EMBEDDINGS_KEY: artifacts.EMBEDDINGS},
    params=ExportParams,
    executor_module="components.export.executor",
    description="SavedModel + TFLite + embeddings + test scores",
    view=View(headline=("embeddings",)),
)
