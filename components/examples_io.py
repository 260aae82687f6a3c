"""Reading normalized Examples artifacts (transform's output) for train, evaluate and export.

Layout (components/features.py): <uri>/Split-<split>/data-*.tfrecord.gz, GZIP TFRecords of
tf.Example with `id` bytes, `label` int64, `image` float[784] in [0, 1] and, when the
artifact's properties say `noisy`, `noisy_image` float[784].

Two ways in:

- `load_split`: the whole split as numpy arrays (evaluation, probes, plots).
- `dataset`: a tf.data pipeline of (x, y) batches for Keras. With `cache=True` (the default)
  the split is parsed once -- parallel shard reads, vectorized `parse_example` on batches --
  into two in-memory tensors; every epoch then only shuffles indices and gathers batches,
  which is what Keras does itself for numpy arrays, so there is no per-epoch parsing and no
  per-example work at all. `cache=False` streams from the shards instead (bounded memory,
  shuffle buffer, parse after batching) for data that does not fit in memory.
- `plan_cache`: which of the two, from the splits' sizes (the artifact's `counts` x the bytes
  one parsed example takes) against a memory budget (train.memory_budget_mb).

Held-out classes (`data.holdout_labels`, novelty detection): `dataset(exclude_labels=...)`
leaves those classes out of the batches; `kept_mask` says which examples of a `load_split`
result are outside them; `label_counts` says how many examples of each class a split has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from components import features as F
from pipeline.artifacts import Artifact
from pipeline.errors import DataError

IMAGE_SHAPE = (F.HEIGHT, F.WIDTH, 1)
# Serialized examples parsed per parse_example call (vectorized parsing is much faster
# than one call per example).
PARSE_BATCH = 1024


def feature_spec(image_features=(F.IMAGE,), with_meta: bool = True) -> dict:
    spec = {name: tf.io.FixedLenFeature([F.PIXELS], tf.float32) for name in image_features}
    if with_meta:
        spec[F.ID] = tf.io.FixedLenFeature([], tf.string)
        spec[F.LABEL] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def shard_files(examples: Artifact, split: str) -> list[str]:
    files = examples.split_files(split, F.SHARD_PATTERN)
    if not files:
        raise DataError(
            f"no {F.SHARD_PATTERN} shards for split {split!r} in {examples.split_uri(split)} "
            f"(artifact splits: {examples.splits or 'unknown'})"
        )
    return files


def split_shards(examples: Artifact, splits: list[str]) -> list[tuple[str, str]]:
    """(split, shard path) of every shard of `splits`: one Beam element per shard, keyed."""
    return [(split, path) for split in splits for path in shard_files(examples, split)]


def has_feature(examples: Artifact, split: str, name: str) -> bool:
    """Whether the first example of `split` carries feature `name` (cheap: one record)."""
    for record in _records(shard_files(examples, split)[:1]).take(1):
        example = tf.train.Example.FromString(record.numpy())
        return name in example.features.feature
    return False


def _records(files: list[str]) -> tf.data.Dataset:
    return tf.data.TFRecordDataset(
        files, compression_type=F.COMPRESSION, num_parallel_reads=min(len(files), 16) or None
    )


def _parsed_batches(
    files: list[str], spec: dict, batch_size: int = PARSE_BATCH, file_order: bool = False
) -> tf.data.Dataset:
    """Parsed batches of the shards' records; `file_order`: shard after shard, records in
    file order, instead of an interleaved read."""
    records = (
        tf.data.TFRecordDataset(files, compression_type=F.COMPRESSION)
        if file_order
        else _records(files)
    )
    return (
        records.batch(batch_size)
        .map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _tf_message(e: tf.errors.OpError) -> str:
    """The useful part of a TensorFlow error message (no function-node or op decorations)."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", e.message.splitlines()[0])
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip()


def _locate_bad_file(files: list[str], spec: dict) -> tuple[str, str]:
    """After a failed read of many shards: find the first one that fails on its own."""
    for path in files:
        try:
            for _ in _parsed_batches([path], spec):
                pass
        except tf.errors.OpError as e:
            return path, _tf_message(e)
    return "", ""


def _read_columns(examples: Artifact, split: str, spec: dict) -> dict[str, np.ndarray]:
    """Parse every example of a split into numpy columns (one pass, vectorized)."""
    files = shard_files(examples, split)
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in spec}
    try:
        for batch in _parsed_batches(files, spec):
            for key, value in batch.items():
                chunks[key].append(value.numpy())
    except tf.errors.OpError as e:
        raise _read_error(examples, split, files, spec, e) from None
    columns = {
        k: (
            np.concatenate(v)
            if v
            else np.zeros((0,) + tuple(spec[k].shape), spec[k].dtype.as_numpy_dtype)
        )
        for k, v in chunks.items()
    }
    _check_count(examples, split, len(next(iter(columns.values()))))
    return columns


def _read_error(
    examples: Artifact, split: str, files: list[str], spec: dict, e: tf.errors.OpError
) -> DataError:
    """The one line for a failed read of a split: the first bad shard, what TensorFlow
    said, and the features expected."""
    path, message = _locate_bad_file(files, spec)
    where = path or examples.split_uri(split)
    expected = ", ".join(f"{k} {v.dtype.name}{list(v.shape) or ''}" for k, v in spec.items())
    return DataError(
        f"cannot read examples of split {split!r} from {where}: "
        f"{message or _tf_message(e)} (expected features: {expected})"
    )


def _check_count(examples: Artifact, split: str, n: int) -> None:
    """A split read whole must hold what the artifact's `counts` say, and something."""
    expected_n = (examples.properties.get("counts") or {}).get(split)
    if expected_n is not None and int(expected_n) != n:
        raise DataError(
            f"split {split!r} in {examples.split_uri(split)} has {n} examples but "
            f"the artifact's properties say {expected_n} (truncated or extra shards?)"
        )
    if n == 0:
        raise DataError(f"split {split!r} in {examples.split_uri(split)} has no examples")


def label_counts(examples: Artifact, split: str) -> np.ndarray:
    """Examples per class [F.NUM_CLASSES] of a split (reads only the labels)."""
    labels = _read_columns(examples, split, {F.LABEL: tf.io.FixedLenFeature([], tf.int64)})
    return np.bincount(labels[F.LABEL], minlength=F.NUM_CLASSES)


def kept_mask(labels: np.ndarray, exclude_labels) -> np.ndarray:
    """True for the examples whose label is not one of `exclude_labels`."""
    return ~np.isin(np.asarray(labels), np.asarray(tuple(exclude_labels), np.int64))


def require_examples_left(
    kept: int, total: int, examples: Artifact, split: str, exclude_labels
) -> None:
    if kept == 0:
        raise DataError(
            f"split {split!r} in {examples.split_uri(split)} has no examples left after "
            f"leaving out classes {sorted(exclude_labels)} (data.holdout_labels): all {total} "
            "are of those classes; expected examples of other classes"
        )


def _require_noisy(examples: Artifact, split: str) -> None:
    noisy = examples.properties.get("noisy")
    if noisy is False or (noisy is None and not has_feature(examples, split, F.NOISY_IMAGE)):
        raise DataError(
            f"feature {F.NOISY_IMAGE!r} is not in the examples at {examples.uri} (properties: "
            f"noisy={noisy}); a denoising model needs transform to add noise (noise.kind != none)"
        )


def load_split(examples: Artifact, split: str, noisy: bool | None = None) -> dict[str, np.ndarray]:
    """All examples of a split: id (str objects [n]), label int64 [n], image float32
    [n,28,28,1] and noisy_image [n,28,28,1] (when `noisy`; by default when the artifact has it)."""
    if noisy is None:
        noisy = bool(examples.properties.get("noisy"))
    elif noisy:
        _require_noisy(examples, split)
    image_features = (F.IMAGE, F.NOISY_IMAGE) if noisy else (F.IMAGE,)
    cols = _read_columns(examples, split, feature_spec(image_features))
    out = {
        F.ID: np.array([b.decode() for b in cols[F.ID]], dtype=object),
        F.LABEL: cols[F.LABEL].astype(np.int64),
    }
    for name in image_features:
        out[name] = cols[name].reshape((-1,) + IMAGE_SHAPE)
    return out


def bytes_per_example(image_features) -> int:
    """Host memory one example takes once parsed by the in-memory path: float32 pixels per
    image feature (what `_in_memory` holds as tensors)."""
    return F.PIXELS * 4 * len(tuple(dict.fromkeys(image_features)))


@dataclass(frozen=True)
class CachePlan:
    cache: bool  # True: parse into memory; False: stream from the shards
    needed_bytes: int | None  # parsed size of the splits; None when a count is unknown
    budget_bytes: int
    reason: str  # one line for the log


def plan_cache(examples: Artifact, splits, image_features, budget_mb: int) -> CachePlan:
    """In memory when the parsed `splits` (the artifact's `counts` x `bytes_per_example`)
    fit in `budget_mb` MiB, streaming otherwise. Unknown counts stream (always correct,
    bounded memory); budget 0 always streams."""
    budget = int(budget_mb) * 2**20
    counts = examples.properties.get("counts") or {}
    per = bytes_per_example(image_features)
    missing = [s for s in splits if counts.get(s) is None]
    if missing:
        return CachePlan(
            False,
            None,
            budget,
            f"streaming from the shards: the artifact has no example count for "
            f"split(s) {missing}, so their size in memory is unknown",
        )
    n = sum(int(counts[s]) for s in splits)
    needed = n * per
    mib = needed / 2**20
    what = f"{n} {'+'.join(splits)} examples x {per} bytes = {mib:.0f} MiB parsed"
    if needed <= budget:
        return CachePlan(
            True, needed, budget, f"in memory: {what} <= train.memory_budget_mb {budget_mb}"
        )
    return CachePlan(
        False,
        needed,
        budget,
        f"streaming from the shards: {what} > train.memory_budget_mb {budget_mb}",
    )


@dataclass(frozen=True)
class _Batching:
    """How `dataset` makes batches of a split."""

    input_feature: str  # x
    target_feature: str  # y
    batch_size: int
    shuffle: bool
    seed: int
    shuffle_buffer: int
    exclude_labels: tuple[int, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The image features read: x and y, once each."""
        return tuple(dict.fromkeys((self.input_feature, self.target_feature)))

    def spec(self) -> dict:
        spec = feature_spec(self.names, with_meta=False)
        if self.exclude_labels:
            spec[F.LABEL] = tf.io.FixedLenFeature([], tf.int64)
        return spec


def dataset(
    examples: Artifact,
    split: str,
    batch_size: int,
    input_feature: str = F.IMAGE,
    *,
    shuffle: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 60000,
    cache: bool = True,
    target_feature: str = F.IMAGE,
    exclude_labels: tuple[int, ...] = (),
) -> tf.data.Dataset:
    """(x, y) batches, x = `input_feature` and y = `target_feature` as float32 [B,28,28,1].

    shuffle: reshuffled every epoch, deterministically from `seed`. With `cache` the
    shuffle is over example indices (a full permutation when shuffle_buffer >= n).
    exclude_labels: classes left out (held out of training); with `cache`, a split with
    nothing left is a DataError here, streaming yields no batches (check with label_counts).
    """
    if input_feature not in (F.IMAGE, F.NOISY_IMAGE) or target_feature not in (
        F.IMAGE,
        F.NOISY_IMAGE,
    ):
        raise ValueError(f"unknown image feature {input_feature!r} / {target_feature!r}")
    if F.NOISY_IMAGE in (input_feature, target_feature):
        _require_noisy(examples, split)
    batching = _Batching(
        input_feature,
        target_feature,
        batch_size,
        shuffle,
        seed,
        shuffle_buffer,
        tuple(exclude_labels),
    )
    return (_in_memory if cache else _streaming)(examples, split, batching)


def _in_memory(examples: Artifact, split: str, b: _Batching) -> tf.data.Dataset:
    cols = _read_columns(examples, split, b.spec())
    if b.exclude_labels:
        keep = kept_mask(cols.pop(F.LABEL), b.exclude_labels)
        require_examples_left(int(keep.sum()), len(keep), examples, split, b.exclude_labels)
        cols = {k: v[keep] for k, v in cols.items()}
    n = len(cols[b.names[0]])
    with tf.device("/cpu:0"):  # host memory, where tf.data runs, even when a GPU is visible
        tensors = tuple(tf.constant(cols[k].reshape((-1,) + IMAGE_SHAPE)) for k in b.names)
    x_index, y_index = b.names.index(b.input_feature), b.names.index(b.target_feature)

    indices = tf.data.Dataset.range(n)
    if b.shuffle:
        indices = indices.shuffle(
            min(b.shuffle_buffer, n), seed=b.seed, reshuffle_each_iteration=True
        )
    indices = indices.batch(b.batch_size)
    # The arrays enter as a repeated dataset element rather than a captured constant
    # (what Keras' own array adapter does): nothing is copied per batch except the gather.
    data = tf.data.Dataset.from_tensors(tensors).repeat()

    def gather(idx, arrays):
        picked = tuple(tf.gather(a, idx) for a in arrays)
        return picked[x_index], picked[y_index]

    return (
        tf.data.Dataset.zip((indices, data))
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _shuffled_records(files: list[str], seed: int, shuffle_buffer: int) -> tf.data.Dataset:
    """Shard order and record order both vary per epoch, reproducibly."""
    return (
        tf.data.Dataset.from_tensor_slices(files)
        .shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        .interleave(
            lambda f: tf.data.TFRecordDataset(f, compression_type=F.COMPRESSION),
            cycle_length=min(len(files), 16),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    )


def _streaming(examples: Artifact, split: str, b: _Batching) -> tf.data.Dataset:
    files = shard_files(examples, split)
    ds = _shuffled_records(files, b.seed, b.shuffle_buffer) if b.shuffle else _records(files)
    spec = b.spec()
    excluded = tf.constant(b.exclude_labels or (-1,), tf.int64)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        if b.exclude_labels:
            keep = tf.reduce_all(tf.not_equal(parsed[F.LABEL][:, None], excluded[None, :]), axis=1)
            parsed = {k: tf.boolean_mask(parsed[k], keep) for k in b.names}
        return (
            tf.reshape(parsed[b.input_feature], (-1,) + IMAGE_SHAPE),
            tf.reshape(parsed[b.target_feature], (-1,) + IMAGE_SHAPE),
        )

    if b.exclude_labels:  # parsed in batches, filtered, then batched again
        ds = (
            ds.batch(PARSE_BATCH)
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
            .unbatch()
            .batch(b.batch_size)
        )
    else:
        ds = ds.batch(b.batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        n = (examples.properties.get("counts") or {}).get(split)
        if n is not None:  # Keras then knows the steps per epoch; a wrong count fails loudly
            ds = ds.apply(tf.data.experimental.assert_cardinality(-(-int(n) // b.batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)


def iter_split(
    examples: Artifact,
    split: str,
    noisy: bool = False,
    batch_size: int = PARSE_BATCH,
    file_order: bool = False,
):
    """The examples of a split as `load_split` gives them (same columns, same order), one
    dict of numpy arrays of at most `batch_size` rows at a time: memory bounded by the
    batch, not the split. `file_order`: shard after shard, records in file order (as
    ingest wrote them) instead of `load_split`'s interleaved read of the shards.
    Same errors as `load_split` (a bad shard named; a count the artifact contradicts)."""
    if noisy:
        _require_noisy(examples, split)
    image_features = (F.IMAGE, F.NOISY_IMAGE) if noisy else (F.IMAGE,)
    spec = feature_spec(image_features)
    files = shard_files(examples, split)
    batches = _parsed_batches(files, spec, batch_size, file_order)
    n = 0
    try:
        for batch in batches:
            out = {
                F.ID: np.array([b.decode() for b in batch[F.ID].numpy()], dtype=object),
                F.LABEL: batch[F.LABEL].numpy().astype(np.int64),
            }
            for name in image_features:
                out[name] = batch[name].numpy().reshape((-1,) + IMAGE_SHAPE)
            n += len(out[F.LABEL])
            yield out
    except tf.errors.OpError as e:
        raise _read_error(examples, split, files, spec, e) from None
    _check_count(examples, split, n)


def sample_split(
    examples: Artifact, split: str, k: int, seed: int, exclude_labels=()
) -> tuple[np.ndarray, np.ndarray]:
    """(images [k,28,28,1], labels [k]) of k examples of a split (all when k <= 0 or k is
    at least what is there), picked reproducibly while the split streams by: memory for the
    sample only. Examples of the classes `exclude_labels` are left out before picking."""
    if exclude_labels:
        counts = label_counts(examples, split)
        n = int(counts.sum() - counts[list(exclude_labels)].sum())
    else:
        n = split_count(examples, split)
    idx = subsample(n, k, seed)
    images, labels, start = [], [], 0
    for batch in iter_split(examples, split):
        keep = kept_mask(batch[F.LABEL], exclude_labels)
        kept_images, kept_labels = batch[F.IMAGE][keep], batch[F.LABEL][keep]
        end = start + len(kept_labels)
        pick = idx[(idx >= start) & (idx < end)] - start
        images.append(kept_images[pick])
        labels.append(kept_labels[pick])
        start = end
    if not images:
        return np.zeros((0,) + IMAGE_SHAPE, np.float32), np.zeros([0], np.int64)
    return np.concatenate(images), np.concatenate(labels)


def subsample(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of k of n items (all when k <= 0 or k >= n), reproducibly."""
    if k <= 0 or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def split_count(examples: Artifact, split: str) -> int:
    """Examples in a split: the artifact's `counts`, else counted (reads only the labels)."""
    n = (examples.properties.get("counts") or {}).get(split)
    return int(n) if n is not None else int(label_counts(examples, split).sum())
