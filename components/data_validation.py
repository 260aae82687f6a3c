"""TFDV statistics and anomaly checks, shared by validate (raw schema) and transform
(normalized schema).

Layout, as TFX's StatisticsGen / ExampleValidator write it, so TFDV's own tools open it:
  statistics: Split-<split>/FeatureStats.pb  (+ statistics.html, TFDV's Facets view)
  anomalies:  Split-<split>/SchemaDiff.pb    (+ anomalies.pbtxt, readable)
"""

from __future__ import annotations

import posixpath

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow.io import gfile
from tensorflow_data_validation import types as tfdv_types
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_data_validation.statistics.generators import (
    basic_stats_generator,
    stats_generator,
    top_k_uniques_stats_generator,
)
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2
from tfx_bsl import sketches

from components import features as F
from pipeline.artifacts import Artifact
from pipeline.errors import DataAnomalyError

STATS_FILE = "FeatureStats.pb"
ANOMALIES_FILE = "SchemaDiff.pb"


NUM_TOP_VALUES = 20
NUM_RANK_HISTOGRAM_BUCKETS = 20


def stats_options(
    schema: schema_pb2.Schema, without_histograms: tuple[str, ...] = ()
) -> tfdv.StatsOptions:
    """TFDV's options; the schema makes the label categorical (top-k counts, for drift).

    TFDV's default generators, built here as stats_impl._get_default_generators builds
    them for Beam, with two changes of cost, not of meaning:
    - BasicStats's quantiles come from ExactIntegerQuantiles: exact counts per value for
      integer features (raw pixels, value counts), tfx_bsl's sketch for the rest. TFDV
      builds the histograms and median from them as from its sketch.
    - `without_histograms`: numeric features whose histograms (and median) TFDV skips: its
      quantile sketch is ~80% of the cost of a 784-value float pixel feature. Everything
      the schema checks (value counts, presence, min / max for the domain, NaN and
      infinity) is still computed from every value. TFDV 1.16 has the per-feature switch
      (PerFeatureStatsConfig) but does not pass it on from StatsOptions; NaN counts, which
      TFDV keeps only inside histograms, come from NanCounts."""
    options = tfdv.StatsOptions(
        schema=schema,
        num_top_values=NUM_TOP_VALUES,
        num_rank_histogram_buckets=NUM_RANK_HISTOGRAM_BUCKETS,
        add_default_generators=False,
    )
    config = (
        tfdv_types.PerFeatureStatsConfig(
            [tfdv_types.FeaturePath([f]) for f in without_histograms],
            tfdv_types.PerFeatureStatsConfig.EXCLUDE,
        )
        if without_histograms
        else None
    )
    options.generators = [
        ExactIntegerBasicStats(
            schema=schema,
            example_weight_map=options.example_weight_map,
            num_values_histogram_buckets=options.num_values_histogram_buckets,
            num_histogram_buckets=options.num_histogram_buckets,
            num_quantiles_histogram_buckets=options.num_quantiles_histogram_buckets,
            epsilon=options.epsilon,
            feature_config=config,
        ),
        top_k_uniques_stats_generator.TopKUniquesStatsGenerator(
            schema=schema,
            example_weight_map=options.example_weight_map,
            num_top_values=options.num_top_values,
            frequency_threshold=options.frequency_threshold,
            weighted_frequency_threshold=options.weighted_frequency_threshold,
            num_rank_histogram_buckets=options.num_rank_histogram_buckets,
        ),
    ] + ([NanCounts(without_histograms)] if without_histograms else [])
    return options


class ExactIntegerQuantiles:
    """What TFDV's BasicStatsGenerator asks of tfx_bsl's QuantilesSketch (AddValues,
    Merge, Compact, GetQuantilesAndCumulativeWeights), exact for integer values: a count
    per value in [low, low + MAX_RANGE). Raw pixels (784 integers in [0, 255] per image)
    were 75-80% of validate's TFDV time in the sketch; a bincount is a fraction of that,
    and its quantiles are exact where the sketch's are within eps. Anything else (floats,
    non-integer weights, a value range wider than MAX_RANGE) goes to the real sketch, the
    counts so far with it."""

    MAX_RANGE = 1 << 16

    def __init__(self, eps: float, max_num_elements: int):
        self._sketch_args = (eps, max_num_elements)
        self._low = 0
        self._counts = np.zeros(0, np.int64)  # _counts[i]: occurrences of _low + i
        self._sketch = None

    def AddValues(self, values: pa.Array, weights: pa.Array | None = None) -> None:  # noqa: N802
        if self._sketch is None and _integers(values) and (weights is None or _integers(weights)):
            v = values.to_numpy()
            if v.size == 0:
                return
            w = None if weights is None else weights.to_numpy()
            if self._widen(int(v.min()), int(v.max())):
                self._counts += np.bincount(
                    v - self._low, weights=w, minlength=len(self._counts)
                ).astype(np.int64)
                return
        self._real().AddValues(*([values] if weights is None else [values, weights]))

    def Merge(self, other: ExactIntegerQuantiles) -> None:  # noqa: N802
        if self._sketch is None and other._sketch is None:
            if not len(other._counts):
                return
            if self._widen(other._low, other._low + len(other._counts) - 1):
                start = other._low - self._low
                self._counts[start : start + len(other._counts)] += other._counts
                return
        self._real()
        other._fold_into(self._sketch)
        if other._sketch is not None:
            self._sketch.Merge(other._sketch)

    def Compact(self) -> None:  # noqa: N802
        if self._sketch is not None:
            self._sketch.Compact()

    def GetQuantilesAndCumulativeWeights(self, num_buckets: int):  # noqa: N802
        total = int(self._counts.sum())
        if self._sketch is not None or total == 0:
            return self._real().GetQuantilesAndCumulativeWeights(num_buckets)
        # The sketch's definition, exactly: boundary i is the value of rank
        # floor(total * i / num_buckets) + 1 (1-based, capped at total), with the number
        # of values <= it.
        cumulative = np.cumsum(self._counts)
        ranks = np.minimum(total * np.arange(num_buckets + 1) // num_buckets + 1, total)
        index = np.searchsorted(cumulative, ranks)
        size = num_buckets + 1
        return (
            pa.FixedSizeListArray.from_arrays(
                pa.array((self._low + index).astype(np.float64)), size
            ),
            pa.FixedSizeListArray.from_arrays(pa.array(cumulative[index].astype(np.float64)), size),
        )

    def _widen(self, low: int, high: int) -> bool:
        """Make the counts cover [low, high]; False if that is wider than MAX_RANGE."""
        if not len(self._counts):
            if high - low >= self.MAX_RANGE:
                return False
            self._low, self._counts = low, np.zeros(high - low + 1, np.int64)
            return True
        new_low = min(low, self._low)
        new_high = max(high, self._low + len(self._counts) - 1)
        if new_high - new_low >= self.MAX_RANGE:
            return False
        if new_low < self._low or new_high > self._low + len(self._counts) - 1:
            counts = np.zeros(new_high - new_low + 1, np.int64)
            counts[self._low - new_low : self._low - new_low + len(self._counts)] = self._counts
            self._low, self._counts = new_low, counts
        return True

    def _real(self):
        """The tfx_bsl sketch, created on first need with the counts so far in it."""
        if self._sketch is None:
            eps, max_num_elements = self._sketch_args
            self._sketch = sketches.QuantilesSketch(
                eps=eps, max_num_elements=max_num_elements, num_streams=1
            )
            self._fold_into(self._sketch)
        return self._sketch

    def _fold_into(self, sketch) -> None:
        present = np.flatnonzero(self._counts)
        if len(present):
            sketch.AddValues(
                pa.array((self._low + present).astype(np.float64)),
                pa.array(self._counts[present].astype(np.float64)),
            )
        self._counts = np.zeros(0, np.int64)


def _integers(array: pa.Array) -> bool:
    # Signed only: what tf.Example's int64_list decodes to; np.bincount refuses uint64.
    return pa.types.is_signed_integer(array.type) and array.null_count == 0


class ExactIntegerBasicStats(basic_stats_generator.BasicStatsGenerator):
    """TFDV's BasicStatsGenerator with ExactIntegerQuantiles in place of its sketch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        eps = kwargs.get("epsilon", 0.01)
        self._make_quantiles_sketch_fn = lambda: ExactIntegerQuantiles(eps, 1 << 32)


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

    def extract_output(
        self, accumulator: dict[str, int]
    ) -> statistics_pb2.DatasetFeatureStatistics:
        out = statistics_pb2.DatasetFeatureStatistics()
        for name, count in accumulator.items():
            if count:
                feature = out.features.add()
                feature.path.step.append(name)
                histogram = feature.num_stats.histograms.add(type=statistics_pb2.Histogram.STANDARD)
                histogram.num_nan = count
        return out


def write_statistics(
    keyed_batches,
    splits: list[str],
    schema: schema_pb2.Schema,
    out: Artifact,
    without_histograms: tuple[str, ...] = (),
):
    """TFDV's statistics of every split from one PCollection of (split, RecordBatch), each
    written to Split-<split>/FeatureStats.pb as tfdv.GenerateStatistics over that split
    alone writes it (tests/test_validate.py compares them).

    One TFDV transform for all splits, the split as TFDV's slice key (the transform that
    tfdv.GenerateStatistics applies after slicing), not one per split: TFDV's graph and
    Beam's bundles are most of a small run's statistics time. No unsliced dataset is
    computed; a split without examples gets the placeholder TFDV writes for empty input."""
    for split in splits:
        gfile.makedirs(out.split_uri(split))
    return (
        keyed_batches
        | "Stats"
        >> stats_impl.GenerateSlicedStatisticsImpl(
            stats_options(schema, without_histograms), is_slicing_enabled=True
        )
        | "WriteStats" >> beam.Map(_write_per_split, splits, out)
    )


def _write_per_split(
    merged: statistics_pb2.DatasetFeatureStatisticsList, splits: list[str], out: Artifact
) -> None:
    by_split = {d.name: d for d in merged.datasets}
    for split in splits:
        dataset = statistics_pb2.DatasetFeatureStatistics()
        if split in by_split:
            dataset.CopyFrom(by_split[split])
            dataset.ClearField("name")  # unnamed, as an unsliced run leaves it
        stats = statistics_pb2.DatasetFeatureStatisticsList(datasets=[dataset])
        with gfile.GFile(posixpath.join(out.split_uri(split), STATS_FILE), "wb") as f:
            f.write(stats.SerializeToString())


def load_statistics(
    splits: list[str], out: Artifact
) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """Read back what write_statistics wrote, and save TFDV's HTML view beside it."""
    stats = {}
    for split in splits:
        stats[split] = tfdv.load_stats_binary(posixpath.join(out.split_uri(split), STATS_FILE))
        with gfile.GFile(posixpath.join(out.split_uri(split), "statistics.html"), "w") as f:
            f.write(tfdv.get_statistics_html(stats[split]))
    out.properties["splits"] = list(splits)
    return stats


def check(
    stats: dict[str, statistics_pb2.DatasetFeatureStatisticsList],
    schema: schema_pb2.Schema,
    out: Artifact,
    previous: dict | None = None,
    extra: dict[str, list[tuple[str, str, str]]] | None = None,
) -> dict[str, anomalies_pb2.Anomalies]:
    """Validate each split against the schema, and against `previous[split]` (statistics
    the schema's drift comparators compare it with) when given; add the `extra` findings
    of checks beyond TFDV's ((feature, short description, description) per split); save
    the anomalies per split."""
    result = {}
    for split, split_stats in stats.items():
        anomalies = tfdv.validate_statistics(
            split_stats, schema, previous_statistics=(previous or {}).get(split)
        )
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


def add_anomaly(
    anomalies: anomalies_pb2.Anomalies, feature: str, short: str, description: str
) -> None:
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


def report(
    anomalies: dict[str, anomalies_pb2.Anomalies],
    where: str,
    compared: dict[str, str] | None = None,
) -> str:
    """A readable multi-line report of every anomaly, naming split and feature, and for a
    split compared with other data (`compared[split]`, e.g. "vs train"), that data."""
    lines = []
    for split, a in anomalies.items():
        against = f" ({compared[split]})" if compared and split in compared else ""
        for feature, info in sorted(a.anomaly_info.items()):
            # The split's own checks first, then its comparisons with other data.
            for is_comparison in (False, True):
                reasons = "; ".join(
                    f"{r.short_description}: {r.description}"
                    for r in info.reason
                    if _compares(r) == is_comparison
                )
                if reasons:
                    where = f"{split}/{feature}{against if is_comparison else ''}"
                    lines.append(f"  {where}: {reasons}")
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
    return (
        name.startswith("COMPARATOR_") or reason.type == anomalies_pb2.AnomalyInfo.CUSTOM_VALIDATION
    )


def raise_on_anomalies(
    anomalies: dict[str, anomalies_pb2.Anomalies],
    out: Artifact,
    where: str,
    compared: dict[str, str] | None = None,
) -> None:
    """Reject the input with DataAnomalyError if `check` found anomalies (the components
    publish their statistics and anomalies all the same: published_on_rejection)."""
    if out.properties.get("anomalous_splits"):
        raise DataAnomalyError(report(anomalies, where, compared))


def drift(anomalies: dict[str, anomalies_pb2.Anomalies]) -> dict:
    """Measured drift per split and feature, e.g. {"test": {"label": 0.004}}: the
    distance each drift comparator measured (L-infinity or Jensen-Shannon)."""
    return {
        split: {
            "/".join(s.path.step): round(m.value, 5)
            for s in a.drift_skew_info
            for m in s.drift_measurements
        }
        for split, a in anomalies.items()
        if a.drift_skew_info
    }


def summarize(stats: dict[str, statistics_pb2.DatasetFeatureStatisticsList]) -> dict:
    """A few numbers for summary.json: examples and pixel range per split."""
    out = {}
    for split, s in stats.items():
        ds = s.datasets[0]
        entry: dict[str, int | float] = {"num_examples": int(ds.num_examples)}
        for feat in ds.features:
            name = "/".join(feat.path.step)
            if name == F.IMAGE and feat.HasField("num_stats"):
                entry["pixel_min"] = float(feat.num_stats.min)
                entry["pixel_max"] = float(feat.num_stats.max)
                entry["pixel_mean"] = round(float(feat.num_stats.mean), 5)
        out[split] = entry
    return out
