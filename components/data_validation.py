"""TFDV statistics and anomaly checks, shared by validate (raw schema) and transform
(normalized schema).

Layout, as TFX's StatisticsGen / ExampleValidator write it, so TFDV's own tools open it:
  statistics: Split-<split>/FeatureStats.pb  (+ statistics.html, TFDV's Facets view)
  anomalies:  Split-<split>/SchemaDiff.pb    (+ anomalies.pbtxt, readable)
"""

from __future__ import annotations

import posixpath

import numpy as np
import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow.io import gfile
from tensorflow_data_validation import types as tfdv_types
from tensorflow_data_validation.statistics.generators import (basic_stats_generator,
                                                              stats_generator,
                                                              top_k_uniques_stats_generator)
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from components import features as F
from pipeline.artifacts import Artifact
from pipeline.errors import DataAnomalyError

STATS_FILE = "FeatureStats.pb"
ANOMALIES_FILE = "SchemaDiff.pb"


NUM_TOP_VALUES = 20
NUM_RANK_HISTOGRAM_BUCKETS = 20


def stats_options(schema: schema_pb2.Schema,
                  without_histograms: tuple[str, ...] = ()) -> tfdv.StatsOptions:
    """TFDV's options; the schema makes the label categorical (top-k counts, for drift).

    `without_histograms`: numeric features whose histograms (and median) TFDV skips: its
    quantile sketch is ~80% of the cost of a 784-value pixel feature. Everything the
    schema checks (value counts, presence, min / max for the domain, NaN and infinity)
    is still computed from every value. TFDV 1.16 has the per-feature switch
    (PerFeatureStatsConfig) but does not pass it on from StatsOptions, so the default
    generators are built here with it, as stats_impl._get_default_generators builds them
    for Beam; NaN counts, which TFDV keeps only inside histograms, come from NanCounts."""
    if not without_histograms:
        return tfdv.StatsOptions(schema=schema, num_top_values=NUM_TOP_VALUES,
                                 num_rank_histogram_buckets=NUM_RANK_HISTOGRAM_BUCKETS)
    options = tfdv.StatsOptions(schema=schema, num_top_values=NUM_TOP_VALUES,
                                num_rank_histogram_buckets=NUM_RANK_HISTOGRAM_BUCKETS,
                                add_default_generators=False)
    config = tfdv_types.PerFeatureStatsConfig(
        [tfdv_types.FeaturePath([f]) for f in without_histograms],
        tfdv_types.PerFeatureStatsConfig.EXCLUDE)
    options.generators = [
        basic_stats_generator.BasicStatsGenerator(
            schema=schema, example_weight_map=options.example_weight_map,
            num_values_histogram_buckets=options.num_values_histogram_buckets,
            num_histogram_buckets=options.num_histogram_buckets,
            num_quantiles_histogram_buckets=options.num_quantiles_histogram_buckets,
            epsilon=options.epsilon, feature_config=config),
        top_k_uniques_stats_generator.TopKUniquesStatsGenerator(
            schema=schema, example_weight_map=options.example_weight_map,
            num_top_values=options.num_top_values,
            frequency_threshold=options.frequency_threshold,
            weighted_frequency_threshold=options.weighted_frequency_threshold,
            num_rank_histogram_buckets=options.num_rank_histogram_buckets),
        NanCounts(without_histograms),
    ]
    return options


class NanCounts(stats_generator.CombinerStatsGenerator):
    """NaN values per feature, recorded where TFDV records them (a histogram's num_nan),
    so validate_statistics applies the schema's disallow_nan as usual. Features without
    NaN get no entry."""

    def __init__(self, features: tuple[str, ...]):
        super().__init__("NanCounts")
        self.features = tuple(features)

    def create_accumulator(self) -> dict[str, int]:
        return dict.fromkeys(self.features, 0)

    def add_input(self, accumulator: dict[str, int], examples: pa.RecordBatch) -> dict[str, int]:
        for name in self.features:
            i = examples.schema.get_field_index(name)
            if i >= 0:
                values = examples.column(i).flatten().to_numpy(zero_copy_only=False)
                if values.dtype.kind == "f":
                    accumulator[name] += int(np.count_nonzero(np.isnan(values)))
        return accumulator

    def merge_accumulators(self, accumulators) -> dict[str, int]:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for name, count in accumulator.items():
                merged[name] += count
        return merged

    def extract_output(self, accumulator: dict[str, int]) -> statistics_pb2.DatasetFeatureStatistics:
        out = statistics_pb2.DatasetFeatureStatistics()
        for name, count in accumulator.items():
            if count:
                feature = out.features.add()
                feature.path.step.append(name)
                feature.num_stats.histograms.add(type=statistics_pb2.Histogram.STANDARD).num_nan = count
        return out


def write_statistics(record_batches, split: str, schema: schema_pb2.Schema, out: Artifact,
                     without_histograms: tuple[str, ...] = ()):
    """Attach TFDV's GenerateStatistics for one split to a PCollection of Arrow RecordBatches."""
    gfile.makedirs(out.split_uri(split))
    return (record_batches
            | f"Stats[{split}]" >> tfdv.GenerateStatistics(
                stats_options(schema, without_histograms))
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


def check(stats: dict[str, statistics_pb2.DatasetFeatureStatisticsList], schema: schema_pb2.Schema,
          out: Artifact, previous: dict | None = None,
          extra: dict[str, list[tuple[str, str, str]]] | None = None) -> dict[str, anomalies_pb2.Anomalies]:
    """Validate each split against the schema, and against `previous[split]` (statistics
    the schema's drift comparators compare it with) when given; add the `extra` findings
    of checks beyond TFDV's ((feature, short description, description) per split); save
    the anomalies per split."""
    result = {}
    for split, split_stats in stats.items():
        anomalies = tfdv.validate_statistics(split_stats, schema,
                                             previous_statistics=(previous or {}).get(split))
        for feature, short, description in (extra or {}).get(split, ()):
            add_anomaly(anomalies, feature, short, description)
        d = out.split_uri(split)
        gfile.makedirs(d)
        with gfile.GFile(posixpath.join(d, ANOMALIES_FILE), "wb") as f:
            f.write(anomalies.SerializeToString())
        tfdv.write_anomalies_text(anomalies, posixpath.join(d, "anomalies.pbtxt"))
        result[split] = anomalies
    out.properties["splits"] = list(stats)
    out.properties["anomalous_splits"] = [s for s, a in result.items() if has_anomalies(a)]
    return result


def add_anomaly(anomalies: anomalies_pb2.Anomalies, feature: str, short: str,
                description: str) -> None:
    """A finding of our own comparisons of a split with other data, recorded as TFDV
    records its own (a CUSTOM_VALIDATION reason on the feature), so TFDV's tools and
    `report` show it alike."""
    info = anomalies.anomaly_info[feature]
    if not info.path.step:
        info.path.step.append(feature)
    info.severity = anomalies_pb2.AnomalyInfo.ERROR
    info.short_description = short if not info.short_description else "Multiple errors"
    info.description = "; ".join(filter(None, [info.description, description]))
    reason = info.reason.add()
    reason.type = anomalies_pb2.AnomalyInfo.CUSTOM_VALIDATION
    reason.short_description, reason.description = short, description


def has_anomalies(anomalies: anomalies_pb2.Anomalies) -> bool:
    # drift_skew_info holds every drift measurement; a drift over its threshold also
    # appears in anomaly_info, so that is what decides.
    return bool(anomalies.anomaly_info) or anomalies.HasField("dataset_anomaly_info")


def report(anomalies: dict[str, anomalies_pb2.Anomalies], where: str,
           compared: dict[str, str] | None = None) -> str:
    """A readable multi-line report of every anomaly, naming split and feature, and for a
    split compared with other data (`compared[split]`, e.g. "vs train"), that data."""
    lines = []
    for split, a in anomalies.items():
        against = f" ({compared[split]})" if compared and split in compared else ""
        for feature, info in sorted(a.anomaly_info.items()):
            # The split's own checks first, then its comparisons with other data.
            for is_comparison in (False, True):
                reasons = "; ".join(f"{r.short_description}: {r.description}"
                                    for r in info.reason if _compares(r) == is_comparison)
                if reasons:
                    lines.append(f"  {split}/{feature}{against if is_comparison else ''}: {reasons}")
            if not info.reason:
                lines.append(f"  {split}/{feature}: {info.description}")
        if a.HasField("dataset_anomaly_info"):
            reasons = "; ".join(r.description for r in a.dataset_anomaly_info.reason)
            lines.append(f"  {split}/(dataset): {reasons}")
    return f"data anomalies in {where}:\n" + "\n".join(lines)


def _compares(reason: anomalies_pb2.AnomalyInfo.Reason) -> bool:
    """Whether a finding compares the split with other data: TFDV's drift comparators, and
    the content comparisons recorded by `add_anomaly`."""
    name = anomalies_pb2.AnomalyInfo.Type.Name(reason.type)
    return name.startswith("COMPARATOR_") or reason.type == anomalies_pb2.AnomalyInfo.CUSTOM_VALIDATION


def raise_on_anomalies(anomalies: dict[str, anomalies_pb2.Anomalies], out: Artifact,
                       where: str, compared: dict[str, str] | None = None) -> None:
    """Reject the input with DataAnomalyError if `check` found anomalies (the components
    publish their statistics and anomalies all the same: published_on_rejection)."""
    if out.properties.get("anomalous_splits"):
        raise DataAnomalyError(report(anomalies, where, compared))


def drift(anomalies: dict[str, anomalies_pb2.Anomalies]) -> dict:
    """Measured drift per split and feature, e.g. {"test": {"label": 0.004}}: the
    distance each drift comparator measured (L-infinity or Jensen-Shannon)."""
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
