"""What the HTML report reads of TFDV's outputs: the splits of a split-aware artifact, a
split's statistics and its anomalies, parsed with tensorflow_metadata's generated
modules (protobuf only: no TFDV, no TensorFlow import).
"""

from __future__ import annotations

import os
from typing import Any

from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

SPLIT_ORDER = ("train", "validation", "test")


def splits(uri: str) -> list[str]:
    """The Split-<name> folders of a split-aware artifact, train / validation / test first."""
    found = (
        [d[len("Split-") :] for d in os.listdir(uri) if d.startswith("Split-")]
        if uri and os.path.isdir(uri)
        else []
    )
    return sorted(found, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s))


def split_stats(stats_uri: str, split: str, layout: dict) -> dict[str, Any]:
    """Examples, pixel min / mean / max and examples per label of one split, from TFDV's
    statistics (so a rejected run has them too). The label is categorical in the schema,
    so its counts are its top values. `layout`: the image and label feature names."""
    out: dict[str, Any] = {"examples": None, "pixels": None, "labels": {}}
    path = os.path.join(stats_uri, f"Split-{split}", "FeatureStats.pb")
    if not os.path.exists(path):
        return out
    with open(path, "rb") as f:
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    for dataset in stats.datasets:
        out["examples"] = int(dataset.num_examples)
        for feature in dataset.features:
            step = list(feature.path.step)
            if step == [layout.get("image_feature")] and feature.HasField("num_stats"):
                n = feature.num_stats
                out["pixels"] = f"{n.min:.4g} / {n.mean:.4g} / {n.max:.4g}"
            elif step == [layout.get("label_feature")]:
                out["labels"] = {
                    int(v.value): int(v.frequency) for v in feature.string_stats.top_values
                }
    return out


def anomalies(anomalies_uri: str, split: str) -> tuple[list[str], list[str]]:
    """(anomalies, drift measurements) of one split, as readable lines."""
    path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
    if not os.path.exists(path):
        return [], []
    with open(path, "rb") as f:
        a = anomalies_pb2.Anomalies.FromString(f.read())
    problems = [
        f"{feature}: "
        + (
            "; ".join(f"{r.short_description}: {r.description}" for r in info.reason)
            or info.description
        )
        for feature, info in sorted(a.anomaly_info.items())
    ]
    if a.HasField("dataset_anomaly_info"):
        problems.append(
            "(dataset): " + "; ".join(r.description for r in a.dataset_anomaly_info.reason)
        )
    kind = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name
    drift = [
        f"{'/'.join(d.path.step)}: {kind(m.type)} {m.value:.4f} (threshold {m.threshold:g})"
        for d in a.drift_skew_info
        for m in d.drift_measurements
    ]
    return problems, drift
