"""export: SavedModel serving raw inputs (serving_default on raw tf.Examples, images_uint8,
score) with every novelty score and the served one's threshold (from the `scorer`), its
TFLite models, the embeddings of every example of every split (Parquet + TensorBoard
projector) and the scores of the test split."""

from __future__ import annotations

from dataclasses import dataclass

from components.novelty.component import SCORES
from pipeline import artifacts
from pipeline.component import Component, Input
from pipeline.config import Params, key, require
from pipeline.views import View

MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
SAVED_MODEL_KEY = "saved_model"
EMBEDDINGS_KEY = "embeddings"
SCORER_KEY = "scorer"


@dataclass(frozen=True, kw_only=True)
class ExportParams(Params):
    batch_size: int = 512  # examples per embedding inference call
    score: str = key(
        "export.score",
        "combined",
        "the novelty score served as score / is_anomaly: one of "
        + ", ".join(SCORES)
        + ' (docs/stages.md, "Novelty scores"); every score is served beside it',
    )

    def check(self) -> None:
        require(self.score in SCORES, "export.score", f"one of {SCORES}", self.score)


EXPORT = Component(
    name="export",
    inputs={
        MODEL_KEY: Input(artifacts.MODEL),
        EXAMPLES_KEY: Input(artifacts.EXAMPLES),
        SCORER_KEY: Input(artifacts.SCORER),
    },
    outputs={SAVED_MODEL_KEY: artifacts.SAVED_MODEL, EMBEDDINGS_KEY: artifacts.EMBEDDINGS},
    params=ExportParams,
    executor_module="components.export.executor",
    description="SavedModel + TFLite + embeddings + test scores",
    view=View(headline=("embeddings",)),
)
