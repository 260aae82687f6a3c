"""export: write the SavedModel (components/export/saved_model.py) with the novelty stage's
scorer baked in, and its TFLite models (components/export/tflite.py), then embed every
example of every split and score every test example.

Outputs
  saved_model  <uri>/model/: SavedModel with serving_default, images_uint8, images_float32,
               score, encode, decode, reconstruct (properties: path = "model", signatures,
               latent_dim, threshold, threshold_quantile, score_name, tflite_* (what was
               converted, its sizes and parity, and why anything was not))
               <uri>/tflite/model_float32.tflite, model_int8.tflite
  embeddings   <uri>/parquet/embeddings-SSSSS-of-NNNNN.parquet: id string, split string,
               label int64, embedding list<float32> (the code of the clean image);
               <uri>/scores/scores-SSSSS-of-NNNNN.parquet: id string, label int64,
               score float32, is_anomaly bool, score_<name> float32 for every novelty
               score, one row per test example;
               <uri>/projector/: vectors.tsv, metadata.tsv, projector_config.pbtxt for the
               test split (point TensorBoard's --logdir at it)

The served score (`export.score`) and its threshold, and the constants of every score, come
from the `scorer` input (components/novelty/), fitted on train and validation: the
SavedModel carries them as constants.

The embeddings and scores: on Beam's local runner in its default in-memory mode (the
default beam.args), in-process -- each split streamed in batches (examples_io.iter_split,
file order) through the exported SavedModel's functions, appended to one Parquet file per
output and to the projector files; that runner would run the same DoFn in this same
process, with Beam's bundling, pickling and Arrow coding on top (profiled on full
Fashion-MNIST: 30 s in the Beam pipeline, of which 13 s SavedModel inference). With any other
runner, an Apache Beam pipeline with the run's Beam options: ReadFromTFRecord per split ->
BatchElements -> a DoFn that loads the exported SavedModel once per worker (setup) and
encodes (and, on the test split, scores) whole batches -> WriteToParquetBatched; read back
in a streaming pass (counts, lengths, the projector split sorted by id). Both write the
same rows (tests/test_export.py).

Memory stays flat as the data grow: no split is held whole; the in-process path keeps one
batch.
"""

from __future__ import annotations

import io
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from tensorflow.io import gfile

from components import examples_io
from components import features as F
from components.export import saved_model as signatures
from components.export import tflite
from components.novelty.component import SCORES
from components.novelty.scores import Fitted, Scorer
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
SCORES_SUBDIR = "scores"
SCORED_SPLIT = "test"  # the split scored (else the last one)
PROJECTED_SPLIT = "test"  # the split of the projector files (else the last one)
SCORES_TAG = "scores"
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("label", pa.int64()),
        ("embedding", pa.list_(pa.float32())),
    ]
)
SCORES_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.int64()),
        ("score", pa.float32()),
        ("is_anomaly", pa.bool_()),
        *((f"score_{k}", pa.float32()) for k in SCORES),
    ]
)
# Largest allowed saved_model.max_diff(SavedModel, in-memory model) on the round-trip check.
ROUNDTRIP_ATOL = 1e-5
# Test images (of the round-trip check's batch of 64) the TFLite parity check runs on.
CHECK_IMAGES = 8


def tables(split: str, ids, labels, out: dict) -> tuple[pa.Table, pa.Table | None]:
    """One batch's rows: (id, split, label, embedding), and with a `score` in the
    SavedModel's outputs `out`, (id, label, score, is_anomaly, score_<each score>)."""
    code = np.asarray(out["code"], np.float32)
    n, dim = code.shape
    embedding = pa.ListArray.from_arrays(
        pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)),
        pa.array(code.reshape(-1), pa.float32()),
    )
    ids = pa.array(list(ids), pa.string())
    labels = pa.array(np.asarray(labels), pa.int64())
    rows = pa.Table.from_arrays(
        [ids, pa.array([split] * n, pa.string()), labels, embedding], schema=SCHEMA
    )
    if "score" not in out:
        return rows, None
    return rows, pa.Table.from_arrays(
        [
            ids,
            labels,
            pa.array(np.asarray(out["score"]), pa.float32()),
            pa.array(np.asarray(out["is_anomaly"]), pa.bool_()),
            *(pa.array(np.asarray(out[f"score_{k}"]), pa.float32()) for k in SCORES),
        ],
        schema=SCORES_SCHEMA,
    )


def _signature(loaded, score: bool):
    """The function of the loaded SavedModel both embedding paths call: images_float32
    (code, score, is_anomaly) on the scored split, encode (code) on the others."""
    return loaded.signatures["images_float32" if score else "encode"]


class EncodeBatches(beam.DoFn):
    """Serialized tf.Examples (a list) -> one pyarrow Table of (id, split, label, embedding);
    with `score`, also one Table of (id, label, score, is_anomaly) on the SCORES_TAG output."""

    def __init__(self, saved_model_dir: str, split: str, score: bool = False):
        self.saved_model_dir, self.split, self.score = saved_model_dir, split, score
        self.examples = beam.metrics.Metrics.counter("export", f"embeddings_{split}")

    def setup(self):
        self._fn = _signature(tf.saved_model.load(self.saved_model_dir), self.score)
        self._spec = examples_io.feature_spec((F.IMAGE,))

    def process(self, batch):
        parsed = tf.io.parse_example(tf.constant(batch), self._spec)
        images = tf.reshape(parsed[F.IMAGE], [-1, F.HEIGHT, F.WIDTH, 1])
        out = {k: v.numpy() for k, v in self._fn(images=images).items()}
        rows, scored = tables(
            self.split, [s.decode() for s in parsed[F.ID].numpy()], parsed[F.LABEL].numpy(), out
        )
        self.examples.inc(rows.num_rows)
        yield rows
        if scored is not None:
            yield beam.pvalue.TaggedOutput(SCORES_TAG, scored)


def local_in_memory(beam_args) -> bool:
    """Whether the run's Beam options name Beam's local runner in its default in-memory
    mode, which runs every DoFn in this very process: the embeddings are then computed
    in-process (embed_in_process), the same function on the same batches without Beam's
    bundle, pickling and Arrow-coding overhead."""
    options = PipelineOptions(list(beam_args))
    runner = options.view_as(StandardOptions).runner
    mode = options.view_as(DirectOptions).direct_running_mode
    return runner in (None, "DirectRunner", "direct") and mode in (None, "in_memory")


def _splits(examples: Artifact) -> list[str]:
    splits = examples.splits or [s for s in SPLITS if gfile.exists(examples.split_uri(s))]
    if not splits:
        raise StageError(f"no splits found in the examples at {examples.uri}")
    return splits


@dataclass(frozen=True)
class Layout:
    """Where export writes the embeddings (of every split), the scores (of one split) and
    the projector files (of one split)."""

    splits: list[str]
    parquet_dir: str
    scores_dir: str
    projector_dir: str
    scored_split: str
    projector_split: str

    @classmethod
    def of(cls, embeddings_uri: str, splits: list[str]) -> Layout:
        """The Embeddings artifact's layout (the module docstring's "Outputs")."""
        return cls(
            splits,
            posixpath.join(embeddings_uri, PARQUET_SUBDIR),
            posixpath.join(embeddings_uri, SCORES_SUBDIR),
            posixpath.join(embeddings_uri, PROJECTOR_SUBDIR),
            scored_split=SCORED_SPLIT if SCORED_SPLIT in splits else splits[-1],
            projector_split=PROJECTED_SPLIT if PROJECTED_SPLIT in splits else splits[-1],
        )


@dataclass(frozen=True)
class Written:
    """What an embedding path wrote: rows per split, the embedding lengths seen, the rows of
    the projector files."""

    counts: dict[str, int]
    dims: set[int]
    projected: int


def embed_with_beam(
    examples: Artifact,
    layout: Layout,
    saved_model_dir: str,
    batch_size: int,
    beam_args: Sequence[str],
) -> None:
    """Embeddings of every split to the layout's parquet_dir; scores of its scored_split to
    its scores_dir."""
    with beam_jobs.pipeline(beam_args) as p:
        embedded = []
        for split in layout.splits:
            examples_io.shard_files(examples, split)  # fail early, naming the directory
            pattern = posixpath.join(examples.split_uri(split), F.SHARD_PATTERN)
            score = split == layout.scored_split
            encoded = (
                p
                | f"Read[{split}]"
                >> beam.io.ReadFromTFRecord(
                    pattern, compression_type=beam.io.filesystem.CompressionTypes.GZIP
                )
                | f"Batch[{split}]"
                >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
                | f"Encode[{split}]"
                >> beam.ParDo(EncodeBatches(saved_model_dir, split, score)).with_outputs(
                    SCORES_TAG, main="embeddings"
                )
            )
            embedded.append(encoded.embeddings)
            if score:
                _ = encoded[SCORES_TAG] | "WriteScores" >> beam.io.WriteToParquetBatched(
                    posixpath.join(layout.scores_dir, "scores"),
                    schema=SCORES_SCHEMA,
                    codec="snappy",
                    file_name_suffix=".parquet",
                )
        _ = (
            embedded
            | "Flatten" >> beam.Flatten()
            | "WriteParquet"
            >> beam.io.WriteToParquetBatched(
                posixpath.join(layout.parquet_dir, "embeddings"),
                schema=SCHEMA,
                codec="snappy",
                file_name_suffix=".parquet",
            )
        )


def embed_in_process(examples: Artifact, layout: Layout, loaded, batch_size: int) -> Written:
    """What embed_with_beam writes, computed here (`loaded`: the exported SavedModel,
    tf.saved_model.load): each split streamed in `batch_size` batches
    (examples_io.iter_split, in file order) through the same SavedModel functions, rows
    appended to one Parquet file per output (one row group per batch), the projector
    split's rows to the projector files as they come (file order: ingest writes the ids in
    order). Memory: one batch."""
    counts, dims = {}, set()
    emb_path = posixpath.join(layout.parquet_dir, "embeddings-00000-of-00001.parquet")
    scores_path = posixpath.join(layout.scores_dir, "scores-00000-of-00001.parquet")
    with (
        _ParquetOut(emb_path, SCHEMA) as emb_out,
        _ParquetOut(scores_path, SCORES_SCHEMA) as scores_out,
        _Projector(layout.projector_dir, layout.projector_split) as projector,
    ):
        for split in layout.splits:
            fn = _signature(loaded, split == layout.scored_split)
            counts[split] = 0
            for batch in examples_io.iter_split(
                examples, split, batch_size=batch_size, file_order=True
            ):
                out = {k: v.numpy() for k, v in fn(images=tf.constant(batch[F.IMAGE])).items()}
                rows, scored = tables(split, batch[F.ID], batch[F.LABEL], out)
                emb_out.write(rows)
                if scored is not None:
                    scores_out.write(scored)
                if split == layout.projector_split:
                    projector.write(out["code"], batch[F.LABEL], batch[F.ID])
                counts[split] += rows.num_rows
                dims.add(int(out["code"].shape[1]))
    return Written(counts, dims, projector.rows)


class _ParquetOut:
    """A Parquet file written one table at a time; not created when nothing is written."""

    def __init__(self, path: str, schema: pa.Schema):
        self.path, self.schema = path, schema
        self._file: _GFile | None = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._file = _GFile(self.path, "wb")
            self._writer = pq.ParquetWriter(
                pa.PythonFile(self._file, mode="w"), self.schema, compression="snappy"
            )
        self._writer.write_table(table)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()


class _GFile:
    """A GFile as pyarrow's PythonFile wants a file object (GFile has no `closed`)."""

    def __init__(self, path: str, mode: str):
        self._f, self.closed = gfile.GFile(path, mode), False

    def __getattr__(self, name):  # read, write, seek, tell, flush
        return getattr(self._f, name)

    def write(self, data) -> int:
        self._f.write(bytes(data))
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            self.closed = True


class _Projector:
    """TensorBoard projector files for one split, written as rows come."""

    def __init__(self, projector_dir: str, split: str):
        self.dir, self.split, self.rows = projector_dir, split, 0
        self._vectors: Any = None  # GFiles, opened on the first write
        self._metadata: Any = None

    def write(self, vectors, labels, ids) -> None:
        if self._vectors is None:
            gfile.makedirs(self.dir)
            self._vectors = gfile.GFile(posixpath.join(self.dir, "vectors.tsv"), "w")
            self._metadata = gfile.GFile(posixpath.join(self.dir, "metadata.tsv"), "w")
            # More than one column, so a header line (TensorBoard's metadata format).
            self._metadata.write("label\tid\n")
        buf = io.StringIO()
        np.savetxt(
            buf,
            np.asarray(vectors, np.float32).reshape(len(vectors), -1),
            fmt="%.6g",
            delimiter="\t",
        )
        self._vectors.write(buf.getvalue())
        self._metadata.write("".join(f"{label}\t{id_}\n" for label, id_ in zip(labels, ids)))
        self.rows += len(labels)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._vectors is None:
            return
        self._vectors.close()
        self._metadata.close()
        with gfile.GFile(posixpath.join(self.dir, "projector_config.pbtxt"), "w") as f:
            f.write(
                "embeddings {\n"
                f'  tensor_name: "{self.split}_embeddings"\n'
                '  tensor_path: "vectors.tsv"\n'
                '  metadata_path: "metadata.tsv"\n'
                "}\n"
            )


def parquet_files(parquet_dir: str) -> list[str]:
    files = sorted(gfile.glob(posixpath.join(parquet_dir, "*.parquet")))
    if not files:
        raise StageError(f"the export pipeline wrote no Parquet files to {parquet_dir}")
    return files


def iter_parquet(parquet_dir: str, columns=None, batch_rows: int = 8192):
    """The rows of every Parquet file in a directory, `batch_rows` at a time (pyarrow
    RecordBatches): bounded memory whatever the files' sizes."""
    for path in parquet_files(parquet_dir):
        f = _GFile(path, "rb")
        try:
            yield from pq.ParquetFile(pa.PythonFile(f, mode="r")).iter_batches(
                batch_size=batch_rows, columns=columns
            )
        finally:
            f.close()


def read_parquet(parquet_dir: str, columns=None) -> pa.Table:
    """All rows of a directory's Parquet files as one table (tests, small outputs)."""
    return pa.Table.from_batches(list(iter_parquet(parquet_dir, columns)))


def summarize_beam_output(layout: Layout) -> Written:
    """After embed_with_beam, one streaming pass over what it wrote: rows per split, the
    embedding lengths, and the projector files of the projector split, sorted by id (Beam
    writes rows in no set order; the only split held in memory is that one)."""
    projector_split = layout.projector_split
    counts: dict[str, int] = {}
    dims: set[int] = set()
    picked = []
    for batch in iter_parquet(layout.parquet_dir):
        table = pa.Table.from_batches([batch])
        per_split = pc.value_counts(table["split"])
        for split, n in zip(
            per_split.field("values").to_pylist(), per_split.field("counts").to_pylist()
        ):
            counts[split] = counts.get(split, 0) + n
        dims.update(pc.unique(pc.list_value_length(table["embedding"])).to_pylist())
        picked.append(table.filter(pc.equal(table["split"], projector_split)))
    rows = pa.concat_tables(picked).sort_by("id") if picked else None
    projected = 0
    if rows is not None and rows.num_rows:
        with _Projector(layout.projector_dir, projector_split) as projector:
            projector.write(
                np.asarray(rows["embedding"].combine_chunks().flatten(), np.float32).reshape(
                    rows.num_rows, -1
                ),
                rows["label"].to_pylist(),
                rows["id"].to_pylist(),
            )
        projected = projector.rows
    return Written(counts, dims, projected)


def run(
    params: ExportParams,
    ctx: ExecutionContext,
    *,
    model: Artifact,
    examples: Artifact,
    scorer: Artifact,
    saved_model: Artifact,
    embeddings: Artifact,
) -> dict:
    log = ctx.log
    info = model_io.read_model_json(model)
    net = model_io.load_model(model)
    layout = Layout.of(embeddings.uri, _splits(examples))
    t0 = time.perf_counter()
    threshold = _Threshold.of(scorer, params.score, log)
    served = _write_saved_model(net, saved_model, threshold, examples, log, started=t0)
    lite = _write_tflite(net, threshold, saved_model, served, log)
    _record_saved_model(saved_model, info, threshold, served, lite)
    embedded = _embed_and_score(examples, layout, served, params.batch_size, ctx)
    _record_embeddings(embeddings, layout, embedded, served, threshold)
    return _metrics(threshold, served, lite, embedded, started=t0)


@dataclass(frozen=True)
class _Threshold:
    """The served score and its threshold, as the novelty stage fitted them (the scorer)."""

    fitted: Fitted
    score: str  # export.score: the score served as score / is_anomaly
    value: float
    quantile: float
    examples: int  # validation examples it was calibrated on
    holdout_labels: list[int]

    @classmethod
    def of(cls, scorer: Artifact, score: str, log) -> _Threshold:
        fitted = Fitted.load(scorer.uri)
        p = scorer.properties
        threshold = cls(
            fitted,
            score,
            fitted.thresholds[score],
            float(p["threshold_quantile"]),
            int(p["validation_examples"]),
            [c for c in range(F.NUM_CLASSES) if c not in p["classes"]],
        )
        log.info(
            "export: serving the %s score, anomaly threshold %.6g (the %g quantile of %d "
            "validation scores, from the scorer)",
            score,
            threshold.value,
            threshold.quantile,
            threshold.examples,
        )
        return threshold


@dataclass(frozen=True)
class _Served:
    """The SavedModel as written and loaded back, with the round-trip check's test images
    and the SavedModel's images_float32 outputs on them."""

    dir: str
    loaded: object  # tf.saved_model.load(dir): the round trip and the embeddings use it
    latent_dim: int
    score_name: str
    roundtrip_max_diff: float
    images: np.ndarray
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class _Embedded:
    """The embeddings and scores as written and checked."""

    counts: dict[str, int]  # rows per split, in split order
    projected: int  # rows of the projector files
    scored: int  # rows of the scores
    flagged: int  # of which is_anomaly

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _write_saved_model(
    net, saved_model: Artifact, threshold: _Threshold, examples: Artifact, log, *, started: float
) -> _Served:
    """The SavedModel with the scorer's constants and the threshold baked in, loaded back
    once and checked against the model (saved_model.max_diff)."""
    sm_dir = posixpath.join(saved_model.uri, SAVED_MODEL_SUBDIR)
    signatures.export(net, sm_dir, threshold.fitted, threshold.score)
    loaded = tf.saved_model.load(sm_dir)
    diff, images, outputs = _roundtrip_check(net, threshold, sm_dir, loaded, examples)
    log.info(
        "export: SavedModel (%s) written to %s in %.1fs; reload max diff %.2g",
        ", ".join(signatures.SIGNATURES),
        sm_dir,
        time.perf_counter() - started,
        diff,
    )
    return _Served(sm_dir, loaded, int(net.latent_dim), threshold.score, diff, images, outputs)


def _roundtrip_check(net, threshold: _Threshold, saved_model_dir: str, loaded, examples):
    """saved_model.max_diff(SavedModel images_float32, in-memory model) on a few test
    images, over reconstruction, code and every score (`loaded`: the SavedModel at
    saved_model_dir). Returns (diff, images, SavedModel outputs)."""
    split = "test" if "test" in _splits(examples) else _splits(examples)[0]
    x = next(iter(examples_io.dataset(examples, split, 64, cache=False)))[0]
    exported = {k: v.numpy() for k, v in loaded.signatures["images_float32"](images=x).items()}
    expected = Scorer(net, threshold.fitted).forward(x)["scores"]
    diff = max(
        signatures.max_diff(exported["reconstruction"], net.reconstruct(x)),
        signatures.max_diff(exported["code"], net.encode(x)),
        signatures.max_diff(exported["score"], expected[threshold.score]),
        *(signatures.max_diff(exported[f"score_{k}"], expected[k]) for k in SCORES),
    )
    if not diff <= ROUNDTRIP_ATOL:
        raise StageError(
            f"the SavedModel at {saved_model_dir} does not reproduce the model: "
            f"max difference {diff:g} > {ROUNDTRIP_ATOL:g} (saved_model.max_diff)"
        )
    return diff, x.numpy(), exported


def _write_tflite(net, threshold: _Threshold, saved_model: Artifact, served: _Served, log) -> dict:
    """The TFLite models (tflite.export), checked on CHECK_IMAGES of the round trip's images
    against the SavedModel's outputs on them."""
    t0 = time.perf_counter()
    lite = tflite.export(
        net,
        threshold.fitted,
        threshold.score,
        posixpath.join(saved_model.uri, tflite.TFLITE_SUBDIR),
        served.images[:CHECK_IMAGES],
        {k: v[:CHECK_IMAGES] for k, v in served.outputs.items()},
    )
    log.info(
        "export: TFLite %s in %.1fs; outputs %s; max diff vs SavedModel %s%s",
        ", ".join(f"{v} {n:,} bytes" for v, n in lite["bytes"].items()) or "not written",
        time.perf_counter() - t0,
        ", ".join(lite["outputs"]) or "none",
        ", ".join(f"{v} {d:.2g}" for v, d in lite["max_diff"].items()) or "-",
        "".join(f"; not converted: {what}: {why}" for what, why in lite["not_converted"].items()),
    )
    return lite


def _record_saved_model(
    saved_model: Artifact,
    info: dict,
    threshold: _Threshold,
    served: _Served,
    lite: dict,
) -> None:
    saved_model.properties.update(
        {
            "path": SAVED_MODEL_SUBDIR,
            "signatures": list(signatures.SIGNATURES),
            "latent_dim": served.latent_dim,
            "variant": info["variant"],
            "serving_input": (
                f"serialized tf.Example as ingest writes it: feature {F.IMAGE!r} "
                f"int64[{F.PIXELS}], raw pixels 0..255 ({F.ID!r}, {F.LABEL!r} "
                "ignored)"
            ),
            "threshold": threshold.value,
            "threshold_quantile": threshold.quantile,
            "score_name": served.score_name,
            "score_outputs": [f"score_{k}" for k in SCORES],
            "threshold_examples": threshold.examples,
            "threshold_holdout_labels": threshold.holdout_labels,
            "tflite_dir": tflite.TFLITE_SUBDIR,
            "tflite_files": lite["files"],
            "tflite_bytes": lite["bytes"],
            "tflite_max_diff": lite["max_diff"],
            "tflite_outputs": lite["outputs"],
            "tflite_input": lite["input"],
            "tflite_signature": lite["signature"],
            "tflite_not_converted": lite["not_converted"],
        }
    )


def _embed_and_score(
    examples: Artifact, layout: Layout, served: _Served, batch_size: int, ctx: ExecutionContext
) -> _Embedded:
    """Every split's embeddings and the scored split's scores, in-process or with Beam (the
    module docstring), then checked against the examples' counts."""
    t0 = time.perf_counter()
    gfile.makedirs(layout.parquet_dir)
    gfile.makedirs(layout.scores_dir)
    in_process = local_in_memory(ctx.beam_args)
    ctx.log.info(
        "export: embedding splits %s and scoring %s %s",
        ", ".join(layout.splits),
        layout.scored_split,
        "in-process (Beam's local in-memory runner would run it here too)"
        if in_process
        else f"with Beam ({' '.join(ctx.beam_args)})",
    )
    if in_process:
        written = embed_in_process(examples, layout, served.loaded, batch_size)
    else:
        embed_with_beam(examples, layout, served.dir, batch_size, ctx.beam_args)
        written = summarize_beam_output(layout)
    counts = _checked_counts(written, examples, layout, served.latent_dim)
    embedded = _Embedded(counts, written.projected, *_count_scores(layout, counts))
    ctx.log.info(
        "export: %d embeddings (%s) of dim %d, %d %s scores (%d above the threshold) "
        "in %.1fs; projector: %d %s rows",
        embedded.total,
        ", ".join(f"{s} {n}" for s, n in counts.items()),
        served.latent_dim,
        embedded.scored,
        layout.scored_split,
        embedded.flagged,
        time.perf_counter() - t0,
        embedded.projected,
        layout.projector_split,
    )
    return embedded


def _checked_counts(
    written: Written, examples: Artifact, layout: Layout, latent_dim: int
) -> dict[str, int]:
    """Rows per split, refused unless they match the examples' counts and every embedding
    has latent_dim values."""
    counts = {s: written.counts.get(s, 0) for s in layout.splits}
    expected = examples.properties.get("counts") or {}
    wrong = {
        s: (counts[s], expected[s])
        for s in layout.splits
        if s in expected and counts[s] != int(expected[s])
    }
    if wrong:
        raise StageError(
            f"embedding count mismatch (written, examples) per split: {wrong} "
            f"in {layout.parquet_dir}"
        )
    if written.dims != {latent_dim}:
        raise StageError(f"embedding lengths {sorted(written.dims)} != latent_dim {latent_dim}")
    return counts


def _count_scores(layout: Layout, counts: dict[str, int]) -> tuple[int, int]:
    """(rows, flagged rows) of the scores, refused unless one per scored example."""
    scored, flagged = 0, 0
    for batch in iter_parquet(layout.scores_dir, columns=["is_anomaly"]):
        scored += batch.num_rows
        flagged += int(pc.sum(batch.column(0).cast(pa.int64())).as_py() or 0)
    if scored != counts[layout.scored_split]:
        raise StageError(
            f"{scored} scores in {layout.scores_dir} for the "
            f"{counts[layout.scored_split]} {layout.scored_split} examples"
        )
    return scored, flagged


def _record_embeddings(
    embeddings: Artifact,
    layout: Layout,
    embedded: _Embedded,
    served: _Served,
    threshold: _Threshold,
) -> None:
    embeddings.properties.update(
        {
            "parquet_dir": PARQUET_SUBDIR,
            "projector_dir": PROJECTOR_SUBDIR,
            "projector_split": layout.projector_split,
            "counts": embedded.counts,
            "latent_dim": served.latent_dim,
            "columns": SCHEMA.names,
            "scores_dir": SCORES_SUBDIR,
            "scores_split": layout.scored_split,
            "scores_columns": SCORES_SCHEMA.names,
            "score_name": served.score_name,
            "threshold": threshold.value,
        }
    )


def _metrics(
    threshold: _Threshold,
    served: _Served,
    lite: dict,
    embedded: _Embedded,
    *,
    started: float,
) -> dict:
    return {
        "embedding_counts": embedded.counts,
        "embeddings": embedded.total,  # all splits together
        "latent_dim": served.latent_dim,
        "roundtrip_max_diff": served.roundtrip_max_diff,
        "threshold": threshold.value,
        "threshold_quantile": threshold.quantile,
        "threshold_examples": threshold.examples,
        "score_name": served.score_name,
        "scored_examples": embedded.scored,
        "flagged_examples": embedded.flagged,
        "tflite_float32_bytes": lite["bytes"].get("float32"),
        "tflite_int8_bytes": lite["bytes"].get("int8"),
        "tflite_float32_max_diff": lite["max_diff"].get("float32"),
        "tflite_int8_max_diff": lite["max_diff"].get("int8"),
        "tflite_not_converted": lite["not_converted"],
        "export_seconds": round(time.perf_counter() - started, 2),
    }
