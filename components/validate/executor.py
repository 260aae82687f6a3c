"""validate executor: TFDV statistics of every split against the curated raw schema.

On anomalies the statistics and anomalies are still committed (so they can be opened
with TFDV's tools) and the stage fails with DataAnomalyError, which stops the run
with exit code 3.
"""

from __future__ import annotations

from components import data_validation as dv
from pipeline.schemas import load_schema


def run(inputs, outputs, params, ctx):
    examples = inputs["examples"]
    schema = load_schema(params["schema"])
    splits = examples.splits or ["train", "validation", "test"]
    stats = dv.compute_statistics(examples, splits, schema, outputs["statistics"], ctx.beam_args)
    anomalies = dv.check(stats, schema, outputs["anomalies"], drift=True)
    metrics = {"splits": dv.summarize(stats), "label_drift": dv.drift(anomalies),
               "anomalous_splits": outputs["anomalies"].properties["anomalous_splits"]}
    dv.raise_on_anomalies(anomalies, outputs["anomalies"],
                          f"{examples.uri} (schema {params['schema']})")
    ctx.log.info("no anomalies in %s", ", ".join(splits))
    return metrics
