"""ingest executor: source arrays -> Split-{train,validation,test} GZIP TFRecord shards.

Example ids are stable: "<source split>-<index in the source file>", so the same
image keeps its id whatever the cap or shard count. Validation is carved from the
source train split by a hash of the id (as TFX's ExampleGen hash buckets do), so
membership does not depend on order, caps or workers. Encoding and writing of the
shards run as a Beam pipeline with the run's options, one element per shard.
"""

from __future__ import annotations

import hashlib
import posixpath

import apache_beam as beam
import numpy as np
from tensorflow.io import gfile

from components import features as F
from pipeline import beam_jobs
from components.ingest import sources
from pipeline.errors import ConfigError

HASH_BUCKETS = 10_000


def in_validation(example_id: str, fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:8], "big") % HASH_BUCKETS
    return bucket < round(fraction * HASH_BUCKETS)


class _WriteShard(beam.DoFn):
    def __init__(self, uri: str):
        self.uri = uri

    def process(self, task):
        from components import records

        split, shard, num_shards, ids, labels, images = task
        path = posixpath.join(self.uri, f"Split-{split}", F.shard_name(shard, num_shards))
        n = records.write_shard(path, records.encode(ids, labels, {F.IMAGE: images}))
        yield split, n


def plan_shards(arrays: dict[str, sources.SplitArrays], validation_fraction: float,
                num_shards: int) -> tuple[list[tuple], dict[str, int]]:
    """(split, shard, num_shards, ids, labels, images) tasks and the count per output split."""
    tasks, counts = [], {}
    out_splits = {}
    for source_split, data in arrays.items():
        ids = np.array([f"{source_split}-{i:05d}" for i in range(len(data.labels))])
        if source_split == "train":
            val = np.array([in_validation(i, validation_fraction) for i in ids], bool)
            out_splits["train"] = np.flatnonzero(~val), data
            out_splits["validation"] = np.flatnonzero(val), data
        else:
            out_splits[source_split] = np.arange(len(ids)), data
        out_splits.setdefault("_ids", {})[source_split] = ids
    all_ids = out_splits.pop("_ids")
    for split in ("train", "validation", "test"):
        rows, data = out_splits[split]
        if len(rows) == 0:
            raise ConfigError(f"data.max_examples / data.validation_fraction leave the {split} split "
                              f"empty ({len(data.labels)} source examples)")
        source_split = "test" if split == "test" else "train"
        shards = min(num_shards, len(rows))
        for shard, part in enumerate(np.array_split(rows, shards)):
            tasks.append((split, shard, shards, list(all_ids[source_split][part]),
                          data.labels[part], data.images[part].reshape(len(part), -1)))
        counts[split] = int(len(rows))
    return tasks, counts


def run(inputs, outputs, params, ctx):
    out = outputs["examples"]
    arrays = {}
    for split in ("train", "test"):
        arrays[split] = sources.load(params["dataset"], params["source"], split, params["max_examples"])
        ctx.log.info("read %d %s examples from %s", len(arrays[split].labels), split,
                     arrays[split].origin)
    tasks, counts = plan_shards(arrays, params["validation_fraction"], params["num_shards"])
    for split in counts:
        gfile.makedirs(out.split_uri(split))
    with beam_jobs.pipeline(ctx.beam_args) as p:
        _ = (p
             | "Shards" >> beam.Create(tasks, reshuffle=False)
             | "EncodeAndWrite" >> beam.ParDo(_WriteShard(out.uri)))
    written = {s: sum(1 for _ in out.split_files(s, F.SHARD_PATTERN)) for s in counts}
    kind, directory = sources.resolve(params["dataset"], params["source"])
    out.properties.update({
        "splits": list(counts), "counts": counts, "normalized": False, "noisy": False,
        "dataset": params["dataset"], "source": f"idx:{directory}" if kind == "idx" else "tfds",
        "shards": written,
    })
    ctx.log.info("wrote %s", ", ".join(f"{s}={n}" for s, n in counts.items()))
    return {"num_examples": sum(counts.values()), **{f"{s}_examples": n for s, n in counts.items()}}
