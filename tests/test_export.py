"""export component: SavedModel signatures in a fresh process, Parquet embeddings, projector."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

from components import examples_io
from components.train import model_io
from tests.helpers import output_artifacts, params, run_executor


@pytest.fixture(scope="module")
def exported(normalized_examples, tmp_path_factory):
    """A dense model trained for 2 epochs on the fixture, then exported."""
    root = tmp_path_factory.mktemp("export")
    trained = output_artifacts("train", root)
    outputs = output_artifacts("export", root)
    train_params = params("train", "model.variant=dense", "model.latent_dim=8", "train.epochs=2",
                          "train.early_stopping_patience=0")
    run_executor("train", train_params, {"examples": normalized_examples}, trained)
    # batch 100 (no config key sets it): the 320 train examples span several batches, one of
    # them partial.
    export_params = dataclasses.replace(params("export"), batch_size=100)
    metrics = run_executor("export", export_params,
                           {"examples": normalized_examples, "model": trained["model"]}, outputs)
    return {"metrics": metrics, "model": trained["model"], **outputs}


def test_embeddings_parquet_has_every_example_once(exported, normalized_examples):
    emb = exported["embeddings"]
    parquet_dir = os.path.join(emb.uri, emb.properties["parquet_dir"])
    files = glob.glob(os.path.join(parquet_dir, "*.parquet"))
    assert files
    table = pq.read_table(parquet_dir)
    assert table.num_rows == 512
    assert table.column_names == ["id", "split", "label", "embedding"]
    assert str(table.schema.field("embedding").type) == "list<item: float>"
    assert str(table.schema.field("label").type) == "int64"
    assert {len(v) for v in table["embedding"].to_pylist()} == {8}

    rows = table.to_pydict()
    assert len(set(rows["id"])) == 512
    counts = {s: rows["split"].count(s) for s in ("train", "validation", "test")}
    assert counts == {"train": 320, "validation": 64, "test": 128}
    m = exported["metrics"]
    assert m["embedding_counts"] == counts and m["embeddings"] == 512
    assert m["latent_dim"] == 8
    assert emb.properties["counts"] == counts

    # The vectors are the model's code of the clean images, with the right id and label.
    test = examples_io.load_split(normalized_examples, "test")
    model = model_io.load_model(exported["model"])
    expected = np.asarray(model.encode(test["image"]))
    by_id = {i: (lbl, v) for i, s, lbl, v in zip(rows["id"], rows["split"], rows["label"],
                                                  rows["embedding"]) if s == "test"}
    got = np.array([by_id[i][1] for i in test["id"]], np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [by_id[i][0] for i in test["id"]] == test["label"].tolist()


def test_projector_files_for_the_test_split(exported):
    emb = exported["embeddings"]
    d = os.path.join(emb.uri, emb.properties["projector_dir"])
    vectors = np.loadtxt(os.path.join(d, "vectors.tsv"), delimiter="\t")
    assert vectors.shape == (128, 8)
    with open(os.path.join(d, "metadata.tsv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "label\tid" and len(lines) == 1 + 128
    assert all(line.split("\t")[1].startswith("test-") for line in lines[1:])
    config = open(os.path.join(d, "projector_config.pbtxt")).read()
    assert 'tensor_path: "vectors.tsv"' in config and 'metadata_path: "metadata.tsv"' in config


def test_saved_model_in_a_fresh_process_matches_the_model(exported, normalized_examples,
                                                          tmp_path):
    sm = exported["saved_model"]
    path = os.path.join(sm.uri, sm.properties["path"])
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert exported["metrics"]["roundtrip_max_abs_diff"] <= 1e-5

    test = examples_io.load_split(normalized_examples, "test")
    images = test["image"][:16]
    np.save(tmp_path / "images.npy", images)
    shard = examples_io.shard_files(normalized_examples, "test")[0]

    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({path!r})
        sigs = loaded.signatures
        x = tf.constant(np.load({str(tmp_path / 'images.npy')!r}))
        recon = sigs["reconstruct"](images=x)["reconstruction"].numpy()
        code = sigs["encode"](images=x)["code"].numpy()
        decoded = sigs["decode"](code=tf.constant(code))["images"].numpy()
        serialized = [r.numpy() for r in tf.data.TFRecordDataset({shard!r}, "GZIP").take(5)]
        served = sigs["serving_default"](examples=tf.constant(serialized))
        np.savez({str(tmp_path / 'out.npz')!r}, recon=recon, code=code, decoded=decoded,
                 served_recon=served["reconstruction"].numpy(), served_code=served["code"].numpy())
        print(json.dumps(sorted(sigs.keys())))
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        "decode", "encode", "reconstruct", "serving_default"]
    out = np.load(tmp_path / "out.npz")

    model = model_io.load_model(exported["model"])
    np.testing.assert_allclose(out["recon"], np.asarray(model.reconstruct(images)), atol=1e-5)
    assert out["recon"].shape == (16, 28, 28, 1) and out["code"].shape == (16, 8)
    np.testing.assert_allclose(out["decoded"], out["recon"], atol=1e-5)
    # serving_default on serialized tf.Examples (the shard's first 5 records).
    import tensorflow as tf
    records = list(tf.data.TFRecordDataset(shard, "GZIP").take(5))
    x5 = tf.reshape(tf.io.parse_example(tf.stack(records), examples_io.feature_spec())["image"],
                    (-1, 28, 28, 1))
    assert out["served_recon"].shape == (5, 28, 28, 1) and out["served_code"].shape == (5, 8)
    np.testing.assert_allclose(out["served_recon"], np.asarray(model.reconstruct(x5)), atol=1e-5)
    np.testing.assert_allclose(out["served_code"], np.asarray(model.encode(x5)), atol=1e-5)
