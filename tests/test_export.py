"""export component: SavedModel signatures in a fresh process on raw inputs (no skew with the
pipeline's own path), the calibrated threshold, Parquet embeddings and test scores,
projector, TFLite models."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from components import examples_io
from components import features as F
from components.evaluate.executor import predict
from components.export import saved_model as signatures
from components.export import tflite
from components.export.saved_model import SCORE_OUTPUTS
from components.novelty.component import SCORES
from components.novelty.scores import Fitted, compiled
from components.train import model_io
from tests.helpers import (
    fit_scorer,
    output_artifacts,
    params,
    run_executor,
    synthetic_images,
    write_examples_artifact,
)

SIZES = {"train": (320, 1), "validation": (64, 2), "test": (128, 3)}
HOLDOUT = (9,)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Raw examples as ingest writes them -> transform -> a dense model trained for 2 epochs
    -> its scorer and export, class 9 held out of training and of the scorer's fit."""
    root = tmp_path_factory.mktemp("export")
    raw = write_examples_artifact(
        str(root / "raw"),
        {s: synthetic_images(n, seed) for s, (n, seed) in SIZES.items()},
        normalized=False,
    )
    transformed = output_artifacts("transform", root / "transform")
    raw_anomalies = output_artifacts("validate", root / "validate")["anomalies"]
    raw_anomalies.properties.update(splits=list(SIZES), anomalous_splits=[])
    run_executor(
        "transform",
        params("transform"),
        {"examples": raw, "raw_anomalies": raw_anomalies},
        transformed,
    )
    examples = transformed["transformed_examples"]
    trained = output_artifacts("train", root)
    outputs = output_artifacts("export", root)
    train_params = params(
        "train",
        "model.variant=dense",
        "model.latent_dim=8",
        "train.epochs=2",
        "train.early_stopping_patience=0",
    )
    run_executor("train", train_params, {"examples": examples}, trained)
    holdout = f"data.holdout_labels={list(HOLDOUT)}"
    scorer = fit_scorer(examples, trained["model"], root, holdout)
    # batch 100 (no config key sets it): the 320 train examples span several batches, one of
    # them partial.
    export_params = dataclasses.replace(params("export", holdout), batch_size=100)
    inputs = {"examples": examples, "model": trained["model"], "scorer": scorer}
    metrics = run_executor("export", export_params, inputs, outputs)
    return {
        "metrics": metrics,
        "model": trained["model"],
        "scorer": scorer,
        "fitted": Fitted.load(scorer.uri),
        "raw": raw,
        "examples": examples,
        "params": export_params,
        **outputs,
    }


@pytest.fixture(scope="module")
def model(exported):
    return model_io.load_model(exported["model"])


def _saved_model_dir(exported) -> str:
    sm = exported["saved_model"]
    return os.path.join(sm.uri, sm.properties["path"])


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """Every signature called in a fresh process with plain TensorFlow on the raw test
    examples (serialized records of the raw shards, and their pixels as uint8)."""
    tmp = tmp_path_factory.mktemp("served")
    raw_shards = examples_io.shard_files(exported["raw"], "test")
    images = examples_io.load_split(exported["examples"], "test")["image"][:16]
    np.save(tmp / "images.npy", images)
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({_saved_model_dir(exported)!r})
        sigs = loaded.signatures
        records = [r.numpy() for r in tf.data.TFRecordDataset({raw_shards!r}, "GZIP")]
        parsed = tf.io.parse_example(tf.constant(records), {{
            "id": tf.io.FixedLenFeature([], tf.string),
            "image": tf.io.FixedLenFeature([784], tf.int64)}})
        uint8 = tf.cast(tf.reshape(parsed["image"], [-1, 28, 28]), tf.uint8)
        x = tf.constant(np.load({str(tmp / "images.npy")!r}))
        out = {{"ids": parsed["id"].numpy().astype("S")}}
        for key, value in sigs["serving_default"](examples=tf.constant(records)).items():
            out["serving_" + key] = value.numpy()
        for key, value in sigs["images_uint8"](images=uint8).items():
            out["uint8_" + key] = value.numpy()
        for key, value in sigs["score"](examples=tf.constant(records)).items():
            out["score_" + key] = value.numpy()
        out["recon"] = sigs["reconstruct"](images=x)["reconstruction"].numpy()
        out["code"] = sigs["encode"](images=x)["code"].numpy()
        out["decoded"] = sigs["decode"](code=tf.constant(out["code"]))["images"].numpy()
        np.savez({str(tmp / "out.npz")!r}, **out)
        # The serving contract, enforced in the graph: bad inputs, plain TensorFlow.
        errors = {{}}
        bad = tf.train.Example(features=tf.train.Features(feature={{"image": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[1000] * 784))}})).SerializeToString()
        for name, call in (
                ("uint8_shape",
                 lambda: sigs["images_uint8"](images=tf.zeros([1, 14, 56], tf.uint8))),
                ("serving_range", lambda: sigs["serving_default"](examples=tf.constant([bad]))),
                ("float_range",
                 lambda: sigs["images_float32"](images=tf.fill([1, 28, 28, 1], 255.0)))):
            try:
                call()
                errors[name] = "accepted"
            except Exception as e:
                errors[name] = type(e).__name__ + ": " + str(e)
        print(json.dumps(errors))
        print(json.dumps({{k: sorted(v.structured_outputs) for k, v in sigs.items()}}))
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = dict(np.load(tmp / "out.npz"))
    out["ids"] = [i.decode() for i in out["ids"]]
    lines = proc.stdout.strip().splitlines()
    return {
        "signatures": json.loads(lines[-1]),
        "errors": json.loads(lines[-2]),
        "images": images,
        **out,
    }


@pytest.fixture(scope="module")
def loaded(exported):
    """The exported SavedModel loaded in this process with plain TensorFlow."""
    return tf.saved_model.load(_saved_model_dir(exported))


def _raw_example(pixels) -> bytes:
    """A serialized tf.Example as ingest writes it, with these int64 pixels."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                F.IMAGE: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(p) for p in pixels])
                )
            }
        )
    ).SerializeToString()


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _pipeline_path(exported, model, ids):
    """What the pipeline computes for these test examples: transform's normalized images
    (read back from its output), then the model as evaluate runs it."""
    test = examples_io.load_split(exported["examples"], "test")
    index = {i: n for n, i in enumerate(test["id"])}
    x = test["image"][[index[i] for i in ids]]
    scores = compiled(model, exported["fitted"])(x)["scores"]
    return {
        "reconstruction": predict(model.reconstruct, x),
        "code": predict(model.encode, x),
        "score": scores[exported["params"].score],
        **{f"score_{k}": scores[k] for k in SCORES},
        "labels": test["label"],
        "ids": test["id"],
    }


def test_signatures_and_their_outputs(served):
    every = sorted(["code", "is_anomaly", "reconstruction", "score", *SCORE_OUTPUTS])
    assert served["signatures"] == {
        "serving_default": every,
        "images_uint8": every,
        "images_float32": every,
        "score": sorted(["is_anomaly", "score", *SCORE_OUTPUTS]),
        "encode": ["code"],
        "decode": ["images"],
        "reconstruct": ["reconstruction"],
    }
    n = 128
    assert served["serving_reconstruction"].shape == (n, 28, 28, 1)
    assert served["serving_code"].shape == (n, 8)
    assert served["serving_score"].shape == (n,) and served["serving_score"].dtype == np.float32
    assert served["serving_is_anomaly"].shape == (n,) and served["serving_is_anomaly"].dtype == bool


def test_serving_default_on_raw_examples_matches_the_pipeline_path(served, exported, model):
    """(no skew) raw examples through serving_default == transform's normalization, then the
    model as evaluate runs it."""
    ref = _pipeline_path(exported, model, served["ids"])
    for key in ("reconstruction", "code", "score", *SCORE_OUTPUTS):
        diff = signatures.max_diff(served["serving_" + key], ref[key])
        assert diff <= 1e-5, (key, diff)
    # The check can fail: the same examples un-normalized (what serving raw pixels without
    # the in-graph normalization would feed the model) are far off.
    raw_x = served["images"] * 255.0
    assert np.max(np.abs(predict(model.reconstruct, raw_x) - ref["reconstruction"][:16])) > 1e-2


def test_images_uint8_equals_serving_default(served):
    for key in ("reconstruction", "code", "score", "is_anomaly", *SCORE_OUTPUTS):
        np.testing.assert_array_equal(served["uint8_" + key], served["serving_" + key])


def test_score_signature_is_the_score_and_its_threshold(served, exported, model):
    ref = _pipeline_path(exported, model, served["ids"])
    np.testing.assert_allclose(served["score_score"], ref["score"], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(served["score_score"], served["serving_score"])
    served_name = exported["params"].score
    assert served_name == "combined"  # the config's default
    np.testing.assert_array_equal(served["score_score"], served[f"score_score_{served_name}"])
    for key in SCORE_OUTPUTS:  # every score, as the pipeline computes it
        assert signatures.max_diff(served["score_" + key], ref[key]) <= 1e-5, key
    threshold = exported["saved_model"].properties["threshold"]
    np.testing.assert_array_equal(
        served["score_is_anomaly"], served["score_score"] > np.float32(threshold)
    )
    assert 0 < served["score_is_anomaly"].sum() < len(served["ids"])  # both outcomes occur


def test_threshold_is_the_scorers_for_the_served_score(exported):
    """export bakes in the novelty stage's threshold of the served score (its calibration
    on validation is tests/test_novelty.py's)."""
    served, fitted = exported["params"].score, exported["fitted"]
    props = exported["saved_model"].properties
    assert props["threshold"] == fitted.thresholds[served]
    assert props["score_name"] == served
    assert props["threshold_quantile"] == exported["scorer"].properties["threshold_quantile"]
    assert props["threshold_examples"] == exported["scorer"].properties["validation_examples"]
    assert props["threshold_holdout_labels"] == list(HOLDOUT)
    assert props["score_outputs"] == list(SCORE_OUTPUTS)
    m = exported["metrics"]
    assert m["threshold"] == props["threshold"] and m["score_name"] == served


def test_scores_parquet_has_one_row_per_test_example(exported, model):
    emb = exported["embeddings"]
    scores_dir = os.path.join(emb.uri, emb.properties["scores_dir"])
    assert glob.glob(os.path.join(scores_dir, "*.parquet"))
    table = pq.read_table(scores_dir)
    assert table.column_names == ["id", "label", "score", "is_anomaly", *SCORE_OUTPUTS]
    rows = table.to_pydict()
    test = examples_io.load_split(exported["examples"], "test")
    assert sorted(rows["id"]) == sorted(test["id"]) and len(rows["id"]) == 128
    ref = _pipeline_path(exported, model, rows["id"])
    np.testing.assert_allclose(rows["score"], ref["score"], atol=1e-5, rtol=0)
    for key in SCORE_OUTPUTS:
        assert signatures.max_diff(rows[key], ref[key]) <= 1e-5, key
    label = dict(zip(test["id"], test["label"]))
    assert rows["label"] == [label[i] for i in rows["id"]]
    threshold = np.float32(exported["saved_model"].properties["threshold"])
    assert rows["is_anomaly"] == (np.asarray(rows["score"], np.float32) > threshold).tolist()
    m = exported["metrics"]
    assert m["scored_examples"] == 128 and m["flagged_examples"] == sum(rows["is_anomaly"])
    assert emb.properties["scores_split"] == "test"


def test_embeddings_parquet_has_every_example_once(exported, model):
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
    test = examples_io.load_split(exported["examples"], "test")
    expected = np.asarray(model.encode(test["image"]))
    by_id = {
        i: (lbl, v)
        for i, s, lbl, v in zip(rows["id"], rows["split"], rows["label"], rows["embedding"])
        if s == "test"
    }
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


def test_float_signatures_in_a_fresh_process_match_the_model(served, exported, model):
    assert exported["metrics"]["roundtrip_max_diff"] <= 1e-5
    images = served["images"]
    np.testing.assert_allclose(served["recon"], np.asarray(model.reconstruct(images)), atol=1e-5)
    assert served["recon"].shape == (16, 28, 28, 1) and served["code"].shape == (16, 8)
    np.testing.assert_allclose(served["decoded"], served["recon"], atol=1e-5)


def test_tflite_models_match_the_saved_model(exported):
    import tensorflow as tf

    sm = exported["saved_model"]
    props = sm.properties
    assert props["tflite_not_converted"] == {}
    assert props["tflite_outputs"] == list(signatures.OUTPUTS)
    paths = {
        v: os.path.join(sm.uri, props["tflite_dir"], f) for v, f in props["tflite_files"].items()
    }
    assert set(paths) == {"float32", "int8"}
    sizes = {v: os.path.getsize(p) for v, p in paths.items()}
    assert props["tflite_bytes"] == sizes
    assert sizes["int8"] < sizes["float32"]
    m = exported["metrics"]
    assert (m["tflite_float32_bytes"], m["tflite_int8_bytes"]) == (sizes["float32"], sizes["int8"])
    assert m["tflite_float32_max_diff"] <= tflite.FLOAT32_TOL

    # Independently of export's own check: other test images, compared here.
    images = examples_io.load_split(exported["examples"], "test")["image"][-6:]
    expected = tf.saved_model.load(_saved_model_dir(exported)).signatures["images_float32"](
        images=tf.constant(images)
    )
    with open(paths["float32"], "rb") as f:
        got = tflite.run_tflite(f.read(), images)
    for key in ("reconstruction", "code", "score", *SCORE_OUTPUTS):
        assert signatures.max_diff(got[key], expected[key].numpy()) <= 1e-5, key
    np.testing.assert_array_equal(got["is_anomaly"], expected["is_anomaly"].numpy())
    with open(paths["int8"], "rb") as f:
        quantized = tflite.run_tflite(f.read(), images)
    # dynamic-range int8 weights: close, not equal (reported, not asserted tightly)
    diff = np.max(np.abs(quantized["reconstruction"] - expected["reconstruction"].numpy()))
    assert 0 < diff < 0.5


def test_in_process_embeddings_equal_the_beam_pipelines(exported, tmp_path):
    """On Beam's local in-memory runner export embeds in-process (executor.local_in_memory);
    the Beam pipeline other runners get must write the same rows, scores and projector."""
    from components.export import executor

    assert executor.local_in_memory(()) and executor.local_in_memory(["--runner=DirectRunner"])
    assert not executor.local_in_memory(["--direct_running_mode=multi_processing"])
    assert not executor.local_in_memory(["--runner=PortableRunner"])
    examples, splits = exported["examples"], list(SIZES)
    dirs = {k: str(tmp_path / k) for k in ("parquet", "scores", "projector")}
    for d in ("parquet", "scores"):
        os.makedirs(dirs[d])
    layout = executor.Layout(
        splits,
        dirs["parquet"],
        dirs["scores"],
        dirs["projector"],
        scored_split="test",
        projector_split="test",
    )
    executor.embed_with_beam(
        examples, layout, _saved_model_dir(exported), 100, ["--runner=DirectRunner"]
    )
    beam = executor.summarize_beam_output(layout)
    assert beam.counts == {s: n for s, (n, _) in SIZES.items()} and beam.dims == {8}
    emb = exported["embeddings"]
    for prop, mine, keys in (
        ("parquet_dir", "parquet", ["split", "id"]),
        ("scores_dir", "scores", ["id"]),
    ):
        order = [(k, "ascending") for k in keys]
        ours = executor.read_parquet(os.path.join(emb.uri, emb.properties[prop])).sort_by(order)
        theirs = executor.read_parquet(dirs[mine]).sort_by(order)
        assert ours.num_rows == theirs.num_rows > 0 and ours.equals(theirs), prop
    for name in ("vectors.tsv", "metadata.tsv", "projector_config.pbtxt"):
        with (
            open(os.path.join(emb.uri, emb.properties["projector_dir"], name)) as f,
            open(os.path.join(dirs["projector"], name)) as g,
        ):
            assert f.read() == g.read(), name


# The serving contract (components/export/saved_model.py, "Contract"): every signature checks
# its input in the graph and rejects what it was not documented to take with an
# InvalidArgumentError naming the signature, the input and what was expected.
FLOAT_IMAGE_SIGNATURES = ("images_float32", "encode", "reconstruct")


def test_contract_is_enforced_by_plain_tensorflow_in_a_fresh_process(served):
    errors = served["errors"]
    assert errors["uint8_shape"].startswith("InvalidArgumentError: "), errors
    assert (
        "images_uint8: input images must have shape [N,28,28], got [1,14,56]"
        in errors["uint8_shape"]
    )
    assert (
        "serving_default: input examples: pixel values must be in 0..255, got min 1000, "
        "max 1000" in errors["serving_range"]
    ), errors
    assert (
        "images_float32: input images: values must be in [0, 1], got min 255, max 255"
        in errors["float_range"]
    ), errors


@pytest.mark.parametrize("signature", ["serving_default", "score"])
@pytest.mark.parametrize("value", [1000, -5, 256])
def test_example_signatures_reject_pixels_outside_0_255(loaded, signature, value):
    """(was: 1000 scored -4.1, unflagged) one bad pixel in one example of the batch."""
    pixels = np.full(F.PIXELS, 7)
    pixels[300] = value
    batch = tf.constant([_raw_example(np.full(F.PIXELS, 7)), _raw_example(pixels)])
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(
            f"{signature}: input examples: pixel values must be in 0..255, got min "
            f"{min(value, 7)}, max {max(value, 7)}"
        ),
    ):
        loaded.signatures[signature](examples=batch)


@pytest.mark.parametrize("pixels", [783, 785, 0])
def test_example_signatures_reject_a_wrong_pixel_count(loaded, pixels):
    batch = tf.constant([_raw_example(np.zeros(F.PIXELS)), _raw_example(np.zeros(pixels))])
    for signature in ("serving_default", "score"):
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=re.escape(
                f"{signature}: input examples: feature image must have 784 int64 values "
                f"per example, got {pixels} in example 1"
            ),
        ):
            loaded.signatures[signature](examples=batch)


@pytest.mark.parametrize("shape", [(2, 1), ()])
def test_example_signatures_reject_examples_not_a_vector(loaded, shape):
    examples = tf.reshape(
        tf.constant([_raw_example(np.zeros(F.PIXELS))] * int(np.prod(shape))), shape
    )
    for signature in ("serving_default", "score"):
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=re.escape(
                f"{signature}: input examples must have shape [N], got {_shape_text(shape)}"
            ),
        ):
            loaded.signatures[signature](examples=examples)


@pytest.mark.parametrize("shape", [(1, 14, 56), (2, 28, 14), (1, 28, 28, 1), (28, 28), (784,)])
def test_images_uint8_rejects_every_shape_but_n_28_28(loaded, shape):
    """(was: [1,14,56] and [2,28,14] silently reshaped: only 784 values per image counted)"""
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(
            f"images_uint8: input images must have shape [N,28,28], got {_shape_text(shape)}"
        ),
    ):
        loaded.signatures["images_uint8"](images=tf.zeros(shape, tf.uint8))


@pytest.mark.parametrize("signature", FLOAT_IMAGE_SIGNATURES)
@pytest.mark.parametrize("value", [255.0, -0.5, 1.001, np.inf])
def test_float_signatures_reject_values_outside_0_1(loaded, signature, value):
    """(was: 255.0 accepted) normalized inputs only: a raw pixel would be off by 255x."""
    x = np.full((2, 28, 28, 1), 0.5, np.float32)
    x[1, 3, 4, 0] = value
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(
            f"{signature}: input images: values must be in [0, 1], got min {min(value, 0.5):g}, "
            f"max {max(value, 0.5):g}"
        ),
    ):
        loaded.signatures[signature](images=tf.constant(x))


@pytest.mark.parametrize("signature", FLOAT_IMAGE_SIGNATURES + ("decode",))
def test_float_signatures_reject_nan(loaded, signature):
    arg, shape = ("code", (2, 8)) if signature == "decode" else ("images", (2, 28, 28, 1))
    x = np.full(shape, 0.5, np.float32)
    x.reshape(-1)[-1] = np.nan
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(f"{signature}: input {arg}: values must not be NaN"),
    ):
        loaded.signatures[signature](**{arg: tf.constant(x)})


@pytest.mark.parametrize("signature", FLOAT_IMAGE_SIGNATURES)
@pytest.mark.parametrize(
    "shape", [(1, 28, 28), (1, 14, 56, 1), (1, 28, 28, 3), (28, 28, 1), (1, 28, 28, 1, 1)]
)
def test_float_signatures_reject_every_shape_but_n_28_28_1(loaded, signature, shape):
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(
            f"{signature}: input images must have shape [N,28,28,1], got {_shape_text(shape)}"
        ),
    ):
        loaded.signatures[signature](images=tf.zeros(shape))


@pytest.mark.parametrize("shape", [(1, 3), (8,), (1, 8, 1), (2, 9)])
def test_decode_rejects_every_shape_but_n_latent(loaded, shape):
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape(f"decode: input code must have shape [N,8], got {_shape_text(shape)}"),
    ):
        loaded.signatures["decode"](code=tf.zeros(shape))


def test_decode_rejects_infinite_codes(loaded):
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=re.escape("decode: input code: values must be finite")
    ):
        loaded.signatures["decode"](code=tf.constant([[0.0] * 7 + [np.inf]]))


def test_the_contract_accepts_every_documented_input(loaded):
    """The checks reject nothing the docs allow: pixels 0 and 255, floats 0.0 and 1.0, any
    code, and empty batches."""
    sigs = loaded.signatures
    edges = tf.constant([_raw_example(np.zeros(F.PIXELS)), _raw_example(np.full(F.PIXELS, 255))])
    assert sigs["serving_default"](examples=edges)["score"].shape == (2,)
    assert sigs["score"](examples=edges)["score"].shape == (2,)
    uint8 = np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])
    assert sigs["images_uint8"](images=tf.constant(uint8))["code"].shape == (2, 8)
    floats = tf.constant(uint8[..., None] / np.float32(255.0))
    for name in FLOAT_IMAGE_SIGNATURES:
        assert all(
            np.all(np.isfinite(v)) for v in sigs[name](images=floats).values() if v.dtype != tf.bool
        )
    assert sigs["decode"](code=tf.constant([[-1e30] * 8, [1e30] * 8]))["images"].shape == (
        2,
        28,
        28,
        1,
    )
    for name, arg, value in (
        ("serving_default", "examples", tf.zeros([0], tf.string)),
        ("score", "examples", tf.zeros([0], tf.string)),
        ("images_uint8", "images", tf.zeros([0, 28, 28], tf.uint8)),
        ("images_float32", "images", tf.zeros([0, 28, 28, 1])),
        ("encode", "images", tf.zeros([0, 28, 28, 1])),
        ("reconstruct", "images", tf.zeros([0, 28, 28, 1])),
        ("decode", "code", tf.zeros([0, 8])),
    ):
        assert all(v.shape[0] == 0 for v in sigs[name](**{arg: value}).values()), name
