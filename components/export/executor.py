"""export: the SavedModel (components/export/saved_model.py) and the embeddings of every
example of every split.

Outputs
  saved_model  <uri>/model/: SavedModel with encode / decode / reconstruct / serving_default
               (properties: path = "model", signatures, latent_dim)
  embeddings   <uri>/parquet/embeddings-SSSSS-of-NNNNN.parquet: id string, split string,
               label int64, embedding list<float32> (the code of the clean image);
               <uri>/projector/: vectors.tsv, metadata.tsv, projector_config.pbtxt for the
               test split (point TensorBoard's --logdir at it)

The embeddings are computed by an Apache Beam pipeline run with the run's Beam options:
ReadFromTFRecord per split -> BatchElements -> a DoFn that loads the exported SavedModel
once per worker (setup) and encodes whole batches -> WriteToParquetBatched.
"""

from __future__ import annotations

import io
import posixpath
import time
from typing import TYPE_CHECKING

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from tensorflow.io import gfile

from components import examples_io
from components import features as F
from components.export import saved_model as signatures
from components.train import model_io
from pipeline import beam_jobs
from pipeline.artifacts import SPLITS
from pipeline.errors import StageError

if TYPE_CHECKING:
    from components.export.component import ExportParams
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext

SAVED_MODEL_SUBDIR = "model"
PARQUET_SUBDIR = "parquet"
PROJECTOR_SUBDIR = "projector"
SCHEMA = pa.schema([
    ("id", pa.string()),
    ("split", pa.string()),
    ("label", pa.int64()),
    ("embedding", pa.list_(pa.float32())),
])
# Largest allowed |saved - in-memory| reconstruction difference on the round-trip check.
ROUNDTRIP_ATOL = 1e-5


class EncodeBatches(beam.DoFn):
    """Serialized tf.Examples (a list) -> one pyarrow Table of (id, split, label, embedding)."""

    def __init__(self, saved_model_dir: str, split: str):
        self.saved_model_dir, self.split = saved_model_dir, split
        self.examples = beam.metrics.Metrics.counter("export", f"embeddings_{split}")

    def setup(self):
        self._encode = tf.saved_model.load(self.saved_model_dir).signatures["encode"]
        self._spec = examples_io.feature_spec((F.IMAGE,))

    def process(self, batch):
        parsed = tf.io.parse_example(tf.constant(batch), self._spec)
        images = tf.reshape(parsed[F.IMAGE], [-1, F.HEIGHT, F.WIDTH, 1])
        code = self._encode(images=images)["code"].numpy().astype(np.float32)
        n, dim = code.shape
        embedding = pa.ListArray.from_arrays(
            pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)),
            pa.array(code.reshape(-1), pa.float32()))
        self.examples.inc(n)
        yield pa.Table.from_arrays(
            [pa.array([s.decode() for s in parsed[F.ID].numpy()], pa.string()),
             pa.array([self.split] * n, pa.string()),
             pa.array(parsed[F.LABEL].numpy(), pa.int64()),
             embedding], schema=SCHEMA)


def _splits(examples: Artifact) -> list[str]:
    splits = examples.splits or [s for s in SPLITS if gfile.exists(examples.split_uri(s))]
    if not splits:
        raise StageError(f"no splits found in the examples at {examples.uri}")
    return splits


def embed_with_beam(examples: Artifact, splits: list[str], saved_model_dir: str,
                    parquet_dir: str, batch_size: int, beam_args: list[str]) -> None:
    with beam_jobs.pipeline(beam_args) as p:
        tables = []
        for split in splits:
            examples_io.shard_files(examples, split)  # fail early, naming the directory
            pattern = posixpath.join(examples.split_uri(split), F.SHARD_PATTERN)
            tables.append(
                p
                | f"Read[{split}]" >> beam.io.ReadFromTFRecord(
                    pattern, compression_type=beam.io.filesystem.CompressionTypes.GZIP)
                | f"Batch[{split}]" >> beam.BatchElements(min_batch_size=batch_size,
                                                          max_batch_size=batch_size)
                | f"Encode[{split}]" >> beam.ParDo(EncodeBatches(saved_model_dir, split)))
        _ = (tables
             | "Flatten" >> beam.Flatten()
             | "WriteParquet" >> beam.io.WriteToParquetBatched(
                 posixpath.join(parquet_dir, "embeddings"), schema=SCHEMA, codec="snappy",
                 file_name_suffix=".parquet"))


def read_parquet(parquet_dir: str, columns=None) -> pa.Table:
    files = sorted(gfile.glob(posixpath.join(parquet_dir, "*.parquet")))
    if not files:
        raise StageError(f"the embedding pipeline wrote no Parquet files to {parquet_dir}")
    tables = []
    for path in files:
        with gfile.GFile(path, "rb") as f:
            tables.append(pq.read_table(io.BytesIO(f.read()), columns=columns))
    return pa.concat_tables(tables)


def write_projector(table: pa.Table, split: str, projector_dir: str) -> int:
    """TensorBoard projector files for one split's rows, sorted by id."""
    rows = table.filter(pc.equal(table["split"], split)).sort_by("id")
    if rows.num_rows == 0:
        return 0
    gfile.makedirs(projector_dir)
    vectors = np.asarray(rows["embedding"].combine_chunks().flatten(), np.float32).reshape(
        rows.num_rows, -1)
    buf = io.StringIO()
    np.savetxt(buf, vectors, fmt="%.6g", delimiter="\t")
    with gfile.GFile(posixpath.join(projector_dir, "vectors.tsv"), "w") as f:
        f.write(buf.getvalue())
    with gfile.GFile(posixpath.join(projector_dir, "metadata.tsv"), "w") as f:
        # More than one column, so a header line (TensorBoard's metadata format).
        f.write("label\tid\n")
        for label, id_ in zip(rows["label"].to_pylist(), rows["id"].to_pylist()):
            f.write(f"{label}\t{id_}\n")
    with gfile.GFile(posixpath.join(projector_dir, "projector_config.pbtxt"), "w") as f:
        f.write('embeddings {\n'
                f'  tensor_name: "{split}_embeddings"\n'
                '  tensor_path: "vectors.tsv"\n'
                '  metadata_path: "metadata.tsv"\n'
                '}\n')
    return rows.num_rows


def _roundtrip_check(model, saved_model_dir: str, examples: Artifact) -> float:
    """Max |SavedModel reconstruct - in-memory reconstruct| on a few test images."""
    split = "test" if "test" in _splits(examples) else _splits(examples)[0]
    x = next(iter(examples_io.dataset(examples, split, 64, cache=False)))[0]
    loaded = tf.saved_model.load(saved_model_dir)
    exported = loaded.signatures["reconstruct"](images=x)["reconstruction"].numpy()
    diff = float(np.max(np.abs(exported - np.asarray(model.reconstruct(x)))))
    if not diff <= ROUNDTRIP_ATOL:
        raise StageError(f"the SavedModel at {saved_model_dir} does not reproduce the model: "
                         f"max |difference| {diff:g} > {ROUNDTRIP_ATOL:g}")
    return diff


def run(params: ExportParams, ctx: ExecutionContext, *, model: Artifact, examples: Artifact,
        saved_model: Artifact, embeddings: Artifact) -> dict:
    log = ctx.log
    batch_size = params.batch_size
    info = model_io.read_model_json(model)
    saved_model_artifact, model = saved_model, model_io.load_model(model)

    t0 = time.perf_counter()
    sm_dir = posixpath.join(saved_model_artifact.uri, SAVED_MODEL_SUBDIR)
    signatures.export(model, sm_dir)
    diff = _roundtrip_check(model, sm_dir, examples)
    log.info("export: SavedModel (%s) written to %s in %.1fs; reload max |diff| %.2g",
             ", ".join(signatures.SIGNATURES), sm_dir, time.perf_counter() - t0, diff)
    saved_model_artifact.properties.update({
        "path": SAVED_MODEL_SUBDIR, "signatures": list(signatures.SIGNATURES),
        "latent_dim": int(model.latent_dim), "variant": info["variant"],
        "serving_input": f"serialized tf.Example, feature {F.IMAGE!r} float[{F.PIXELS}]"})

    t1 = time.perf_counter()
    splits = _splits(examples)
    emb_uri = embeddings.uri
    parquet_dir = posixpath.join(emb_uri, PARQUET_SUBDIR)
    gfile.makedirs(parquet_dir)
    log.info("export: embedding splits %s with Beam (%s)", ", ".join(splits),
             " ".join(ctx.beam_args))
    embed_with_beam(examples, splits, sm_dir, parquet_dir, batch_size, ctx.beam_args)

    table = read_parquet(parquet_dir)
    split_col = table["split"].to_pylist()
    counts = {s: split_col.count(s) for s in splits}
    expected = examples.properties.get("counts") or {}
    wrong = {s: (counts[s], expected[s]) for s in splits
             if s in expected and counts[s] != int(expected[s])}
    if wrong:
        raise StageError(f"embedding count mismatch (written, examples) per split: {wrong} "
                         f"in {parquet_dir}")
    dims = set(pc.list_value_length(table["embedding"]).to_pylist())
    if dims != {int(model.latent_dim)}:
        raise StageError(f"embedding lengths {sorted(dims)} != latent_dim {model.latent_dim}")
    projector_split = "test" if "test" in splits else splits[-1]
    projected = write_projector(table, projector_split, posixpath.join(emb_uri, PROJECTOR_SUBDIR))
    total = sum(counts.values())
    log.info("export: %d embeddings (%s) of dim %d in %.1fs; projector: %d %s rows", total,
             ", ".join(f"{s} {n}" for s, n in counts.items()), model.latent_dim,
             time.perf_counter() - t1, projected, projector_split)
    embeddings.properties.update({
        "parquet_dir": PARQUET_SUBDIR, "projector_dir": PROJECTOR_SUBDIR,
        "projector_split": projector_split, "counts": counts, "latent_dim": int(model.latent_dim),
        "columns": SCHEMA.names})
    return {
        "embedding_counts": counts,
        "embeddings": total,  # all splits together
        "latent_dim": int(model.latent_dim),
        "roundtrip_max_abs_diff": diff,
        "export_seconds": round(time.perf_counter() - t0, 2),
    }
