"""Encoding and writing of tf.Example shards, vectorized.

tfx_bsl's C++ RecordBatch -> tf.Example encoder is ~15x faster than building
tf.train.Example protos in Python (measured: 7 us vs 106 us per 784-pixel example),
and GZIP level 1 writes ~4x faster than the default level for 5% larger files.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import tensorflow as tf
from tfx_bsl.coders import example_coder

from components import features as F
from pipeline.errors import DataError

GZIP_LEVEL = 1


def _list_column(values: np.ndarray) -> pa.ListArray:
    """[n, k] array -> Arrow list column with n rows of k values (no copy of values)."""
    n, k = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def record_batch(
    ids: list[str], labels: np.ndarray, images: dict[str, np.ndarray]
) -> pa.RecordBatch:
    """Examples as an Arrow RecordBatch of list columns: the form TFDV consumes and
    tfx_bsl's encoder turns into tf.Examples."""
    columns = [
        pa.array([[i.encode()] for i in ids], pa.list_(pa.binary())),
        _list_column(np.asarray(labels, np.int64).reshape(-1, 1)),
    ]
    names = [F.ID, F.LABEL]
    for name, array in images.items():
        # the encoder takes int64 and float32 lists only
        dtype = np.float32 if np.issubdtype(array.dtype, np.floating) else np.int64
        columns.append(_list_column(np.ascontiguousarray(array, dtype).reshape(len(ids), -1)))
        names.append(name)
    return pa.RecordBatch.from_arrays(columns, names)


def to_examples(batch: pa.RecordBatch) -> list[bytes]:
    """Serialized tf.Examples, one per row of a `record_batch`."""
    return example_coder.RecordBatchToExamples(batch)


def encode(ids: list[str], labels: np.ndarray, images: dict[str, np.ndarray]) -> list[bytes]:
    """Serialized tf.Examples: id (bytes), label (int64), and each image feature flattened."""
    return to_examples(record_batch(ids, labels, images))


def shard_writer(path: str) -> tf.io.TFRecordWriter:
    """A GZIP TFRecord writer at the pipeline's compression level (a context manager)."""
    return tf.io.TFRecordWriter(
        path, tf.io.TFRecordOptions(compression_type=F.COMPRESSION, compression_level=GZIP_LEVEL)
    )


@contextlib.contextmanager
def shard_errors(path: str):
    """TensorFlow's errors reading or writing shard `path` (corrupt or truncated GZIP, a
    bad record) as the one-line DataError naming the shard."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        first = e.message.splitlines()[0]
        raise DataError(f"{path}: unreadable TFRecord shard ({first})") from None


def iter_shard(path: str, float_images: bool, batch_size: int = 4096):
    """The examples of one shard as dicts of numpy arrays, `batch_size` at a time
    (vectorized parse; memory bounded by the batch, not the shard)."""
    image_dtype = tf.float32 if float_images else tf.int64
    spec = {
        F.ID: tf.io.FixedLenFeature([], tf.string),
        F.LABEL: tf.io.FixedLenFeature([], tf.int64),
        F.IMAGE: tf.io.FixedLenFeature([F.PIXELS], image_dtype),
    }
    ds = tf.data.TFRecordDataset(path, compression_type=F.COMPRESSION).batch(batch_size)
    for batch in ds:
        yield {k: v.numpy() for k, v in tf.io.parse_example(batch, spec).items()}
