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
    if debian and all(_find_idx(debian, s, kind) for s in IDX_PREFIX for kind in ("images", "labels")):
        return "idx", debian
    return "tfds", None


def _find_idx(directory: str, split: str, kind: str) -> str | None:
    prefix = IDX_PREFIX[split]
    idx = "idx3" if kind == "images" else "idx1"
    for name in (f"{prefix}-{kind}-{idx}-ubyte.gz", f"{prefix}-{kind}-{idx}-ubyte",
                 f"{prefix}-{kind}.{idx}-ubyte.gz", f"{prefix}-{kind}.{idx}-ubyte"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def idx_paths(directory: str, split: str) -> tuple[str, str]:
    if not os.path.isdir(directory):
        raise DataError(f"data.source idx:{directory}: no such directory (expected the four "
                        "MNIST-format IDX files there)")
    images, labels = _find_idx(directory, split, "images"), _find_idx(directory, split, "labels")
    prefix = IDX_PREFIX[split]
    if images is None:
        raise DataError(f"{directory}: missing {prefix}-images-idx3-ubyte[.gz] for split {split}")
    if labels is None:
        raise DataError(f"{directory}: missing {prefix}-labels-idx1-ubyte[.gz] for split {split}")
    return images, labels


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                return gzip.decompress(f.read())
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def read_idx_images(path: str) -> np.ndarray:
    data = _read_bytes(path)
    if len(data) < 16:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, expected 16)")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGES_MAGIC:
        raise DataError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x} "
                        "(IDX uint8 images, 3 dimensions)")
    if (rows, cols) != (F.HEIGHT, F.WIDTH):
        raise DataError(f"{path}: images are {rows}x{cols}, expected {F.HEIGHT}x{F.WIDTH}")
    expected = n * rows * cols
    if len(data) - 16 != expected:
        raise DataError(f"{path}: header says {n} images of {rows}x{cols} ({expected} bytes), "
                        f"found {len(data) - 16} bytes of pixel data"
                        + (" (truncated)" if len(data) - 16 < expected else " (trailing bytes)"))
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_labels(path: str) -> np.ndarray:
    data = _read_bytes(path)
    if len(data) < 8:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, expected 8)")
    magic, n = struct.unpack(">II", data[:8])
    if magic != LABELS_MAGIC:
        raise DataError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{LABELS_MAGIC:08x} "
                        "(IDX uint8 labels, 1 dimension)")
    if len(data) - 8 != n:
        raise DataError(f"{path}: header says {n} labels, found {len(data) - 8} bytes"
                        + (" (truncated)" if len(data) - 8 < n else " (trailing bytes)"))
    labels = np.frombuffer(data, np.uint8, offset=8).astype(np.int64)
    bad = np.flatnonzero(labels >= F.NUM_CLASSES)
    if bad.size:
        raise DataError(f"{path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..9 "
                        f"({bad.size} bad labels)")
    return labels


def load_idx(directory: str, split: str, max_examples: int = 0) -> SplitArrays:
    images_path, labels_path = idx_paths(directory, split)
    images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has "
                        f"{len(labels)} labels; they must agree")
    if max_examples:
        images, labels = images[:max_examples], labels[:max_examples]
    return SplitArrays(images, labels, images_path)


def load_tfds(dataset: str, split: str, max_examples: int = 0) -> SplitArrays:
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(dataset, split=split, as_supervised=True)
        if max_examples:
            ds = ds.take(max_examples)
        # Batched iteration, not batch_size=-1: the latter aborts under tfds' mock_data.
        parts = list(tfds.as_numpy(ds.batch(8192)))
    except Exception as e:  # noqa: BLE001 - tfds raises many kinds; name the source
        raise DataError(f"tensorflow_datasets {dataset}/{split}: cannot load ({type(e).__name__}: "
                        f"{e}). Offline? Use data.source=idx:DIR with the original IDX files.") from None
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


def load(dataset: str, source: str, split: str, max_examples: int = 0) -> SplitArrays:
    kind, directory = resolve(dataset, source)
    if kind == "idx":
        return load_idx(directory, split, max_examples)
    return load_tfds(dataset, split, max_examples)


def source_identity(dataset: str, source: str) -> dict:
    """Identity of the external data for the cache key: the IDX files' names and SHA-256
    (not their directory, so moved data still hits), or the tfds version."""
    kind, directory = resolve(dataset, source)
    if kind == "idx":
        files = {}
        for split in IDX_PREFIX:
            for path in idx_paths(directory, split):
                with open(path, "rb") as f:
                    files[os.path.basename(path)] = hashlib.file_digest(f, "sha256").hexdigest()
        return {"kind": "idx", "files": files}
    # the installed version, read without importing tfds (and TensorFlow with it)
    return {"kind": "tfds", "dataset": dataset,
            "tfds": importlib.metadata.version("tensorflow-datasets")}
