"""validate executor: one Beam pass per split computes TFDV's statistics (with the
per-image content features appended) and the per-pixel moment maps; then every split is
checked against the curated raw schema, test against train, and train against the data
behind the last blessed model (`reference_statistics`, when the launcher found one).

On anomalies it raises DataAnomalyError; the component publishes the statistics and
anomalies anyway (published_on_rejection), so they can be opened with TFDV's tools,
and the run stops with exit code 3.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

import apache_beam as beam
import tensorflow_data_validation as tfdv

from components import data_validation as dv
from components import examples_io
from components import features as F
from components.validate import content
from pipeline import beam_jobs
from pipeline.schemas import load_schema

if TYPE_CHECKING:
    from components.validate.component import ValidateParams
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext

BATCH = 1000  # examples per Arrow RecordBatch
TEST_AGAINST = "train"  # test is compared with train (validation is carved from train)
# A class whose expected count in a split (its share of train times the split's size) is
# at least this is expected to appear there: P(absent by chance) = e^-10 < 1e-4.
MIN_EXPECTED_COUNT = 10.0


class ReadShard(beam.DoFn):
    """One shard's examples as Arrow RecordBatches of BATCH rows, decoded as tfx_bsl's
    TFExampleRecord decodes them (the same columns and types). tf.data reads the GZIP
    records in C++: Beam's TFRecord source checks and yields each record in Python, which
    was a third of this stage's time on 70,000 examples."""

    def setup(self):
        from tfx_bsl.coders import example_coder

        self._decoder = example_coder.ExamplesToRecordBatchDecoder()

    def process(self, path: str):
        import tensorflow as tf

        from components import records

        with records.shard_errors(path):
            for batch in tf.data.TFRecordDataset(path, F.COMPRESSION).batch(BATCH):
                yield self._decoder.DecodeBatch(batch.numpy().tolist())


def statistics_pass(examples: Artifact, splits: list[str], schema, out: Artifact,
                    beam_args) -> None:
    """TFDV statistics and pixel moments of every split, in one Beam pipeline."""
    with beam_jobs.pipeline(beam_args) as p:
        for split in splits:
            batches, moments = (
                p
                | f"Shards[{split}]" >> beam.Create(examples_io.shard_files(examples, split),
                                                    reshuffle=False)
                | f"Read[{split}]" >> beam.ParDo(ReadShard())
                | f"Content[{split}]" >> beam.ParDo(content.ContentFeatures()).with_outputs(
                    content.ContentFeatures.MOMENTS, main="batches"))
            dv.write_statistics(batches, split, schema, out)
            _ = (moments
                 | f"Moments[{split}]" >> beam.CombineGlobally(content.PixelMoments())
                 | f"WriteMoments[{split}]" >> beam.Map(content.write_maps, split, out.uri))


def label_counts(stats) -> dict[int, int]:
    """Examples per label, from TFDV's top values of the (categorical) label."""
    for feature in stats.datasets[0].features:
        if "/".join(feature.path.step) == F.LABEL:
            return {int(float(v.value)): int(v.frequency)
                    for v in feature.string_stats.top_values}
    return {}


def missing_classes(split_stats, reference_stats) -> str | None:
    """A description of the classes the reference has but this split lacks, counting
    only classes frequent enough in the reference to be expected here."""
    ref, here = label_counts(reference_stats), label_counts(split_stats)
    total_ref = sum(ref.values())
    n = split_stats.datasets[0].num_examples
    missing = sorted(c for c, k in ref.items()
                     if here.get(c, 0) == 0 and total_ref and n * k / total_ref >= MIN_EXPECTED_COUNT)
    if not missing:
        return None
    return (f"classes {missing} are absent from {n} examples although the compared data has "
            f"them (expected >= {MIN_EXPECTED_COUNT:g} examples each at its class shares)")


def run(params: ValidateParams, ctx: ExecutionContext, *, examples: Artifact,
        reference_statistics: Artifact | None, statistics: Artifact,
        anomalies: Artifact) -> dict:
    schema = load_schema(params.schema)
    splits = examples.splits or ["train", "validation", "test"]
    statistics_pass(examples, splits, schema, statistics, ctx.beam_args)
    stats = dv.load_statistics(splits, statistics)
    maps = {s: content.read_maps(statistics.uri, s) for s in splits}
    limits = content.MapLimits(params.max_pixel_mean_rms, params.max_pixel_std_rms)

    # What each split is compared with: (label, its statistics, its maps).
    against = {}
    if "test" in splits and TEST_AGAINST in splits:
        against["test"] = (f"vs {TEST_AGAINST}", stats[TEST_AGAINST], maps[TEST_AGAINST])
    reference = None
    if reference_statistics is not None and "train" in splits:
        ref_stats = tfdv.load_stats_binary(posixpath.join(
            reference_statistics.split_uri("train"), dv.STATS_FILE))
        reference = content.read_maps(reference_statistics.uri, "train")
        run_id = reference_statistics.properties.get("run_id", "?")
        against["train"] = (f"vs the train data of the last blessed model, validated in run "
                            f"{run_id}", ref_stats, reference)
        ctx.log.info("validate: comparing train with the data behind the last blessed model "
                     "(statistics of run %s)", run_id)

    extra: dict[str, list] = {}
    for split, (_, other_stats, other_maps) in against.items():
        found = [(F.IMAGE, short, text) for short, text in
                 content.compare_maps(maps[split], other_maps, limits)] if other_maps else []
        if text := missing_classes(stats[split], other_stats):
            found.append((F.LABEL, "Class missing", text))
        extra[split] = found
    content.draw_maps(maps, posixpath.join(statistics.uri, content.MAPS_PNG), reference,
                      "last blessed data (train)")
    statistics.properties["pictures"] = [content.MAPS_PNG]

    found = dv.check(stats, schema, anomalies,
                     previous={s: v[1] for s, v in against.items()}, extra=extra)
    compared = {s: v[0] for s, v in against.items()}
    anomalies.properties["compared"] = compared
    dv.raise_on_anomalies(found, anomalies, f"{examples.uri} (schema {params.schema})", compared)
    ctx.log.info("validate: no anomalies in %s", ", ".join(splits))
    return {"splits": dv.summarize(stats), "drift": dv.drift(found),
            "pixel_map_rms": {s: map_rms(maps[s], v[2]) for s, v in against.items() if v[2]},
            # The reference is outside the cache key (component.py): the record says which
            # setting and which data this data was accepted against.
            "reference": params.reference,
            "reference_run_id": (reference_statistics.properties.get("run_id")
                                 if reference_statistics is not None else None),
            "anomalous_splits": anomalies.properties["anomalous_splits"]}


def map_rms(a: content.Maps, b: content.Maps) -> dict:
    return {"mean": round(content.rms(a.mean - b.mean), 5),
            "std": round(content.rms(a.std - b.std), 5)}
