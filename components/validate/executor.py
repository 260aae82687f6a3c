"""validate executor: TFDV statistics of every split against the curated raw schema.

On anomalies it raises DataAnomalyError; the component publishes the statistics and
anomalies anyway (published_on_rejection), so they can be opened with TFDV's tools,
and the run stops with exit code 3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from components import data_validation as dv
from pipeline.schemas import load_schema

if TYPE_CHECKING:
    from components.validate.component import ValidateParams
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext


def run(params: ValidateParams, ctx: ExecutionContext, *, examples: Artifact,
        statistics: Artifact, anomalies: Artifact) -> dict:
    schema = load_schema(params.schema)
    splits = examples.splits or ["train", "validation", "test"]
    stats = dv.compute_statistics(examples, splits, schema, statistics, ctx.beam_args)
    found = dv.check(stats, schema, anomalies, drift=True)
    dv.raise_on_anomalies(found, anomalies, f"{examples.uri} (schema {params.schema})")
    ctx.log.info("no anomalies in %s", ", ".join(splits))
    return {"splits": dv.summarize(stats), "label_drift": dv.drift(found),
            "anomalous_splits": anomalies.properties["anomalous_splits"]}
