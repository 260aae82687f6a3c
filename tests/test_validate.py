"""validate: TFDV statistics and the curated raw schema catch bad data, naming split and feature."""

import os
import re

import numpy as np
import pyarrow as pa
import pytest
import tensorflow_data_validation as tfdv

from pipeline.errors import DataAnomalyError
from tests.helpers import (
    output_artifacts,
    params,
    run_executor,
    synthetic_images,
    write_examples_artifact,
)


def _raw(tmp_path, mutate=None, float_images=False):
    splits = {}
    for split, n, seed in (("train", 120, 1), ("validation", 30, 2), ("test", 60, 3)):
        images, labels = synthetic_images(n, seed)
        images = images.astype(np.float32 if float_images else np.int64)
        if mutate:
            images, labels = mutate(split, images, labels)
        splits[split] = (images, labels)
    return write_examples_artifact(str(tmp_path / "raw"), splits, normalized=float_images)


def _validate(tmp_path, examples, outs=None):
    outs = outs if outs is not None else output_artifacts("validate", tmp_path)
    return run_executor("validate", params("validate"), {"examples": examples}, outs), outs


def test_clean_data_passes_and_writes_tfdv_artifacts(tmp_path):
    from components import data_validation as dv
    from pipeline.schemas import load_schema

    examples = _raw(tmp_path)
    metrics, outs = _validate(tmp_path, examples)
    assert metrics["anomalous_splits"] == []
    # What transform reads (its raw_anomalies input): no anomalous split, every split checked.
    assert outs["anomalies"].properties["anomalous_splits"] == []
    assert outs["anomalies"].properties["splits"] == ["train", "validation", "test"]
    assert metrics["splits"]["train"]["num_examples"] == 120
    test_images, _ = synthetic_images(60, 3)
    assert metrics["splits"]["test"]["pixel_max"] == float(test_images.max()) <= 255
    assert metrics["splits"]["test"]["pixel_min"] == float(test_images.min())
    stats = tfdv.load_stats_binary(
        os.path.join(outs["statistics"].uri, "Split-test", "FeatureStats.pb")
    )
    names = {"/".join(f.path.step) for f in stats.datasets[0].features}
    # The per-image content features sit beside the example features, computed by TFDV.
    assert names == {
        "id",
        "label",
        "image",
        "image_mean",
        "image_std",
        "ink_fraction",
        "saturated_fraction",
    }
    maps = np.load(os.path.join(outs["statistics"].uri, "Split-test", "pixel_moments.npz"))
    test_x = test_images.reshape(60, -1) / 255.0
    np.testing.assert_allclose(maps["mean"], test_x.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(maps["std"], test_x.std(axis=0), atol=1e-9)
    assert int(maps["count"]) == 60
    assert os.path.getsize(os.path.join(outs["statistics"].uri, "pixel_maps.png")) > 1000
    assert set(metrics["pixel_map_rms"]) == {"test"}  # test vs train; no reference here
    assert (
        os.path.getsize(os.path.join(outs["statistics"].uri, "Split-train", "statistics.html"))
        > 1000
    )
    assert os.path.exists(os.path.join(outs["anomalies"].uri, "Split-train", "SchemaDiff.pb"))
    assert set(metrics["drift"]["test"]) == {"label", "image"}  # the schema's comparators
    # The example features' statistics (read by validate's shard reader, quantiles from
    # exact counts) are what TFDV's own reader and default generators compute, value for
    # value; the content features come on top.
    tfdvs = tfdv.generate_statistics_from_tfrecord(
        os.path.join(examples.split_uri("test"), "data-*.tfrecord.gz"),
        stats_options=tfdv.StatsOptions(
            schema=load_schema(params("validate").schema),
            num_top_values=dv.NUM_TOP_VALUES,
            num_rank_histogram_buckets=dv.NUM_RANK_HISTOGRAM_BUCKETS,
        ),
    )
    by_name = {f.path.step[0]: f for f in stats.datasets[0].features}
    # One unnamed dataset, as TFDV writes a split computed alone (validate computes every
    # split in one pass, the split as TFDV's slice key).
    assert [d.name for d in stats.datasets] == [d.name for d in tfdvs.datasets] == [""]
    assert stats.datasets[0].num_examples == tfdvs.datasets[0].num_examples == 60
    for feature in tfdvs.datasets[0].features:
        assert by_name[feature.path.step[0]] == feature, feature.path.step[0]
    assert len(by_name["image"].num_stats.histograms) == 2


def test_out_of_range_pixels_stop_the_run(tmp_path):
    def mutate(split, images, labels):
        if split == "validation":
            images[3, 5, 5] = 300
        return images, labels

    outs = output_artifacts("validate", tmp_path)
    with pytest.raises(DataAnomalyError) as e:
        _validate(tmp_path, _raw(tmp_path, mutate), outs)
    assert "validation/image" in str(e.value)
    assert "train/" not in str(e.value)
    # The published anomalies artifact names the split, so transform refuses these examples.
    assert outs["anomalies"].properties["anomalous_splits"] == ["validation"]
    anomalies = tfdv.load_anomalies_text(
        os.path.join(tmp_path, "anomalies", "Split-validation", "anomalies.pbtxt")
    )
    assert "image" in anomalies.anomaly_info


def test_nan_pixels_reaching_validation_are_anomalies(tmp_path):
    def mutate(split, images, labels):
        if split == "train":
            images[0, 0, 0] = np.nan
        return images, labels

    with pytest.raises(DataAnomalyError, match=r"image"):
        _validate(tmp_path, _raw(tmp_path, mutate, float_images=True))


def test_bad_labels_are_anomalies(tmp_path):
    def mutate(split, images, labels):
        if split == "test":
            labels[4] = 11
        return images, labels

    with pytest.raises(DataAnomalyError, match=r"test/label"):
        _validate(tmp_path, _raw(tmp_path, mutate))


def test_label_drift_between_train_and_test_is_caught(tmp_path):
    def mutate(split, images, labels):
        if split == "test":
            labels[:] = labels % 3  # only classes 0..2 in test
        return images, labels

    with pytest.raises(DataAnomalyError, match=r"test/label \(vs train\): High Linfty distance"):
        _validate(tmp_path, _raw(tmp_path, mutate))


def test_wrong_image_size_is_an_anomaly(tmp_path):
    def mutate(split, images, labels):
        if split == "train":
            images = images[:, :27, :]  # 756 values per example
        return images, labels

    with pytest.raises(DataAnomalyError, match=r"train/image"):
        _validate(tmp_path, _raw(tmp_path, mutate))


# -- content: well-formed but wrong images ----------------------------------------------


def _content_anomaly(tmp_path, mutate, sizes=None):
    """The DataAnomalyError message for data whose test split `mutate` changes."""
    splits = {}
    for split, n, seed in sizes or (("train", 120, 1), ("validation", 30, 2), ("test", 60, 3)):
        images, labels = synthetic_images(n, seed)
        images, labels = images.astype(np.int64), labels
        if split == "test":
            images, labels = mutate(images, labels)
        splits[split] = (images, labels)
    examples = write_examples_artifact(str(tmp_path / "raw"), splits, normalized=False)
    outs = output_artifacts("validate", tmp_path)
    with pytest.raises(DataAnomalyError) as e:
        _validate(tmp_path, examples, outs)
    # Published for inspection all the same, naming only the bad split.
    assert outs["anomalies"].properties["anomalous_splits"] == ["test"]
    assert os.path.exists(os.path.join(outs["statistics"].uri, "pixel_maps.png"))
    return str(e.value)


def test_blank_images_are_anomalies(tmp_path):
    message = _content_anomaly(tmp_path, lambda x, y: (np.zeros_like(x), y))
    assert re.search(r"test/image_mean.*Unexpectedly low values?: 0<0.005", message)
    assert re.search(r"test/image_std.*Unexpectedly low values?: 0<0.03", message)


def test_constant_images_are_anomalies(tmp_path):
    message = _content_anomaly(tmp_path, lambda x, y: (np.full_like(x, 128), y))
    assert re.search(r"test/image_std.*Unexpectedly low values?: 0<0.03", message)


def test_inverted_images_are_anomalies(tmp_path):
    message = _content_anomaly(tmp_path, lambda x, y: (255 - x, y))
    assert re.search(r"test/image_mean.*Unexpectedly high values?: 0.88\d*>0.85", message)
    assert re.search(
        r"test/image \(vs train\):.*Jensen-Shannon divergence .* above the "
        r"threshold 0.02.*Pixel mean map shift: the per-pixel mean map differs by "
        r"RMS 0.6\d+ \(expected <= 0.1\d+",
        message,
    )


def test_shifted_intensities_are_anomalies(tmp_path):
    message = _content_anomaly(tmp_path, lambda x, y: (np.clip(x + 60, 0, 255), y))
    assert re.search(r"test/ink_fraction.*Unexpectedly high values?: 1>0.98", message)
    assert "Pixel mean map shift" in message


def test_images_moved_within_the_frame_fail_only_the_map_comparison(tmp_path):
    # Per-image statistics unchanged (same pixels, mirrored), so only the maps see it.
    message = _content_anomaly(tmp_path, lambda x, y: (x[:, :, ::-1].copy(), y))
    lines = message.splitlines()[1:]
    assert len(lines) == 1 and lines[0].startswith("  test/image (vs train): "), message
    assert "largest at pixel (row" in message


def test_a_class_missing_from_test_is_an_anomaly(tmp_path):
    def drop_class_3(x, y):
        keep = y != 3
        return x[keep], y[keep]

    message = _content_anomaly(
        tmp_path, drop_class_3, (("train", 400, 1), ("validation", 30, 2), ("test", 200, 3))
    )
    assert re.search(
        r"test/label \(vs train\): .*Class missing: classes \[3\] are absent from "
        r"182 examples",
        message,
    )


def test_a_class_absent_by_chance_from_a_small_split_is_not_an_anomaly(tmp_path):
    # Class 6 is 5.8% of the 120 train images: 53 test images are expected to hold about 3
    # of it, below the 10 that make its absence an anomaly (the 200-image case above).
    def drop_class_6(split, images, labels):
        if split == "test":
            keep = labels != 6
            return images[keep], labels[keep]
        return images, labels

    metrics, _ = _validate(tmp_path, _raw(tmp_path, drop_class_6))
    assert metrics["splits"]["test"]["num_examples"] == 53
    assert metrics["anomalous_splits"] == []


def test_map_comparison_allows_for_sampling_and_catches_real_shifts():
    from components.validate import content

    rng = np.random.default_rng(0)
    limits = content.MapLimits(0.03, 0.03)

    def maps(x):
        return content.Maps(len(x), x.mean(axis=0), x.std(axis=0))

    a = rng.uniform(0, 1, (50, 784))
    b = rng.uniform(0, 1, (40, 784))  # same distribution, small samples: RMS well above 0.03
    assert content.rms(maps(a).mean - maps(b).mean) > 0.03
    assert content.compare_maps(maps(a), maps(b), limits) == []
    found = content.compare_maps(maps(a), maps(np.clip(b + 0.3, 0, 1)), limits)
    assert [short for short, _ in found][0] == "Pixel mean map shift"


# -- exact integer quantiles: TFDV's statistics, computed cheaper --------------------------


def _sketch_pair(eps=0.01):
    from tfx_bsl import sketches

    from components.data_validation import ExactIntegerQuantiles

    return (
        ExactIntegerQuantiles(eps, 1 << 32),
        sketches.QuantilesSketch(eps=eps, max_num_elements=1 << 32, num_streams=1),
    )


def _quantiles(sketch, buckets):
    q, w = sketch.GetQuantilesAndCumulativeWeights(buckets)
    return q.flatten().to_numpy(), w.flatten().to_numpy()


@pytest.mark.parametrize("buckets", [2, 4, 10, 40])
def test_exact_integer_quantiles_equal_the_sketch_where_it_is_exact(buckets):
    import pyarrow as pa

    rng = np.random.default_rng(0)
    exact, sketch = _sketch_pair()
    # Pixel-like batches (a heavy mass at 0 and 255), merged from two halves as Beam merges
    # accumulators; small enough that tfx_bsl's sketch keeps every value, i.e. is exact.
    other, _ = _sketch_pair()
    for i in range(6):
        values = np.where(rng.random(300) < 0.4, 0, rng.integers(0, 256, 300)).astype(np.int64)
        (exact if i % 2 else other).AddValues(pa.array(values))
        sketch.AddValues(pa.array(values))
    exact.Merge(other)
    # Weighted input, as TFDV feeds the value counts per example.
    exact.AddValues(pa.array(np.array([784, 783], np.int64)), pa.array(np.array([5, 1], np.int64)))
    sketch.AddValues(pa.array(np.array([784, 783], np.int64)), pa.array(np.array([5, 1], np.int64)))
    got, want = _quantiles(exact, buckets), _quantiles(sketch, buckets)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_exact_integer_quantiles_hand_the_rest_to_the_sketch():
    import pyarrow as pa

    exact, sketch = _sketch_pair()
    ints = np.arange(10, dtype=np.int64)
    exact.AddValues(pa.array(ints))
    sketch.AddValues(pa.array(ints))
    # A float value, then a range wider than MAX_RANGE: both go to a real sketch, with the
    # counts gathered so far.
    for values in (np.array([0.5]), np.array([-(1 << 20), 1 << 40], np.int64)):
        exact.AddValues(pa.array(values))
        sketch.AddValues(pa.array(values))
    assert exact._sketch is not None
    # An exact accumulator merged into one that fell back keeps its counts.
    late, _ = _sketch_pair()
    late.AddValues(pa.array(np.array([3, 3, 3], np.int64)))
    exact.Merge(late)
    sketch.AddValues(pa.array(np.array([3, 3, 3], np.int64)))
    got, want = _quantiles(exact, 4), _quantiles(sketch, 4)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_a_split_without_examples_gets_the_statistics_tfdv_gives_empty_input(tmp_path):
    """Every split's statistics come from one TFDV pass keyed by split: a split with no
    batches there (here test, beside a train split that has them) is written as TFDV
    writes a split computed alone on no examples."""
    import apache_beam as beam
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from components import data_validation as dv
    from components import examples_io
    from components.validate.executor import ReadShard
    from pipeline.artifacts import Artifact
    from pipeline.schemas import load_schema

    schema = load_schema(params("validate").schema)
    train = examples_io.split_shards(_raw(tmp_path), ["train"])
    out = Artifact("Statistics", str(tmp_path / "stats"))
    with beam.Pipeline() as p:
        batches = p | beam.Create(train, reshuffle=False) | beam.ParDo(ReadShard())
        _ = dv.write_statistics(batches, ["train", "test"], schema, out)
    with beam.Pipeline() as p:
        _ = (
            p
            | beam.Create([], reshuffle=False).with_output_types(pa.RecordBatch)
            | tfdv.GenerateStatistics(dv.stats_options(schema))
            | tfdv.WriteStatisticsToBinaryFile(str(tmp_path / "alone.pb"))
        )
    alone = tfdv.load_stats_binary(str(tmp_path / "alone.pb"))
    assert alone.datasets[0] == statistics_pb2.DatasetFeatureStatistics()  # TFDV's placeholder
    stats = {
        split: tfdv.load_stats_binary(os.path.join(out.split_uri(split), dv.STATS_FILE))
        for split in ("train", "test")
    }
    assert stats["test"] == alone
    assert stats["train"].datasets[0].num_examples == 120


def test_an_unreadable_shard_is_a_data_error_naming_it(tmp_path):
    from pipeline.errors import DataError

    examples = _raw(tmp_path)
    shard = sorted(os.listdir(examples.split_uri("validation")))[0]
    path = os.path.join(examples.split_uri("validation"), shard)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape(path) + r": unreadable TFRecord shard"):
        _validate(tmp_path, examples)


def test_a_split_without_shards_is_a_data_error_naming_it(tmp_path):
    from pipeline.errors import DataError

    examples = _raw(tmp_path)
    for shard in os.listdir(examples.split_uri("test")):
        os.remove(os.path.join(examples.split_uri("test"), shard))
    with pytest.raises(DataError, match=r"no data-\*\.tfrecord\.gz shards for split 'test'"):
        _validate(tmp_path, examples)
