"""ingest executor: source arrays -> Split-{train,validation,test} GZIP TFRecord shards.

Example ids are stable: "<source split>-<index in the source file>", so the same
image keeps its id whatever the cap or shard count. Validation is carved from the
source train split by a hash of the id (as TFX's ExampleGen hash buckets do), so
membership does not depend on order, caps or workers. Encoding and writing of the
shards run as a Beam pipeline with the run's options, one element per shard.
"""

from __future__ import annotations

import posixpath
import tempfile

import apache_beam as beam
import numpy as np
from tensorflow.io import gfile

from typing import TYPE_CHECKING

from components import features as F
from components.ingest import sources
from pipeline import beam_jobs
from pipeline.errors import DataError

if TYPE_CHECKING:
    from components.ingest.component import IngestParams
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext

HASH_BUCKETS = 10_000


def in_validation(example_id: str, fraction: float) -> bool:
    bucket = F.id_hash64(example_id) % HASH_BUCKETS
    return bucket < round(fraction * HASH_BUCKETS)


class _WriteShard(beam.DoFn):
    """Encodes and writes one shard. Elements are small descriptors (split, shard, rows);
    the pixels come from .npy files the driver staged once, memory-mapped here, so no
    image data travels through the Beam graph (Create would pickle and bz2 it)."""

    def __init__(self, uri: str, staged: dict[str, tuple[str, str]]):
        self.uri = uri
        self.staged = staged
        self._arrays = {}

    def _load(self, source_split: str):
        if source_split not in self._arrays:
            images, labels = self.staged[source_split]
            self._arrays[source_split] = (_load_npy(images), _load_npy(labels))
        return self._arrays[source_split]

    def process(self, task):
        from components import records

        split, source_split, shard, num_shards, rows = task
        images, labels = self._load(source_split)
        ids = [f"{source_split}-{i:05d}" for i in rows]
        path = posixpath.join(self.uri, f"Split-{split}", F.shard_name(shard, num_shards))
        n = records.write_shard(path, records.encode(
            ids, labels[rows], {F.IMAGE: images[rows].reshape(len(rows), -1)}))
        yield split, n


def _load_npy(path: str) -> np.ndarray:
    if "://" in path:
        with gfile.GFile(path, "rb") as f:
            return np.load(f)
    return np.load(path, mmap_mode="r")


def _stage_npy(arrays: dict[str, sources.SplitArrays], directory: str) -> dict[str, tuple[str, str]]:
    gfile.makedirs(directory)
    staged = {}
    for split, data in arrays.items():
        paths = (posixpath.join(directory, f"{split}-images.npy"),
                 posixpath.join(directory, f"{split}-labels.npy"))
        for path, array in zip(paths, (data.images, data.labels)):
            with gfile.GFile(path, "wb") as f:
                np.save(f, np.ascontiguousarray(array))
        staged[split] = paths
    return staged


def plan_shards(arrays: dict[str, sources.SplitArrays], validation_fraction: float,
                num_shards: int) -> tuple[list[tuple], dict[str, int]]:
    """(split, source split, shard, num_shards, row indices) tasks and the count per split."""
    tasks, counts = [], {}
    rows_by_split = {}
    for source_split, data in arrays.items():
        n = len(data.labels)
        if source_split == "train":
            val = np.array([in_validation(f"train-{i:05d}", validation_fraction) for i in range(n)])
            rows_by_split["train"] = ("train", np.flatnonzero(~val))
            rows_by_split["validation"] = ("train", np.flatnonzero(val))
        else:
            rows_by_split[source_split] = (source_split, np.arange(n))
    for split in ("train", "validation", "test"):
        source_split, rows = rows_by_split[split]
        if len(rows) == 0:
            raise DataError(f"data.max_examples / data.validation_fraction leave the {split} split "
                            f"empty ({len(arrays[source_split].labels)} source examples)")
        shards = min(num_shards, len(rows))
        for shard, part in enumerate(np.array_split(rows, shards)):
            tasks.append((split, source_split, shard, shards, part))
        counts[split] = int(len(rows))
    return tasks, counts


def run(params: IngestParams, ctx: ExecutionContext, *, examples: Artifact) -> dict:
    out = examples
    arrays = {}
    for split in ("train", "test"):
        arrays[split] = sources.load(params.dataset, params.source, split, params.max_examples)
        ctx.log.info("read %d %s examples from %s", len(arrays[split].labels), split,
                     arrays[split].origin)
    tasks, counts = plan_shards(arrays, params.validation_fraction, params.num_shards)
    for split in counts:
        gfile.makedirs(out.split_uri(split))
    scratch = ctx.work_dir or tempfile.mkdtemp(prefix="ingest-")
    staged = _stage_npy(arrays, posixpath.join(scratch, "source"))
    try:
        with beam_jobs.pipeline(ctx.beam_args) as p:
            _ = (p
                 | "Shards" >> beam.Create(tasks, reshuffle=False)
                 | "EncodeAndWrite" >> beam.ParDo(_WriteShard(out.uri, staged)))
    finally:
        gfile.rmtree(posixpath.join(scratch, "source") if ctx.work_dir else scratch)
    written = {s: sum(1 for _ in out.split_files(s, F.SHARD_PATTERN)) for s in counts}
    kind, directory = sources.resolve(params.dataset, params.source)
    out.properties.update({
        "splits": list(counts), "counts": counts, "normalized": False, "noisy": False,
        "dataset": params.dataset, "source": f"idx:{directory}" if kind == "idx" else "tfds",
        "shards": written,
        # for views that know no component (the HTML report): the layout and class names
        "class_names": list(F.CLASS_NAMES[params.dataset]), "label_feature": F.LABEL,
        "image_feature": F.IMAGE,
    })
    ctx.log.info("wrote %s", ", ".join(f"{s}={n}" for s, n in counts.items()))
    return {"num_examples": sum(counts.values()), **{f"{s}_examples": n for s, n in counts.items()}}
