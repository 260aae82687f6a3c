"""validate: TFDV statistics per split, checked against the curated raw schema;
anomalies (including train/test label drift) stop the run with exit 3."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline import artifacts
from pipeline.component import Channel, Component
from pipeline.config import Params
from pipeline.schemas import RAW_SCHEMA, schema_digest

EXAMPLES_KEY = "examples"
STATISTICS_KEY = "statistics"
ANOMALIES_KEY = "anomalies"


@dataclass(frozen=True, kw_only=True)
class ValidateParams(Params):
    schema: str = RAW_SCHEMA  # project-relative path of the curated schema

    def cache_key(self) -> dict:
        return {**dataclasses.asdict(self), "schema_sha256": schema_digest(self.schema)}


VALIDATE = Component(
    name="validate",
    inputs={EXAMPLES_KEY: Channel(artifacts.EXAMPLES, "ingest", "examples")},
    outputs={STATISTICS_KEY: artifacts.STATISTICS, ANOMALIES_KEY: artifacts.ANOMALIES},
    params=ValidateParams,
    executor_module="components.validate.executor",
    description="TFDV statistics and anomalies against schemas/raw",
    published_on_rejection=(STATISTICS_KEY, ANOMALIES_KEY),
)
