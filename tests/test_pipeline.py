"""The whole pipeline through the CLI on a few hundred real-shaped examples: six stages
chained on Beam, artifacts committed atomically, lineage in ML Metadata, caching,
exit codes, and a SavedModel that reloads in a fresh process with the same outputs.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import artifacts, cli, fingerprint
from pipeline.errors import EXIT_CONFIG, EXIT_DATA, EXIT_OK, EXIT_STAGE
from pipeline.metadata import MetadataStore
from tests.conftest import synthetic_images, write_idx

STAGES = ["ingest", "validate", "transform", "train", "evaluate", "export"]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    write_idx(d, "train", *synthetic_images(300, 1))
    write_idx(d, "t10k", *synthetic_images(120, 2))
    return d


def _args(root, run_id, source, *extra):
    return ["run", "--root", str(root), "--run-id", run_id,
            "--set", f"data.source=idx:{source}", "--set", "data.num_shards=2",
            "--set", "train.epochs=1", "--set", "train.batch_size=64", *extra]


def _summary(root, run_id):
    with open(os.path.join(root, "runs", run_id, "summary.json")) as f:
        return json.load(f)


def _tree_digest(path):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            p = os.path.join(d, name)
            h.update(p.encode())
            h.update(open(p, "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, idx_dir):
    root = tmp_path_factory.mktemp("root")
    code = cli.main(_args(root, "r1", idx_dir))
    return root, code


@pytest.mark.slow
def test_end_to_end_all_stages(first_run):
    root, code = first_run
    assert code == EXIT_OK
    s = _summary(root, "r1")
    assert s["status"] == "succeeded" and s["exit_code"] == 0
    assert list(s["stages"]) == STAGES
    for name in STAGES:
        st = s["stages"][name]
        assert st["status"] == "ran", name
        assert st["duration_s"] > 0
        for uri in st["artifacts"].values():
            assert artifacts.is_committed(uri), uri
    ev = s["stages"]["evaluate"]["metrics"]
    assert ev["bce"] >= ev["bce_floor"] > 0
    assert ev["bce_excess"] == pytest.approx(ev["bce"] - ev["bce_floor"], abs=1e-5)
    assert ev["psnr"] > 0 and 0 <= ev["probe_accuracy"] <= 1
    assert np.isfinite(s["stages"]["train"]["metrics"]["best_val_loss"])
    # nothing half-written left behind
    for d, dirs, _ in os.walk(os.path.join(root, "artifacts")):
        assert not [x for x in dirs if x.startswith(artifacts.TMP_PREFIX)], d


@pytest.mark.slow
def test_embeddings_cover_every_example(first_run):
    root, _ = first_run
    s = _summary(root, "r1")
    counts = s["stages"]["ingest"]["metrics"]
    emb_uri = s["stages"]["export"]["artifacts"]["embeddings"]
    table = pq.read_table(os.path.join(emb_uri, "parquet"))
    assert table.num_rows == counts["num_examples"] == 420
    assert set(table.column("split").to_pylist()) == {"train", "validation", "test"}
    assert len(set(table.column("id").to_pylist())) == 420
    dim = s["stages"]["export"]["metrics"]["latent_dim"]
    assert all(len(v) == dim for v in table.column("embedding").to_pylist()[:10])
    assert os.path.exists(os.path.join(emb_uri, "projector", "projector_config.pbtxt"))


@pytest.mark.slow
def test_saved_model_reloads_in_fresh_process_with_same_outputs(first_run, tmp_path):
    root, _ = first_run
    s = _summary(root, "r1")
    from components.train.model_io import load_model
    from pipeline.artifacts import load

    model = load_model(load("Model", s["stages"]["train"]["artifacts"]["model"]))
    x = synthetic_images(16, 9)[0].astype(np.float32)[..., None] / 255.0
    np.save(tmp_path / "x.npy", x)
    expected = model.reconstruct(x).numpy()
    sm = os.path.join(s["stages"]["export"]["artifacts"]["saved_model"], "model")
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({sm!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "out = m.signatures['reconstruct'](tf.constant(x))\n"
        "np.save(sys.argv[1], list(out.values())[0].numpy())\n"
        "print(sorted(m.signatures.keys()))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "y.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'decode', 'encode', 'reconstruct', 'serving_default'" in proc.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


@pytest.mark.slow
def test_lineage_in_ml_metadata(first_run):
    root, _ = first_run
    store = MetadataStore(os.path.join(root, "metadata.sqlite"))
    rows = store.run_executions("r1")
    assert [r["stage"] for r in sorted(rows, key=lambda r: STAGES.index(r["stage"]))] == STAGES
    assert all(r["state"] == "complete" for r in rows)
    s = _summary(root, "r1")
    for r in rows:
        assert r["outputs"] == s["stages"][r["stage"]]["artifacts"]
    # the transform execution consumed ingest's examples (INPUT event)
    import ml_metadata.proto.metadata_store_pb2 as pb
    transform = next(r for r in rows if r["stage"] == "transform")
    events = store.store.get_events_by_execution_ids([transform["execution_id"]])
    inputs = store.store.get_artifacts_by_id([e.artifact_id for e in events if e.type == pb.Event.INPUT])
    assert s["stages"]["ingest"]["artifacts"]["examples"] in {a.uri for a in inputs}


@pytest.mark.slow
def test_second_run_is_cached_and_param_change_reruns_downstream_only(first_run, idx_dir):
    root, _ = first_run
    assert cli.main(_args(root, "r2", idx_dir)) == EXIT_OK
    s2 = _summary(root, "r2")
    assert {st["status"] for st in s2["stages"].values()} == {"cached"}
    assert s2["stages"]["train"]["artifacts"] == _summary(root, "r1")["stages"]["train"]["artifacts"]
    assert s2["stages"]["evaluate"]["metrics"]["bce"] == _summary(root, "r1")["stages"]["evaluate"]["metrics"]["bce"]
    # --only re-runs one stage from cached inputs
    assert cli.main(_args(root, "r3", idx_dir, "--only", "evaluate")) == EXIT_OK
    s3 = _summary(root, "r3")
    assert [s3["stages"][n]["status"] for n in STAGES] == ["cached"] * 4 + ["ran", "skipped"]
    assert s3["stages"]["evaluate"]["metrics"]["bce"] == pytest.approx(
        s2["stages"]["evaluate"]["metrics"]["bce"], abs=1e-6)


@pytest.mark.slow
def test_corrupt_input_exits_3_naming_the_file_and_keeps_earlier_artifacts(first_run, idx_dir, tmp_path, capsys):
    root, _ = first_run
    before = _tree_digest(os.path.join(root, "artifacts"))
    bad = tmp_path / "bad"
    shutil.copytree(idx_dir, bad)
    path = bad / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    code = cli.main(_args(root, "bad1", bad))
    assert code == EXIT_DATA
    s = _summary(root, "bad1")
    assert s["status"] == "failed" and s["exit_code"] == EXIT_DATA
    assert "train-images-idx3-ubyte.gz" in s["error"]["message"]
    assert _tree_digest(os.path.join(root, "artifacts")) == before
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err


def test_bad_config_exits_2_before_anything_runs(tmp_path, capsys):
    code = cli.main(["run", "--root", str(tmp_path), "--set", "train.epochs=0"])
    assert code == EXIT_CONFIG
    assert "train.epochs" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "runs")
    assert cli.main(["run", "--root", str(tmp_path), "--bogus"]) == EXIT_CONFIG


def test_only_without_upstream_artifacts_fails_with_stage_error(tmp_path, idx_dir):
    code = cli.main(_args(tmp_path, "o1", idx_dir, "--only", "train"))
    assert code == EXIT_STAGE
    s = _summary(tmp_path, "o1")
    assert "run without --only first" in s["error"]["message"]


def test_reusing_a_run_id_is_refused(tmp_path, idx_dir):
    os.makedirs(tmp_path / "runs" / "x")
    assert cli.main(_args(tmp_path, "x", idx_dir)) == EXIT_CONFIG


def test_code_fingerprint_follows_project_imports():
    names = dict(fingerprint.code_closure("components.train.executor"))
    assert "models.conv" in names and "models.vae" in names
    assert "components.examples_io" in names
    assert "pipeline.runner" not in names


def test_cli_exit_code_in_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "run_pipeline.py", "run", "--root", str(tmp_path),
                           "--set", "noise.kind=blur"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120)
    assert proc.returncode == EXIT_CONFIG
    assert "noise.kind" in proc.stderr


@pytest.mark.slow
def test_runs_and_show_inspect_what_a_run_produced(first_run, capsys):
    root, _ = first_run
    assert cli.main(["runs", "--root", str(root)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "r1  succeeded" in out and "train:ran" in out
    assert cli.main(["show", "r1", "--root", str(root)]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "succeeded"
    assert {r["stage"] for r in shown["lineage"]} == set(STAGES)
    assert shown["stages"]["evaluate"]["metrics"]["bce"] > 0
    assert cli.main(["show", "nope", "--root", str(root)]) == EXIT_CONFIG
