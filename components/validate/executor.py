"""validate executor: one Beam pass per split computes TFDV's statistics (with the
per-image content features appended) and the per-pixel moment maps; then every split is
checked against the curated raw schema, test against train, and train against the data
behind the last blessed model (`reference_statistics`, when the launcher found one).

On anomalies it raises DataAnomalyError; the component publishes the statistics and
anomalies anyway (published_on_rejection), so they can be opened with TFDV's tools,
and the run stops with exit code 3.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apache_beam as beam
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx_bsl.coders import example_coder

from components import data_validation as dv
from components import examples_io, records
from components import features as F
from components.validate import content
from pipeline import beam_jobs
from pipeline.artifacts import SPLITS, Artifact
from pipeline.schemas import load_schema

if TYPE_CHECKING:
    from components.validate.component import ValidateParams
    from pipeline.component import ExecutionContext

BATCH = 1000  # examples per Arrow RecordBatch
TEST_AGAINST = "train"  # test is compared with train (validation is carved from train)
# A class whose expected count in a split (its share of train times the split's size) is
# at least this is expected to appear there: P(absent by chance) = e^-10 < 1e-4.
MIN_EXPECTED_COUNT = 10.0


class ReadShard(beam.DoFn):
    """One (split, shard)'s examples as (split, Arrow RecordBatch of BATCH rows), decoded
    as tfx_bsl's TFExampleRecord decodes them (the same columns and types). tf.data reads the GZIP
    records in C++: Beam's TFRecord source checks and yields each record in Python, which
    was a third of this stage's time on 70,000 examples."""

    def setup(self):
        self._decoder = example_coder.ExamplesToRecordBatchDecoder()

    def process(self, task: tuple[str, str]):
        split, path = task
        with records.shard_errors(path):
            for batch in tf.data.TFRecordDataset(path, F.COMPRESSION).batch(BATCH):
                yield split, self._decoder.DecodeBatch(batch.numpy().tolist())


def statistics_pass(
    examples: Artifact, splits: list[str], schema, out: Artifact, beam_args
) -> None:
    """TFDV statistics and pixel moments of every split, in one Beam pipeline; each
    element carries its split, so TFDV's transform and the moments' combine are built
    once, not once per split."""
    shards = examples_io.split_shards(examples, splits)
    with beam_jobs.pipeline(beam_args) as p:
        batches, moments = (
            p
            | "Shards" >> beam.Create(shards, reshuffle=False)
            | "Read" >> beam.ParDo(ReadShard())
            | "Content"
            >> beam.ParDo(content.ContentFeatures()).with_outputs(
                content.ContentFeatures.MOMENTS, main="batches"
            )
        )
        dv.write_statistics(batches, splits, schema, out)
        _ = (
            moments
            | "Moments" >> beam.CombinePerKey(content.PixelMoments())
            | "WriteMoments" >> beam.Map(content.write_maps, out.uri)
        )


def label_counts(stats) -> dict[int, int]:
    """Examples per label, from TFDV's top values of the (categorical) label."""
    for feature in stats.datasets[0].features:
        if "/".join(feature.path.step) == F.LABEL:
            return {int(float(v.value)): int(v.frequency) for v in feature.string_stats.top_values}
    return {}


def missing_classes(split_stats, reference_stats) -> str | None:
    """A description of the classes the reference has but this split lacks, counting
    only classes frequent enough in the reference to be expected here."""
    ref, here = label_counts(reference_stats), label_counts(split_stats)
    total_ref = sum(ref.values())
    n = split_stats.datasets[0].num_examples
    missing = sorted(
        c
        for c, k in ref.items()
        if here.get(c, 0) == 0 and total_ref and n * k / total_ref >= MIN_EXPECTED_COUNT
    )
    if not missing:
        return None
    return (
        f"classes {missing} are absent from {n} examples although the compared data has "
        f"them (expected >= {MIN_EXPECTED_COUNT:g} examples each at its class shares)"
    )


@dataclass(frozen=True)
class Comparison:
    """What a split is compared with: its name in messages, its statistics, its maps."""

    label: str
    stats: statistics_pb2.DatasetFeatureStatisticsList
    maps: content.Maps | None


def run(
    params: ValidateParams,
    ctx: ExecutionContext,
    *,
    examples: Artifact,
    reference_statistics: Artifact | None,
    statistics: Artifact,
    anomalies: Artifact,
) -> dict:
    schema = load_schema(params.schema)
    splits = examples.splits or list(SPLITS)
    statistics_pass(examples, splits, schema, statistics, ctx.beam_args)
    stats = dv.load_statistics(splits, statistics)
    maps: dict[str, content.Maps] = {}
    for s in splits:
        m = content.read_maps(statistics.uri, s)
        assert m is not None, s  # statistics_pass just wrote every split's moments
        maps[s] = m
    against = _comparisons(splits, stats, maps, reference_statistics, ctx.log)
    limits = content.MapLimits(params.max_pixel_mean_rms, params.max_pixel_std_rms)
    extra = _content_findings(against, stats, maps, limits)
    _draw_maps(maps, against, statistics)
    found = dv.check(
        stats, schema, anomalies, previous={s: c.stats for s, c in against.items()}, extra=extra
    )
    compared = {s: c.label for s, c in against.items()}
    anomalies.properties["compared"] = compared
    dv.raise_on_anomalies(found, anomalies, f"{examples.uri} (schema {params.schema})", compared)
    ctx.log.info("validate: no anomalies in %s", ", ".join(splits))
    return {
        "splits": dv.summarize(stats),
        "drift": dv.drift(found),
        "pixel_map_rms": {s: map_rms(maps[s], c.maps) for s, c in against.items() if c.maps},
        # The reference is outside the cache key (component.py): the record says which
        # setting and which data this data was accepted against.
        "reference": params.reference,
        "reference_run_id": (
            reference_statistics.properties.get("run_id")
            if reference_statistics is not None
            else None
        ),
        "anomalous_splits": anomalies.properties["anomalous_splits"],
    }


def _comparisons(
    splits: list[str],
    stats: dict,
    maps: dict[str, content.Maps],
    reference_statistics: Artifact | None,
    log: logging.Logger,
) -> dict[str, Comparison]:
    """What each split is compared with: test with train, and train with the data behind
    the last blessed model when the launcher found its statistics."""
    against = {}
    if "test" in splits and TEST_AGAINST in splits:
        against["test"] = Comparison(f"vs {TEST_AGAINST}", stats[TEST_AGAINST], maps[TEST_AGAINST])
    if reference_statistics is not None and "train" in splits:
        run_id = reference_statistics.properties.get("run_id", "?")
        against["train"] = Comparison(
            f"vs the train data of the last blessed model, validated in run {run_id}",
            tfdv.load_stats_binary(
                posixpath.join(reference_statistics.split_uri("train"), dv.STATS_FILE)
            ),
            content.read_maps(reference_statistics.uri, "train"),
        )
        log.info(
            "validate: comparing train with the data behind the last blessed model "
            "(statistics of run %s)",
            run_id,
        )
    return against


def _content_findings(
    against: dict[str, Comparison],
    stats: dict,
    maps: dict[str, content.Maps],
    limits: content.MapLimits,
) -> dict[str, list[tuple[str, str, str]]]:
    """(feature, short description, description) of each content check beyond TFDV's that
    a compared split fails: its pixel maps, and classes the compared data has."""
    extra: dict[str, list] = {}
    for split, other in against.items():
        found = (
            [
                (F.IMAGE, short, text)
                for short, text in content.compare_maps(maps[split], other.maps, limits)
            ]
            if other.maps
            else []
        )
        if text := missing_classes(stats[split], other.stats):
            found.append((F.LABEL, "Class missing", text))
        extra[split] = found
    return extra


def _draw_maps(
    maps: dict[str, content.Maps], against: dict[str, Comparison], statistics: Artifact
) -> None:
    reference = against["train"].maps if "train" in against else None
    content.draw_maps(
        maps,
        posixpath.join(statistics.uri, content.MAPS_PNG),
        reference,
        "last blessed data (train)",
    )
    statistics.properties["pictures"] = [content.MAPS_PNG]


def map_rms(a: content.Maps, b: content.Maps) -> dict:
    return {
        "mean": round(content.rms(a.mean - b.mean), 5),
        "std": round(content.rms(a.std - b.std), 5),
    }
