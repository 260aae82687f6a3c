"""ingest: IDX parsing with its error cases, tfds (mock data), shards, splits, ids."""

import gzip
import os
import re
import struct
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from components import features as F
from components import records
from components.ingest import executor as ingest
from components.ingest import sources
from pipeline.errors import ConfigError, DataError
from tests.helpers import (
    output_artifacts,
    params,
    read_shard,
    run_executor,
    synthetic_images,
    write_idx,
)


@pytest.fixture
def idx_dir(tmp_path):
    """A fresh copy per test (shadows the shared session fixture): tests here corrupt it."""
    d = tmp_path / "idx"
    write_idx(d, "train", *synthetic_images(200, 1))
    write_idx(d, "t10k", *synthetic_images(60, 2), compress=False)  # raw files work too
    return d


def _load_idx(directory, split: str, max_examples: int = 0) -> sources.SplitArrays:
    """A split's IDX files as ingest reads them (sources.stage_idx, streamed), whole."""
    with tempfile.TemporaryDirectory() as dest:
        staged = sources.stage_idx(str(directory), split, dest, max_examples)
        images, labels = staged.read(0, staged.count)
    return sources.SplitArrays(images.reshape(-1, F.HEIGHT, F.WIDTH), labels, staged.origin)


def _run(source, tmp_path, *overrides):
    p = params("ingest", f"data.source={source}", "data.num_shards=3", *overrides)
    outs = output_artifacts("ingest", tmp_path / "out")
    metrics = run_executor("ingest", p, {}, outs)
    return outs["examples"], metrics


def test_idx_roundtrip_values(idx_dir):
    images, labels = synthetic_images(200, 1)
    data = _load_idx(idx_dir, "train")
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert _load_idx(idx_dir, "train", max_examples=7).images.shape == (7, 28, 28)


def test_ingest_writes_sharded_splits_with_stable_ids(idx_dir, tmp_path):
    out, metrics = _run(f"idx:{idx_dir}", tmp_path)
    counts = out.properties["counts"]
    assert counts["train"] + counts["validation"] == 200 and counts["test"] == 60
    assert metrics["num_examples"] == 260
    assert 5 <= counts["validation"] <= 40  # ~10% carved by hash
    images, labels = synthetic_images(200, 1)
    seen = {}
    for split in ("train", "validation"):
        files = out.split_files(split, F.SHARD_PATTERN)
        assert [os.path.basename(f) for f in files] == [F.shard_name(i, 3) for i in range(3)]
        for f in files:
            data = read_shard(f, float_images=False)
            for i, example_id in enumerate(data[F.ID]):
                seen[example_id.decode()] = split
                index = int(example_id.decode().split("-")[1])
                np.testing.assert_array_equal(data[F.IMAGE][i], images[index].reshape(-1))
                assert data[F.LABEL][i] == labels[index]
    assert sorted(seen) == [f"train-{i:05d}" for i in range(200)]
    # validation membership is a pure function of the id
    assert all((s == "validation") == ingest.in_validation(i, 0.1) for i, s in seen.items())


def test_validation_membership_does_not_depend_on_cap():
    ids = [f"train-{i:05d}" for i in range(1000)]
    full = {i for i in ids if ingest.in_validation(i, 0.1)}
    capped = {i for i in ids[:300] if ingest.in_validation(i, 0.1)}
    assert capped == {i for i in full if int(i[6:]) < 300}
    assert 60 < len(full) < 140


def test_truncated_image_file_is_named(idx_dir):
    path = idx_dir / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*truncated"):
        _load_idx(idx_dir, "train")


def test_truncated_gzip_stream_is_named(idx_dir):
    path = idx_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        _load_idx(idx_dir, "train")


def test_wrong_magic_is_named(idx_dir):
    path = idx_dir / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[3] = 0x03  # image magic in a label file
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: bad magic number 0x00000803"):
        _load_idx(idx_dir, "test")


def test_label_count_mismatch(tmp_path):
    images, labels = synthetic_images(50)
    write_idx(tmp_path, "train", images, labels[:49])
    with pytest.raises(DataError, match=r"50 images but .*49 labels"):
        _load_idx(tmp_path, "train")


def test_bad_label_value_and_wrong_image_size(tmp_path):
    images, labels = synthetic_images(20)
    labels[7] = 12
    write_idx(tmp_path / "a", "train", images, labels)
    with pytest.raises(DataError, match=r"label 12 at index 7"):
        _load_idx(tmp_path / "a", "train")
    d = tmp_path / "b"
    d.mkdir()
    with gzip.open(d / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 2, 32, 32) + bytes(2 * 32 * 32))
    with gzip.open(d / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, 2) + bytes(2))
    with pytest.raises(DataError, match=r"32x32, expected 28x28"):
        _load_idx(d, "train")


def test_missing_files_and_dirs(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        _load_idx(tmp_path / "nope", "train")
    with pytest.raises(DataError, match="missing train-images"):
        _load_idx(tmp_path, "train")


def test_empty_validation_split_is_a_data_error(idx_dir, tmp_path):
    # Valid keys whose combination leaves no data for a split: the data is rejected (exit 3),
    # which only running the stage can tell.
    with pytest.raises(DataError, match="validation split empty") as e:
        _run(f"idx:{idx_dir}", tmp_path, "data.max_examples=3", "data.validation_fraction=0.01")
    assert not isinstance(e.value, ConfigError)


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.source=s3://bucket/mnist", "data.source"),
        ("data.source=idx:", "data.source"),
        ("data.dataset=cifar10", "data.dataset"),
        ("data.max_examples=-5", "data.max_examples"),
        ("data.validation_fraction=0.0", "data.validation_fraction"),
        ("data.validation_fraction=1.0", "data.validation_fraction"),
        ("data.num_shards=0", "data.num_shards"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        params("ingest", override)


def test_params_come_from_the_data_keys(idx_dir):
    p = params(
        "ingest",
        f"data.source=idx:{idx_dir}",
        "data.dataset=mnist",
        "data.max_examples=50",
        "data.validation_fraction=0.25",
        "data.num_shards=2",
    )
    assert (p.dataset, p.source, p.max_examples, p.validation_fraction, p.num_shards) == (
        "mnist",
        f"idx:{idx_dir}",
        50,
        0.25,
        2,
    )


def test_auto_prefers_debian_files_when_present(monkeypatch, idx_dir):
    monkeypatch.setitem(sources.DEBIAN_DIRS, "fashion_mnist", str(idx_dir))
    assert sources.resolve("fashion_mnist", "auto") == ("idx", str(idx_dir))
    monkeypatch.setitem(sources.DEBIAN_DIRS, "fashion_mnist", "/nonexistent")
    assert sources.resolve("fashion_mnist", "auto") == ("tfds", None)
    assert sources.resolve("mnist", "auto") == ("tfds", None)


def test_tfds_source_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        out, metrics = _run("tfds", tmp_path, "data.dataset=mnist")
    assert out.properties["source"] == "tfds"
    assert metrics["num_examples"] == 80
    data = read_shard(out.split_files("test", F.SHARD_PATTERN)[0], float_images=False)
    assert data[F.IMAGE].shape[1] == F.PIXELS
    assert data[F.IMAGE].min() >= 0 and data[F.IMAGE].max() <= 255
    assert set(data[F.LABEL]) <= set(range(10))


def test_shards_are_gzip_tfrecords(idx_dir, tmp_path):
    out, _ = _run(f"idx:{idx_dir}", tmp_path)
    f = out.split_files("test", F.SHARD_PATTERN)[0]
    assert open(f, "rb").read(2) == b"\x1f\x8b"
    n = sum(1 for _ in tf.data.TFRecordDataset(f, compression_type="GZIP"))
    assert n == 20


def _corrupt_truncated_pixels(d):
    path = d / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    return r"train-images-idx3-ubyte\.gz.*truncated"


def _corrupt_gzip_stream(d):
    path = d / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])
    return r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"


def _corrupt_magic(d):
    path = d / "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[3] = 0x03
    path.write_bytes(gzip.compress(bytes(data)))
    return r"train-labels-idx1-ubyte\.gz: bad magic number 0x00000803"


def _corrupt_label_count(d):
    images, labels = synthetic_images(200, 1)
    write_idx(d, "train", images, labels[:199])
    return r"200 images but .*199 labels"


def _corrupt_label_value(d):
    images, labels = synthetic_images(200, 1)
    labels[7] = 12
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (d / name).unlink()
    write_idx(d, "train", images, labels, compress=False)  # the plain files' path
    return r"label 12 at index 7 is outside 0..9 \(1 bad labels\)"


def _corrupt_trailing_bytes(d):
    path = d / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"xx"))
    return r"found 156802 bytes of pixel data \(trailing bytes\)"


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_truncated_pixels,
        _corrupt_gzip_stream,
        _corrupt_magic,
        _corrupt_label_count,
        _corrupt_label_value,
        _corrupt_trailing_bytes,
    ],
)
def test_streamed_staging_names_each_corruption_of_the_train_files(idx_dir, tmp_path, corrupt):
    """ingest stages the source streamed (sources.stage_idx): each corruption of the
    train IDX files, gzipped or plain, is one DataError naming the file."""
    message = corrupt(idx_dir)
    dest = tmp_path / "staged"
    dest.mkdir()
    with pytest.raises(DataError, match=message):
        sources.stage_idx(str(idx_dir), "train", str(dest))


def test_shards_hold_the_records_of_the_whole_array_encoding(idx_dir, tmp_path, monkeypatch):
    """The streamed, chunked writer (small chunks here) writes exactly the records the
    earlier whole-array path wrote: each shard, in order, records.encode of its rows."""
    monkeypatch.setattr(ingest, "CHUNK", 7)
    out, _ = _run(f"idx:{idx_dir}", tmp_path, "data.max_examples=150")
    whole = {s: _load_idx(idx_dir, s, 150) for s in ("train", "test")}
    val = np.array([ingest.in_validation(f"train-{i:05d}", 0.1) for i in range(150)])
    rows = {
        "train": ("train", np.flatnonzero(~val)),
        "validation": ("train", np.flatnonzero(val)),
        "test": ("test", np.arange(60)),
    }
    for split, (source, idx) in rows.items():
        files = out.split_files(split, F.SHARD_PATTERN)
        assert len(files) == 3
        for f, part in zip(files, np.array_split(idx, 3)):
            expected = records.encode(
                [f"{source}-{i:05d}" for i in part],
                whole[source].labels[part],
                {F.IMAGE: whole[source].images[part].reshape(len(part), -1)},
            )
            got = [r.numpy() for r in tf.data.TFRecordDataset(f, compression_type="GZIP")]
            # as parsed protos: the encoder's byte order of the feature map varies run to run
            assert [tf.train.Example.FromString(r) for r in got] == [
                tf.train.Example.FromString(r) for r in expected
            ], f
