"""ingest: MNIST / Fashion-MNIST (tfds or original IDX files) -> sharded GZIP TFRecords
with train / validation / test splits; validation carved deterministically from train.
Owns the [data] config keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from components.ingest import sources
from pipeline import artifacts
from pipeline.component import Component
from pipeline.config import Params, key, require
from pipeline.views import View

EXAMPLES_KEY = "examples"
DATASETS = ("fashion_mnist", "mnist")


@dataclass(frozen=True, kw_only=True)
class IngestParams(Params):
    dataset: str = key("data.dataset", "fashion_mnist", "fashion_mnist or mnist")
    source: str = key(
        "data.source",
        "auto",
        "auto (Debian's IDX files when installed, else tensorflow_datasets), "
        "tfds, or idx:DIR (a directory with the four original IDX files)",
    )
    max_examples: int = key("data.max_examples", 0, "cap per source split; 0 = all")
    validation_fraction: float = key(
        "data.validation_fraction", 0.1, "share of the source train split carved out as validation"
    )
    num_shards: int = key("data.num_shards", 4, "TFRecord shards per split")

    def check(self) -> None:
        require(self.dataset in DATASETS, "data.dataset", f"one of {DATASETS}", self.dataset)
        require(
            self.source in ("auto", "tfds")
            or (self.source.startswith("idx:") and len(self.source) > 4),
            "data.source",
            "auto, tfds or idx:DIR",
            self.source,
        )
        require(self.max_examples >= 0, "data.max_examples", ">= 0 (0 = all)", self.max_examples)
        require(
            0.0 < self.validation_fraction < 1.0,
            "data.validation_fraction",
            "a fraction strictly between 0 and 1",
            self.validation_fraction,
        )
        require(1 <= self.num_shards <= 1024, "data.num_shards", "1..1024", self.num_shards)

    def cache_key(self) -> dict:
        # The data's content, not where it lives: a moved IDX directory still hits. Reading
        # it here also reports a missing directory or file before anything runs (exit 3).
        return {
            **dataclasses.asdict(self),
            "source": sources.source_identity(self.dataset, self.source),
        }


INGEST = Component(
    name="ingest",
    inputs={},
    outputs={EXAMPLES_KEY: artifacts.EXAMPLES},
    params=IngestParams,
    executor_module="components.ingest.executor",
    description="read the dataset, write sharded TFRecords per split",
    view=View(headline=("num_examples",), examples=EXAMPLES_KEY),
)
