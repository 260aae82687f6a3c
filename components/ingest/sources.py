"""Where the images come from: the original IDX files (Debian's dataset-fashion-mnist,
or a directory the user gives) or tensorflow_datasets.

IDX: a big-endian header (magic 0x00000803 + count, rows, cols for images; magic
0x00000801 + count for labels), then uint8 data; files may be gzipped. Every
check names the file and what was expected.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from components import features as F
from pipeline.errors import DataError

DEBIAN_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
# source split -> file prefix, as MNIST and Fashion-MNIST ship them
IDX_PREFIX = {"train": "train", "test": "t10k"}


@dataclass
class SplitArrays:
    images: np.ndarray  # uint8 [n, 28, 28]
    labels: np.ndarray  # int64 [n]
    origin: str  # file or tfds split, for error messages


def resolve(dataset: str, source: str) -> tuple[str, str | None]:
    """('idx', dir) or ('tfds', None)."""
    if source.startswith("idx:"):
        return "idx", os.path.expanduser(source[4:])
    if source == "tfds":
        return "tfds", None
    debian = DEBIAN_DIRS.get(dataset)
    if debian and all(
        _find_idx(debian, s, kind) for s in IDX_PREFIX for kind in ("images", "labels")
    ):
        return "idx", debian
    return "tfds", None


def _find_idx(directory: str, split: str, kind: str) -> str | None:
    prefix = IDX_PREFIX[split]
    idx = "idx3" if kind == "images" else "idx1"
    for name in (
        f"{prefix}-{kind}-{idx}-ubyte.gz",
        f"{prefix}-{kind}-{idx}-ubyte",
        f"{prefix}-{kind}.{idx}-ubyte.gz",
        f"{prefix}-{kind}.{idx}-ubyte",
    ):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def idx_paths(directory: str, split: str) -> tuple[str, str]:
    if not os.path.isdir(directory):
        raise DataError(
            f"data.source idx:{directory}: no such directory (expected the four "
            "MNIST-format IDX files there)"
        )
    images, labels = _find_idx(directory, split, "images"), _find_idx(directory, split, "labels")
    prefix = IDX_PREFIX[split]
    if images is None:
        raise DataError(f"{directory}: missing {prefix}-images-idx3-ubyte[.gz] for split {split}")
    if labels is None:
        raise DataError(f"{directory}: missing {prefix}-labels-idx1-ubyte[.gz] for split {split}")
    return images, labels


def _images_header(path: str, head: bytes, data_len: int) -> int:
    """The image count of an IDX image file, from its 16-byte header and the length of the
    pixel data after it; every mismatch is a DataError naming the file."""
    if len(head) < 16:
        raise DataError(f"{path}: truncated IDX header ({len(head)} bytes, expected 16)")
    magic, n, rows, cols = struct.unpack(">IIII", head[:16])
    if magic != IMAGES_MAGIC:
        raise DataError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x} "
            "(IDX uint8 images, 3 dimensions)"
        )
    if (rows, cols) != (F.HEIGHT, F.WIDTH):
        raise DataError(f"{path}: images are {rows}x{cols}, expected {F.HEIGHT}x{F.WIDTH}")
    if data_len >= 0:
        _check_length(
            path,
            data_len,
            n * rows * cols,
            f"{n} images of {rows}x{cols} ({n * rows * cols} bytes)",
            "bytes of pixel data",
        )
    return n


def _labels_header(path: str, head: bytes, data_len: int) -> int:
    if len(head) < 8:
        raise DataError(f"{path}: truncated IDX header ({len(head)} bytes, expected 8)")
    magic, n = struct.unpack(">II", head[:8])
    if magic != LABELS_MAGIC:
        raise DataError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{LABELS_MAGIC:08x} "
            "(IDX uint8 labels, 1 dimension)"
        )
    if data_len >= 0:
        _check_length(path, data_len, n, f"{n} labels", "bytes")
    return n


def _check_length(path: str, found: int, expected: int, says: str, unit: str) -> None:
    if found != expected:
        raise DataError(
            f"{path}: header says {says}, found {found} {unit}"
            + (" (truncated)" if found < expected else " (trailing bytes)")
        )


class _BadLabels:
    """The first label outside 0..9 and how many there are, over chunks of a file."""

    def __init__(self, path: str):
        self.path, self.count = path, 0
        self.first: tuple[int, int] | None = None  # (label, index)

    def add(self, labels: np.ndarray, start: int) -> None:
        bad = np.flatnonzero(labels >= F.NUM_CLASSES)
        if bad.size and self.first is None:
            self.first = (int(labels[bad[0]]), start + int(bad[0]))
        self.count += bad.size

    def check(self) -> None:
        if self.first:
            raise DataError(
                f"{self.path}: label {self.first[0]} at index {self.first[1]} is "
                f"outside 0..9 ({self.count} bad labels)"
            )


def load_tfds(dataset: str, split: str, max_examples: int = 0) -> SplitArrays:
    # Here, not at the top: ingest's spec imports this module at plan time (source_identity)
    # in a process that loads no TensorFlow.
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(dataset, split=split, as_supervised=True)
        if max_examples:
            ds = ds.take(max_examples)
        # Batched iteration, not batch_size=-1: the latter aborts under tfds' mock_data.
        parts = list(tfds.as_numpy(ds.batch(8192)))
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds; name the source
        raise DataError(
            f"tensorflow_datasets {dataset}/{split}: cannot load "
            f"({type(e).__name__}: {e}). Offline? Use data.source=idx:DIR with "
            "the original IDX files."
        ) from None
    if not parts:
        raise DataError(f"tensorflow_datasets {dataset}/{split}: no examples")
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    tfds_split = f"{split}[:{max_examples}]" if max_examples else split
    origin = f"tfds:{dataset}/{tfds_split}"
    if images.ndim != 4 or images.shape[1:] != (F.HEIGHT, F.WIDTH, 1):
        raise DataError(f"{origin}: images have shape {images.shape[1:]}, expected (28, 28, 1)")
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= F.NUM_CLASSES))
    if bad.size:
        raise DataError(f"{origin}: label {labels[bad[0]]} at index {bad[0]} is outside 0..9")
    return SplitArrays(images[..., 0].astype(np.uint8), labels, origin)


@dataclass(frozen=True)
class Staged:
    """A source split as flat uint8 files: pixels (784 bytes per image) and labels (one
    byte each), each from a byte offset. Read by row ranges, so no stage holds a whole
    split in memory."""

    images: str
    images_offset: int
    labels: str
    labels_offset: int
    count: int
    origin: str  # file or tfds split, for the log

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images [stop - start, 784] and int64 labels of rows start..stop-1."""
        images = _read_range(
            self.images, self.images_offset + start * F.PIXELS, (stop - start) * F.PIXELS
        ).reshape(-1, F.PIXELS)
        labels = _read_range(self.labels, self.labels_offset + start, stop - start)
        return images, labels.astype(np.int64)


CHUNK_BYTES = 16 << 20


def _read_range(path: str, offset: int, size: int) -> np.ndarray:
    from tensorflow.io import gfile  # not at plan time (load_tfds)

    with gfile.GFile(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise DataError(
            f"{path}: {len(data)} bytes at offset {offset}, expected {size} "
            "(changed while being read?)"
        )
    return np.frombuffer(data, np.uint8)


def _stream(
    path: str, header: int, dest: str, check_head, on_chunk=None
) -> tuple[bytes, int, str, int]:
    """Reads an IDX file once, in chunks: (header bytes, data length, file holding the
    data, its offset there). A gzipped file is decompressed into `dest`; a plain one is
    used where it lies. `check_head(head)` runs before the data is read;
    `on_chunk(array, start)` sees every data chunk in order."""
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw) if gz else raw
            head = f.read(header)
            check_head(head)
            if not gz and on_chunk is None:
                return head, os.path.getsize(path) - len(head), path, header
            out = open(dest, "wb") if gz else None
            n = 0
            try:
                while chunk := f.read(CHUNK_BYTES):
                    if on_chunk:
                        on_chunk(np.frombuffer(chunk, np.uint8), n)
                    if out:
                        out.write(chunk)
                    n += len(chunk)
            finally:
                if out:
                    out.close()
            return head, n, (dest if gz else path), (0 if gz else header)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def stage_idx(directory: str, split: str, dest: str, max_examples: int = 0) -> Staged:
    """A split's IDX files, checked as they stream by (header, lengths, labels in 0..9,
    image and label counts agree); gzipped files are decompressed under `dest`, plain
    ones read in place."""
    images_path, labels_path = idx_paths(directory, split)
    head, length, images, images_offset = _stream(
        images_path,
        16,
        os.path.join(dest, f"{split}-images"),
        lambda h: _images_header(images_path, h, -1),
    )
    n = _images_header(images_path, head, length)
    bad = _BadLabels(labels_path)
    head, length, labels, labels_offset = _stream(
        labels_path,
        8,
        os.path.join(dest, f"{split}-labels"),
        lambda h: _labels_header(labels_path, h, -1),
        bad.add,
    )
    n_labels = _labels_header(labels_path, head, length)
    bad.check()
    if n != n_labels:
        raise DataError(
            f"{images_path} has {n} images but {labels_path} has {n_labels} labels; they must agree"
        )
    count = min(n, max_examples) if max_examples else n
    return Staged(images, images_offset, labels, labels_offset, count, images_path)


def stage(dataset: str, source: str, split: str, dest: str, max_examples: int = 0) -> Staged:
    """The source split as flat files under `dest` (or in place), checked."""
    _, directory = resolve(dataset, source)
    if directory is not None:  # IDX files
        return stage_idx(directory, split, dest, max_examples)
    # tensorflow_datasets hands over whole arrays (this path is not memory-bounded)
    data = load_tfds(dataset, split, max_examples)
    paths = os.path.join(dest, f"{split}-images"), os.path.join(dest, f"{split}-labels")
    for path, array in zip(paths, (data.images, data.labels.astype(np.uint8))):
        with open(path, "wb") as f:
            f.write(np.ascontiguousarray(array).tobytes())
    return Staged(paths[0], 0, paths[1], 0, len(data.labels), data.origin)


def source_identity(dataset: str, source: str) -> dict:
    """Identity of the external data for the cache key: the IDX files' names and SHA-256
    (not their directory, so moved data still hits), or the tfds version."""
    _, directory = resolve(dataset, source)
    if directory is not None:  # IDX files
        files = {}
        for split in IDX_PREFIX:
            for path in idx_paths(directory, split):
                with open(path, "rb") as f:
                    files[os.path.basename(path)] = hashlib.file_digest(f, "sha256").hexdigest()
        return {"kind": "idx", "files": files}
    # the installed version, read without importing tfds (and TensorFlow with it)
    return {
        "kind": "tfds",
        "dataset": dataset,
        "tfds": importlib.metadata.version("tensorflow-datasets"),
    }
