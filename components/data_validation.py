"""TFDV statistics and anomaly checks, shared by validate (raw schema) and transform
(normalized schema).

Layout, as TFX's StatisticsGen / ExampleValidator write it, so TFDV's own tools open it:
  statistics: Split-<split>/FeatureStats.pb  (+ statistics.html, TFDV's Facets view)
  anomalies:  Split-<split>/SchemaDiff.pb    (+ anomalies.pbtxt, readable)
"""

from __future__ import annotations

import posixpath

import tensorflow_data_validation as tfdv
from tensorflow.io import gfile
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx_bsl.public.tfxio import TFExampleRecord

from components import features as F
from pipeline import beam_jobs
from pipeline.artifacts import Artifact
from pipeline.errors import DataAnomalyError

STATS_FILE = "FeatureStats.pb"
ANOMALIES_FILE = "SchemaDiff.pb"
# Label drift is checked on test against train (validation is carved from train by
# hash, and on capped quick runs it can be too small for a fair comparison).
DRIFT_SPLITS = {"test": "train"}


def stats_options(schema: schema_pb2.Schema) -> tfdv.StatsOptions:
    # The schema makes the label categorical (top-k counts, needed for drift).
    return tfdv.StatsOptions(schema=schema, num_top_values=20, num_rank_histogram_buckets=20)


def write_statistics(record_batches, split: str, schema: schema_pb2.Schema, out: Artifact):
    """Attach TFDV's GenerateStatistics for one split to a PCollection of Arrow RecordBatches."""
    gfile.makedirs(out.split_uri(split))
    return (record_batches
            | f"Stats[{split}]" >> tfdv.GenerateStatistics(stats_options(schema))
            | f"WriteStats[{split}]" >> tfdv.WriteStatisticsToBinaryFile(
                posixpath.join(out.split_uri(split), STATS_FILE)))


def load_statistics(splits: list[str], out: Artifact) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """Read back what write_statistics wrote, and save TFDV's HTML view beside it."""
    stats = {}
    for split in splits:
        stats[split] = tfdv.load_stats_binary(posixpath.join(out.split_uri(split), STATS_FILE))
        with gfile.GFile(posixpath.join(out.split_uri(split), "statistics.html"), "w") as f:
            f.write(tfdv.get_statistics_html(stats[split]))
    out.properties["splits"] = list(splits)
    return stats


def compute_statistics(examples: Artifact, splits: list[str], schema: schema_pb2.Schema,
                       out: Artifact, beam_args) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """One Beam pipeline computing every split's statistics of an Examples artifact."""
    with beam_jobs.pipeline(beam_args) as p:
        for split in splits:
            pattern = posixpath.join(examples.split_uri(split), F.SHARD_PATTERN)
            batches = p | f"Read[{split}]" >> TFExampleRecord(
                file_pattern=pattern, telemetry_descriptors=["ae_pipeline"]).BeamSource(1000)
            write_statistics(batches, split, schema, out)
    return load_statistics(splits, out)


def check(stats: dict[str, statistics_pb2.DatasetFeatureStatisticsList], schema: schema_pb2.Schema,
          out: Artifact, drift: bool) -> dict[str, anomalies_pb2.Anomalies]:
    """Validate each split against the schema (and label drift); save anomalies per split."""
    result = {}
    for split, split_stats in stats.items():
        previous = stats.get(DRIFT_SPLITS.get(split, "")) if drift else None
        anomalies = tfdv.validate_statistics(split_stats, schema, previous_statistics=previous)
        d = out.split_uri(split)
        gfile.makedirs(d)
        with gfile.GFile(posixpath.join(d, ANOMALIES_FILE), "wb") as f:
            f.write(anomalies.SerializeToString())
        tfdv.write_anomalies_text(anomalies, posixpath.join(d, "anomalies.pbtxt"))
        result[split] = anomalies
    out.properties["splits"] = list(stats)
    out.properties["anomalous_splits"] = [s for s, a in result.items() if has_anomalies(a)]
    return result


def has_anomalies(anomalies: anomalies_pb2.Anomalies) -> bool:
    # drift_skew_info holds every drift measurement; a drift over its threshold also
    # appears in anomaly_info, so that is what decides.
    return bool(anomalies.anomaly_info) or anomalies.HasField("dataset_anomaly_info")


def report(anomalies: dict[str, anomalies_pb2.Anomalies], where: str) -> str:
    """A readable multi-line report of every anomaly, naming split and feature."""
    lines = []
    for split, a in anomalies.items():
        for feature, info in sorted(a.anomaly_info.items()):
            reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason)
            lines.append(f"  {split}/{feature}: {reasons or info.description}")
        if a.HasField("dataset_anomaly_info"):
            reasons = "; ".join(r.description for r in a.dataset_anomaly_info.reason)
            lines.append(f"  {split}/(dataset): {reasons}")
    return f"data anomalies in {where}:\n" + "\n".join(lines)


def raise_on_anomalies(anomalies: dict[str, anomalies_pb2.Anomalies], out: Artifact,
                       where: str) -> None:
    """Reject the input with DataAnomalyError if `check` found anomalies (the components
    publish their statistics and anomalies all the same: published_on_rejection)."""
    if out.properties.get("anomalous_splits"):
        raise DataAnomalyError(report(anomalies, where))


def drift(anomalies: dict[str, anomalies_pb2.Anomalies]) -> dict:
    """Measured drift per split and feature, e.g. {"test": {"label": 0.004}}."""
    return {split: {"/".join(s.path.step): round(m.value, 5)
                    for s in a.drift_skew_info for m in s.drift_measurements}
            for split, a in anomalies.items() if a.drift_skew_info}


def summarize(stats: dict[str, statistics_pb2.DatasetFeatureStatisticsList]) -> dict:
    """A few numbers for summary.json: examples and pixel range per split."""
    out = {}
    for split, s in stats.items():
        ds = s.datasets[0]
        entry = {"num_examples": int(ds.num_examples)}
        for feat in ds.features:
            name = "/".join(feat.path.step)
            if name == F.IMAGE and feat.HasField("num_stats"):
                entry["pixel_min"] = float(feat.num_stats.min)
                entry["pixel_max"] = float(feat.num_stats.max)
                entry["pixel_mean"] = round(float(feat.num_stats.mean), 5)
        out[split] = entry
    return out
