"""transform: [0,1] normalization, deterministic noise, normalized-schema validation,
refusal of raw examples that failed validation."""

import os
import re

import numpy as np
import pytest

from components import features as F
from components import records
from components.preprocessing import normalize
from components.transform import noise
from pipeline import artifacts
from pipeline.errors import ConfigError, DataAnomalyError, DataError
from tests.helpers import (
    output_artifacts,
    params,
    read_shard,
    run_executor,
    synthetic_images,
    write_examples_artifact,
)

SPLITS = ["train", "validation", "test"]


def _raw(tmp_path, num_shards=2, mutate=None, name="raw"):
    splits = {}
    for split, n, seed in (("train", 90, 1), ("validation", 20, 2), ("test", 40, 3)):
        images, labels = synthetic_images(n, seed)
        images = images.astype(np.int64)
        if mutate:
            images = mutate(split, images)
        splits[split] = (images, labels)
    return write_examples_artifact(
        str(tmp_path / name), splits, normalized=False, num_shards=num_shards
    )


def _raw_anomalies(tmp_path, anomalous_splits=(), name="raw_anomalies"):
    """validate's anomalies output, as its properties describe it (what transform reads)."""
    uri = tmp_path / name
    os.makedirs(uri, exist_ok=True)
    return artifacts.Artifact(
        artifacts.ANOMALIES,
        str(uri),
        {"splits": list(SPLITS), "anomalous_splits": list(anomalous_splits)},
    )


def _transform(tmp_path, raw, *overrides, name="out", raw_anomalies=None):
    outs = output_artifacts("transform", tmp_path / name)
    raw_anomalies = raw_anomalies or _raw_anomalies(tmp_path, name=f"{name}_raw_anomalies")
    metrics = run_executor(
        "transform",
        params("transform", *overrides),
        {"examples": raw, "raw_anomalies": raw_anomalies},
        outs,
    )
    return metrics, outs["transformed_examples"]


def _read(examples, split):
    parts = [read_shard(f, float_images=True) for f in examples.split_files(split, F.SHARD_PATTERN)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _read_noisy(examples, split):
    import tensorflow as tf

    spec = {
        F.ID: tf.io.FixedLenFeature([], tf.string),
        F.NOISY_IMAGE: tf.io.FixedLenFeature([F.PIXELS], tf.float32),
    }
    files = examples.split_files(split, F.SHARD_PATTERN)
    out = {}
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1000):
        p = tf.io.parse_example(batch, spec)
        for i, x in zip(p[F.ID].numpy(), p[F.NOISY_IMAGE].numpy()):
            out[i.decode()] = x
    return out


def test_normalize_is_float32_division_by_255_bit_for_bit_everywhere():
    """Every pixel value, as numpy, eager TensorFlow and a traced graph (where Grappler
    rewrites `x / 255.0` into a multiplication that is off by one ulp) compute it."""
    import tensorflow as tf

    pixels = np.arange(256, dtype=np.int64)
    expected = (pixels.astype(np.float32) / 255.0).view(np.int32)
    assert normalize(pixels).dtype == np.float32
    np.testing.assert_array_equal(normalize(pixels).view(np.int32), expected)
    np.testing.assert_array_equal(normalize(pixels.astype(np.uint8)).view(np.int32), expected)
    graph = tf.function(normalize, input_signature=[tf.TensorSpec([None], tf.uint8)])
    np.testing.assert_array_equal(
        graph(tf.constant(pixels.astype(np.uint8))).numpy().view(np.int32), expected
    )


def test_normalizes_to_unit_interval_exactly(tmp_path):
    raw = _raw(tmp_path)
    metrics, out = _transform(tmp_path, raw)
    assert metrics["num_examples"] == 150
    data = _read(out, "train")
    images, _ = synthetic_images(90, 1)
    by_id = {i.decode(): x for i, x in zip(data[F.ID], data[F.IMAGE])}
    # What transform writes is the shared normalize() of the raw pixels, bit for bit (the
    # function the SavedModel applies to raw inputs), as it always was (numpy x / 255).
    written = np.stack([by_id[f"train-{i:05d}"] for i in range(90)])
    raw_pixels = images.reshape(90, -1).astype(np.int64)
    np.testing.assert_array_equal(written.view(np.int32), normalize(raw_pixels).view(np.int32))
    np.testing.assert_array_equal(
        written.view(np.int32), (raw_pixels.astype(np.float32) / 255.0).view(np.int32)
    )
    assert data[F.IMAGE].min() >= 0.0 and data[F.IMAGE].max() <= 1.0
    assert out.properties["noisy"] is False
    test_images, _ = synthetic_images(40, 3)
    assert metrics["splits"]["test"]["pixel_max"] == pytest.approx(test_images.max() / 255.0)
    assert metrics["splits"]["test"]["pixel_max"] <= 1.0


def test_gaussian_noise_is_deterministic_and_independent_of_sharding(tmp_path):
    _, a = _transform(
        tmp_path, _raw(tmp_path, 2), "noise.kind=gaussian", "noise.factor=0.5", name="a"
    )
    _, b = _transform(
        tmp_path,
        _raw(tmp_path, 3, name="raw3"),
        "noise.kind=gaussian",
        "noise.factor=0.5",
        name="b",
    )
    na, nb = (_read_noisy(x, "train") for x in (a, b))
    assert na.keys() == nb.keys()
    for k in na:
        np.testing.assert_array_equal(na[k], nb[k])  # same seed + id -> same noise
    clean = {i.decode(): x for i, x in zip(*(_read(a, "train")[k] for k in (F.ID, F.IMAGE)))}
    ids = sorted(na)
    images = np.stack([clean[k] for k in ids])
    seed = params("transform", "noise.kind=gaussian").seed
    np.testing.assert_array_equal(  # the executor's noise is noise.corrupt's, for this seed
        np.stack([na[k] for k in ids]), noise.corrupt(images, ids, "gaussian", 0.5, seed)
    )
    assert not np.array_equal(
        noise.corrupt(images, ids, "gaussian", 0.5, seed),
        noise.corrupt(images, ids, "gaussian", 0.5, seed + 1),
    )
    diff = np.stack([na[k] - clean[k] for k in na])
    assert 0.15 < diff.std() < 0.5  # clipped N(0, 0.5)
    assert all(0.0 <= v.min() and v.max() <= 1.0 for v in na.values())


@pytest.mark.parametrize("kind", ["salt_pepper", "mask"])
def test_other_noise_kinds_corrupt_the_given_fraction(kind):
    x = np.full((50, F.PIXELS), 0.5, np.float32)
    ids = [f"train-{i:05d}" for i in range(50)]
    y = noise.corrupt(x, ids, kind, 0.2, seed=1)
    changed = (y != 0.5).mean()
    assert 0.17 < changed < 0.23
    if kind == "mask":
        assert set(np.unique(y)) == {0.0, 0.5}
    else:
        assert set(np.unique(y)) == {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(y, noise.corrupt(x, ids, kind, 0.2, seed=1))


def test_out_of_range_raw_pixels_fail_the_normalized_schema(tmp_path):
    def mutate(split, images):
        if split == "test":
            images[2, 3, 4] = 510  # normalizes to 2.0
        return images

    with pytest.raises(DataAnomalyError, match=r"test/image"):
        _transform(tmp_path, _raw(tmp_path, mutate=mutate))
    assert os.path.exists(tmp_path / "out" / "anomalies" / "Split-test" / "anomalies.pbtxt")


def test_corrupt_shard_is_named(tmp_path):
    raw = _raw(tmp_path)
    shard = raw.split_files("validation", F.SHARD_PATTERN)[1]
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[: len(data) // 2])
    with pytest.raises(DataError, match=os.path.basename(shard) + ": unreadable TFRecord shard"):
        _transform(tmp_path, raw)


def test_refuses_raw_examples_that_failed_validation(tmp_path):
    raw = _raw(tmp_path)
    rejected = _raw_anomalies(tmp_path, ["validation"])
    outs = output_artifacts("transform", tmp_path / "out")
    with pytest.raises(DataError, match=r"failed validation.*validation") as e:
        run_executor(
            "transform", params("transform"), {"examples": raw, "raw_anomalies": rejected}, outs
        )
    assert not isinstance(e.value, DataAnomalyError)  # refused before any TFDV check of its own
    assert rejected.uri in str(e.value)
    # Nothing was written: no shards, no statistics, no anomalies of its own.
    for artifact in outs.values():
        assert os.listdir(artifact.uri) == [], artifact.uri
    # The same examples with a clean validation result are accepted.
    metrics, _ = _transform(tmp_path, raw, name="accepted")
    assert metrics["num_examples"] == 150


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["noise.kind=blur"], "noise.kind"),
        (["noise.kind=gaussian", "noise.factor=0.0"], "noise.factor"),
        (["noise.kind=gaussian", "noise.factor=10.5"], "noise.factor"),
        (["noise.kind=salt_pepper", "noise.factor=1.0"], "noise.factor"),
        (["noise.kind=mask", "noise.factor=1.5"], "noise.factor"),
        (["noise.kind=mask", "noise.factor=-0.1"], "noise.factor"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        params("transform", *overrides)


def test_noise_params_come_from_the_config():
    p = params("transform", "noise.kind=gaussian", "noise.factor=2.5", "train.seed=9")
    assert (p.noise_kind, p.noise_factor, p.seed) == ("gaussian", 2.5, 9)  # a stddev may exceed 1


def _full_tfdv_statistics(examples, split, schema):
    """What transform computed before it skipped the pixel histograms: TFDV's default
    generators over every written example of the split."""
    import tensorflow_data_validation as tfdv

    from components import data_validation as dv

    pattern = os.path.join(examples.split_uri(split), F.SHARD_PATTERN)
    return tfdv.generate_statistics_from_tfrecord(pattern, stats_options=dv.stats_options(schema))


def _by_path(stats):
    from google.protobuf import json_format

    return {"/".join(f.path.step): json_format.MessageToDict(f) for f in stats.datasets[0].features}


def _assert_close(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_close(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where


@pytest.mark.parametrize("overrides", [(), ("noise.kind=gaussian", "noise.factor=0.5")])
def test_statistics_and_anomalies_are_tfdvs_without_pixel_histograms(tmp_path, overrides):
    """The faster statistics are TFDV's full statistics of the written examples, value for
    value, less the pixel features' histograms, median and values-per-example histogram
    (validate has the raw ones); the anomalies against the normalized schema are the same."""
    import tensorflow_data_validation as tfdv

    from components import data_validation as dv
    from components.transform.executor import PIXEL_FEATURES
    from pipeline.schemas import load_schema

    def mutate(split, images):
        if split == "test":
            images[2, 3, 4] = 510  # normalizes to 2.0: an anomaly both ways
        return images

    raw = _raw(tmp_path, mutate=mutate)
    with pytest.raises(DataAnomalyError):
        _transform(tmp_path, raw, *overrides)
    out = tmp_path / "out"
    examples = artifacts.Artifact(artifacts.EXAMPLES, str(out / "transformed_examples"), {})
    schema = load_schema(params("transform", *overrides).schema)
    for split in SPLITS:
        new = tfdv.load_stats_binary(str(out / "statistics" / f"Split-{split}" / dv.STATS_FILE))
        full = _full_tfdv_statistics(examples, split, schema)
        assert new.datasets[0].num_examples == full.datasets[0].num_examples
        expected = _by_path(full)
        for name in PIXEL_FEATURES:
            if name in expected:
                numeric = expected[name]["numStats"]
                assert len(numeric.pop("histograms")) == 2
                numeric.pop("median")
                # values per example: always 784 (min, max, avg and total stay)
                numeric["commonStats"].pop("numValuesHistogram")
        assert (F.NOISY_IMAGE in expected) == bool(overrides)
        got = _by_path(new)
        for name in PIXEL_FEATURES:
            if name in got:
                assert got[name]["numStats"].pop("median") == "NaN"  # TFDV's "not computed"
        _assert_close(got, expected, split)
        anomalies = tfdv.validate_statistics(full, schema)
        saved = tfdv.load_anomalies_text(
            str(out / "anomalies" / f"Split-{split}" / "anomalies.pbtxt")
        )
        assert {k: v.description for k, v in saved.anomaly_info.items()} == {
            k: v.description for k, v in anomalies.anomaly_info.items()
        }
        assert bool(saved.anomaly_info) == (split == "test")


@pytest.mark.parametrize("bad, message", [(np.nan, "NaN"), (np.inf, "Inf"), (-0.5, "low value")])
def test_pixel_checks_without_histograms_still_catch_nan_inf_and_domain(bad, message):
    """NaN counts live in TFDV's histograms: dv.NanCounts keeps them when they are off."""
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl
    from tensorflow_data_validation.statistics.generators import stats_generator

    from components import data_validation as dv
    from components.transform.executor import PIXEL_FEATURES
    from pipeline.schemas import load_schema

    schema = load_schema(params("transform").schema)
    x = np.full((20, F.PIXELS), 0.5, np.float32)
    x[3, 5] = bad
    batch = records.record_batch([f"i{i}" for i in range(20)], np.arange(20) % 10, {F.IMAGE: x})
    options = dv.stats_options(schema, PIXEL_FEATURES)
    # in memory: the combiners only (TFDV's top-k for Beam is a PTransform; the label's)
    options.generators = [
        g for g in options.generators if isinstance(g, stats_generator.CombinerStatsGenerator)
    ]
    stats = stats_impl.generate_statistics_in_memory(batch, options)
    image = [f for f in stats.datasets[0].features if f.path.step == [F.IMAGE]][0]
    assert not [h for h in image.num_stats.histograms if h.buckets]  # no histograms computed
    found = tfdv.validate_statistics(stats, schema).anomaly_info
    assert list(found) == [F.IMAGE] and message in found[F.IMAGE].description
