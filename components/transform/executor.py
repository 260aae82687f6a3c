"""transform executor: raw shards -> normalized shards (same split and shard layout),
one Beam element per shard, streamed STATS_BATCH examples at a time (memory does not
grow with the shard); then TFDV checks the output against schemas/normalized.

TFDV computes every statistic the normalized schema checks (value counts, presence,
min / max, NaN, infinity) from every written value, but no histograms of the pixel
features: those are the raw histograms of validate's statistics divided by 255 (the
normalization is exact), and their quantile sketch was most of this stage's time.

It refuses raw examples whose validation found anomalies (`raw_anomalies`), which only
matters when it runs alone: in the pipeline an anomaly stops the run before transform.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

import apache_beam as beam
from tensorflow.io import gfile

from components import data_validation as dv
from components import examples_io, records
from components import features as F
from components.preprocessing import normalize
from components.transform import noise
from pipeline import beam_jobs
from pipeline.artifacts import SPLITS, Artifact
from pipeline.errors import DataError
from pipeline.schemas import load_schema

if TYPE_CHECKING:
    from components.transform.component import TransformParams
    from pipeline.component import ExecutionContext

STATS_BATCH = 1000  # rows per RecordBatch handed to TFDV
PIXEL_FEATURES = (F.IMAGE, F.NOISY_IMAGE)  # no histograms in transform's statistics


class _TransformShard(beam.DoFn):
    """Normalizes (and corrupts) one (split, shard), writes it, and emits the written
    examples as (split, Arrow RecordBatch) so TFDV's statistics run in the same pipeline
    without re-reading."""

    def __init__(self, out_uri: str, kind: str, factor: float, seed: int):
        self.out_uri, self.kind, self.factor, self.seed = out_uri, kind, factor, seed

    def process(self, task):
        split, path = task
        out = posixpath.join(self.out_uri, f"Split-{split}", posixpath.basename(path))
        with records.shard_errors(path), records.shard_writer(out) as writer:
            for data in records.iter_shard(path, float_images=False, batch_size=STATS_BATCH):
                batch = self._transform(data)
                for example in records.to_examples(batch):
                    writer.write(example)
                yield split, batch

    def _transform(self, data: dict):
        x = normalize(data[F.IMAGE])
        images = {F.IMAGE: x}
        if self.kind != "none":
            images[F.NOISY_IMAGE] = noise.corrupt(x, data[F.ID], self.kind, self.factor, self.seed)
        return records.record_batch([i.decode() for i in data[F.ID]], data[F.LABEL], images)


def run(
    params: TransformParams,
    ctx: ExecutionContext,
    *,
    examples: Artifact,
    raw_anomalies: Artifact,
    transformed_examples: Artifact,
    statistics: Artifact,
    anomalies: Artifact,
) -> dict:
    _require_validated(examples, raw_anomalies)
    splits = examples.splits or list(SPLITS)
    schema = load_schema(params.schema)
    _transform_pass(
        params,
        examples,
        transformed_examples,
        statistics,
        splits=splits,
        schema=schema,
        beam_args=ctx.beam_args,
    )
    stats = dv.load_statistics(splits, statistics)
    found = dv.check(stats, schema, anomalies)
    summary = dv.summarize(stats)
    _record_properties(transformed_examples, params, splits, summary)
    dv.raise_on_anomalies(found, anomalies, f"{transformed_examples.uri} (schema {params.schema})")
    return {
        "splits": summary,
        "noise_kind": params.noise_kind,
        "num_examples": sum(v["num_examples"] for v in summary.values()),
    }


def _require_validated(raw: Artifact, raw_anomalies: Artifact) -> None:
    if raw_anomalies.properties.get("anomalous_splits"):
        raise DataError(
            f"the raw examples at {raw.uri} failed validation (anomalies in "
            f"{raw_anomalies.properties['anomalous_splits']}, see {raw_anomalies.uri})"
        )


def _transform_pass(
    params: TransformParams,
    raw: Artifact,
    out: Artifact,
    statistics: Artifact,
    *,
    splits: list[str],
    schema,
    beam_args,
) -> None:
    """Every split's shards normalized (and corrupted) and written, and TFDV's statistics
    of what was written, in one Beam pipeline."""
    shard_fn = _TransformShard(out.uri, params.noise_kind, params.noise_factor, params.seed)
    shards = examples_io.split_shards(raw, splits)
    for split in splits:
        gfile.makedirs(out.split_uri(split))
    with beam_jobs.pipeline(beam_args) as p:
        batches = (
            p
            | "Shards" >> beam.Create(shards, reshuffle=False)
            | "Normalize" >> beam.ParDo(shard_fn)
        )
        dv.write_statistics(batches, splits, schema, statistics, PIXEL_FEATURES)


def _record_properties(
    out: Artifact, params: TransformParams, splits: list[str], summary: dict
) -> None:
    noisy = params.noise_kind != "none"
    out.properties.update(
        {
            "splits": splits,
            "counts": {s: v["num_examples"] for s, v in summary.items()},
            "normalized": True,
            "noisy": noisy,
            "noise_kind": params.noise_kind,
            "noise_factor": params.noise_factor if noisy else 0.0,
            "seed": params.seed,
        }
    )
