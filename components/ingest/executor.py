"""ingest executor: source IDX files (or tfds) -> Split-{train,validation,test} GZIP
TFRecord shards.

Example ids are stable: "<source split>-<index in the source file>", so the same
image keeps its id whatever the cap or shard count. Validation is carved from the
source train split by a hash of the id (as TFX's ExampleGen hash buckets do), so
membership does not depend on order, caps or workers. Encoding and writing of the
shards run as a Beam pipeline with the run's options, one element per shard; the
source is staged once as flat files read by row range (streamed, no whole-split array).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from typing import TYPE_CHECKING

import apache_beam as beam
import numpy as np
from tensorflow.io import gfile

from components import features as F
from components import records
from components.ingest import sources
from pipeline import beam_jobs
from pipeline.artifacts import SPLITS, Artifact
from pipeline.errors import DataError

if TYPE_CHECKING:
    from components.ingest.component import IngestParams
    from pipeline.component import ExecutionContext

HASH_BUCKETS = 10_000


def in_validation(example_id: str, fraction: float) -> bool:
    bucket = F.id_hash64(example_id) % HASH_BUCKETS
    return bucket < round(fraction * HASH_BUCKETS)


CHUNK = 4096  # examples encoded and written at a time: memory per worker is bounded by it


class _WriteShard(beam.DoFn):
    """Encodes and writes one shard, CHUNK examples at a time. Elements are small
    descriptors (split, shard, which of the split's rows); the pixels are read from the
    staged flat files by row range, so no image data travels through the Beam graph and
    no worker holds more than a chunk of it."""

    def __init__(self, uri: str, staged: dict[str, sources.Staged], rows_dir: str):
        self.uri, self.staged, self.rows_dir = uri, staged, rows_dir

    def process(self, task):
        split, source_split, shard, num_shards, lo, hi = task
        rows = np.load(posixpath.join(self.rows_dir, f"{split}.npy"), mmap_mode="r")[lo:hi]
        source = self.staged[source_split]
        path = posixpath.join(self.uri, f"Split-{split}", F.shard_name(shard, num_shards))
        n = 0
        with records.shard_writer(path) as writer:
            for at in range(0, len(rows), CHUNK):
                part = np.asarray(rows[at : at + CHUNK])
                first = int(part[0])
                images, labels = source.read(first, int(part[-1]) + 1)  # a contiguous span
                images, labels = images[part - first], labels[part - first]
                ids = [f"{source_split}-{i:05d}" for i in part]
                for example in records.encode(ids, labels, {F.IMAGE: images}):
                    writer.write(example)
                n += len(part)
        yield split, n


def plan_shards(
    counts: dict[str, int], validation_fraction: float, num_shards: int, rows_dir: str
) -> tuple[list[tuple], dict[str, int]]:
    """(split, source split, shard, num_shards, lo, hi) tasks, the rows of each split saved
    as <rows_dir>/<split>.npy (source row indices, increasing; a task writes rows lo..hi-1
    of them), and the count per split."""
    tasks, out = [], {}
    rows_by_split = {}
    for source_split, n in counts.items():
        if source_split == "train":
            val = np.fromiter(
                (in_validation(f"train-{i:05d}", validation_fraction) for i in range(n)), bool, n
            )
            rows_by_split["train"] = ("train", np.flatnonzero(~val))
            rows_by_split["validation"] = ("train", np.flatnonzero(val))
        else:
            rows_by_split[source_split] = (source_split, np.arange(n))
    for split in SPLITS:
        source_split, rows = rows_by_split[split]
        if len(rows) == 0:
            raise DataError(
                f"data.max_examples / data.validation_fraction leave the {split} split "
                f"empty ({counts[source_split]} source examples)"
            )
        np.save(posixpath.join(rows_dir, f"{split}.npy"), rows)
        shards = min(num_shards, len(rows))
        q, r = divmod(len(rows), shards)  # np.array_split's sizes: the first r one larger
        bounds = np.cumsum([0] + [q + 1] * r + [q] * (shards - r))
        for shard in range(shards):
            tasks.append(
                (split, source_split, shard, shards, int(bounds[shard]), int(bounds[shard + 1]))
            )
        out[split] = int(len(rows))
    return tasks, out


def run(params: IngestParams, ctx: ExecutionContext, *, examples: Artifact) -> dict:
    scratch = _scratch_dir(ctx.work_dir)
    try:
        staged = _stage_sources(params, scratch, ctx.log)
        tasks, counts = plan_shards(
            {s: v.count for s, v in staged.items()},
            params.validation_fraction,
            params.num_shards,
            scratch,
        )
        _write_shards(examples, tasks, staged, scratch, ctx.beam_args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _record_properties(examples, params, counts)
    ctx.log.info("wrote %s", ", ".join(f"{s}={n}" for s, n in counts.items()))
    return {"num_examples": sum(counts.values()), **{f"{s}_examples": n for s, n in counts.items()}}


def _scratch_dir(work_dir: str) -> str:
    """Where the source is staged: the stage's local work directory, else a temporary one."""
    local = work_dir if work_dir and "://" not in work_dir else None
    scratch = os.path.join(local, "source") if local else tempfile.mkdtemp(prefix="ingest-")
    os.makedirs(scratch, exist_ok=True)
    return scratch


def _stage_sources(params: IngestParams, scratch: str, log) -> dict[str, sources.Staged]:
    """The source train and test splits, checked and staged as flat files under `scratch`."""
    staged = {}
    for split in ("train", "test"):
        staged[split] = sources.stage(
            params.dataset, params.source, split, scratch, params.max_examples
        )
        log.info("read %d %s examples from %s", staged[split].count, split, staged[split].origin)
    return staged


def _write_shards(
    out: Artifact, tasks: list[tuple], staged: dict[str, sources.Staged], rows_dir: str, beam_args
) -> None:
    """Encode and write every shard of `tasks`, one Beam element each."""
    for split in {task[0] for task in tasks}:
        gfile.makedirs(out.split_uri(split))
    with beam_jobs.pipeline(beam_args) as p:
        _ = (
            p
            | "Shards" >> beam.Create(tasks, reshuffle=False)
            | "EncodeAndWrite" >> beam.ParDo(_WriteShard(out.uri, staged, rows_dir))
        )


def _record_properties(out: Artifact, params: IngestParams, counts: dict[str, int]) -> None:
    written = {s: sum(1 for _ in out.split_files(s, F.SHARD_PATTERN)) for s in counts}
    kind, directory = sources.resolve(params.dataset, params.source)
    out.properties.update(
        {
            "splits": list(counts),
            "counts": counts,
            "normalized": False,
            "noisy": False,
            "dataset": params.dataset,
            "source": f"idx:{directory}" if kind == "idx" else "tfds",
            "shards": written,
            # for views that know no component (the HTML report): the layout and class names
            "class_names": list(F.CLASS_NAMES[params.dataset]),
            "label_feature": F.LABEL,
            "image_feature": F.IMAGE,
        }
    )
