"""The whole pipeline through the CLI on a few hundred real-shaped examples: six stages
chained on Beam, artifacts committed atomically, ML Metadata as the one record of run
state and lineage, caching (also from a moved root and a relocated checkout), exit
codes, and a SavedModel that reloads in a fresh process with the same outputs.
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

import run_pipeline
from pipeline import artifacts, fingerprint, runner, summary
from pipeline.errors import EXIT_CONFIG, EXIT_DATA, EXIT_OK, EXIT_STAGE
from pipeline.launcher import usable
from pipeline.metadata import MetadataStore
from pipeline.views import Views
from tests.helpers import (
    COMPONENTS,
    blessed_small_run,
    copy_root,
    load_config,
    set_args,
    synthetic_images,
    user_env,
    write_idx,
)

STAGES = list(COMPONENTS)
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(root, run_id, source, *extra):
    settings = set_args(blessed_small_run(source))
    return ["run", "--root", str(root), "--run-id", run_id, *settings, *extra]


def _summary(root, run_id):
    with open(os.path.join(root, "runs", run_id, "summary.json")) as f:
        return json.load(f)


def _tree_digest(path):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            p = os.path.join(d, name)
            h.update(os.path.relpath(p, path).encode())
            h.update(open(p, "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, small_root):
    """A root after run r1 (`_args`): a copy of the session's small_root, which is that run."""
    root = tmp_path_factory.mktemp("first") / "root"
    copy_root(small_root, root)
    return root


@pytest.mark.slow
def test_end_to_end_all_stages(first_run):
    root = first_run
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
    assert ev["psnr"] > 0
    # one epoch on 10 synthetic classes (chance 0.1): the code already carries the class
    assert ev["probe_accuracy"] > 0.25
    assert np.isfinite(s["stages"]["train"]["metrics"]["best_val_loss"])
    # nothing half-written left behind, no stage lock held
    for d, dirs, _ in os.walk(os.path.join(root, "artifacts")):
        assert not [x for x in dirs if x.startswith(artifacts.TMP_PREFIX)], d
    # the trainer's resumable state is removed after a successful fit, its directory too
    assert not os.path.exists(os.path.join(root, "work"))


@pytest.mark.slow
def test_summary_json_is_a_view_of_ml_metadata(first_run):
    root = first_run
    store = MetadataStore(str(root))
    assert summary.render(store, "r1", Views.of(COMPONENTS.values())) == _summary(root, "r1")
    run = store.get_run("r1")
    assert run["status"] == "succeeded" and run["owner_pid"] > 0
    assert run["config"]["train"]["epochs"] == 1
    # no per-stage JSON or other run state is written beside it: the log and two views
    assert sorted(os.listdir(os.path.join(root, "runs", "r1"))) == [
        "pipeline.log",
        "report.html",
        "summary.json",
    ]


@pytest.mark.slow
def test_embeddings_cover_every_example(first_run):
    root = first_run
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
    root = first_run
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
        "print(sorted(m.signatures.keys()))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(
        sorted(
            [
                "decode",
                "encode",
                "images_float32",
                "images_uint8",
                "reconstruct",
                "score",
                "serving_default",
            ]
        )
    )
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


@pytest.mark.slow
def test_lineage_in_ml_metadata(first_run):
    root = first_run
    store = MetadataStore(str(root))
    rows = store.run_executions("r1")
    # one execution per stage; evaluate and export both follow train, in either order
    assert sorted((r["stage"] for r in rows), key=STAGES.index) == STAGES
    assert [r["stage"] for r in rows][:4] == STAGES[:4]
    assert all(r["state"] == "complete" for r in rows)
    s = _summary(root, "r1")
    for r in rows:
        assert {k: a.uri for k, a in r["outputs"].items()} == s["stages"][r["stage"]]["artifacts"]
    # transform consumed ingest's examples and validate's anomalies (INPUT events), and
    # nothing it does not read
    transform = next(r for r in rows if r["stage"] == "transform")
    assert {k: a.uri for k, a in transform["inputs"].items()} == {
        "examples": s["stages"]["ingest"]["artifacts"]["examples"],
        "raw_anomalies": s["stages"]["validate"]["artifacts"]["anomalies"],
    }
    # URIs are stored relative to the root (a moved root keeps its lineage)
    raw = store.store.get_artifacts()
    assert raw and all(not a.uri.startswith("/") for a in raw)


@pytest.mark.slow
def test_second_run_is_cached_and_only_reruns_one_stage(first_run, idx_dir):
    root = first_run
    assert run_pipeline.main(_args(root, "r2", idx_dir)) == EXIT_OK
    assert MetadataStore(str(root)).get_run("r2")["owner_pid"] == os.getpid()
    s1, s2 = _summary(root, "r1"), _summary(root, "r2")
    assert {st["status"] for st in s2["stages"].values()} == {"cached"}
    assert s2["stages"]["train"]["artifacts"] == s1["stages"]["train"]["artifacts"]
    assert s2["stages"]["train"]["cached_from"]["run_id"] == "r1"
    assert s2["stages"]["evaluate"]["metrics"]["bce"] == s1["stages"]["evaluate"]["metrics"]["bce"]
    # --only re-runs one stage from cached inputs
    assert run_pipeline.main(_args(root, "r3", idx_dir, "--only", "evaluate")) == EXIT_OK
    s3 = _summary(root, "r3")
    upstream = STAGES[: STAGES.index("evaluate")]
    assert [s3["stages"][n]["status"] for n in upstream] == ["cached"] * len(upstream)
    assert s3["stages"]["evaluate"]["status"] == "ran"
    assert "export" not in s3["stages"]
    assert s3["stages"]["evaluate"]["metrics"]["bce"] == pytest.approx(
        s2["stages"]["evaluate"]["metrics"]["bce"], abs=1e-6
    )


@pytest.mark.slow
def test_a_deleted_artifact_is_not_reused(first_run, idx_dir):
    root = first_run
    s = _summary(root, "r1")
    export_uri = s["stages"]["export"]["artifacts"]["embeddings"]
    os.remove(os.path.join(export_uri, artifacts.COMMIT_MARKER))
    try:
        assert run_pipeline.main(_args(root, "r4", idx_dir)) == EXIT_OK
        s4 = _summary(root, "r4")
        assert s4["stages"]["train"]["status"] == "cached"
        assert s4["stages"]["export"]["status"] == "ran"
    finally:
        open(os.path.join(export_uri, artifacts.COMMIT_MARKER), "w").close()


@pytest.mark.slow
def test_a_moved_root_hits_the_cache(first_run, idx_dir, tmp_path):
    copy, moved = tmp_path / "root", tmp_path / "moved-root"
    shutil.copytree(first_run, copy, ignore=shutil.ignore_patterns("locks"))
    os.rename(copy, moved)  # a move: nothing is left where the records were made
    assert run_pipeline.main(_args(moved, "m1", idx_dir)) == EXIT_OK
    s = _summary(moved, "m1")
    assert {st["status"] for st in s["stages"].values()} == {"cached"}
    for st in s["stages"].values():
        for uri in st["artifacts"].values():
            assert uri.startswith(str(moved) + os.sep), uri
    # the served copy moved with the root (push.serving_dir is inside it): still served
    assert s["push"]["cached"] and s["push"]["destination"].startswith(str(moved) + os.sep)


@pytest.mark.slow
def test_a_stage_inserted_between_transform_and_train_is_one_edit_of_the_wiring(
    first_run, idx_dir, tmp_path
):
    """A pass-through stage wired in as create_pipeline() would wire it: the data stages
    stay cached, train reads the new stage's output, and the run ends as before."""
    from pipeline import cli
    from tests.stages.passthrough import PASSTHROUGH

    stages = {c.name: c for c in run_pipeline.create_pipeline()}
    passthrough = PASSTHROUGH.wire(examples=stages["transform"].output("transformed_examples"))
    stages["train"] = stages["train"].wire(examples=passthrough.output("passed_examples"))
    order = [*STAGES[:3], "passthrough", *STAGES[3:]]
    stages["passthrough"] = passthrough
    root = tmp_path / "root"
    shutil.copytree(first_run, root, ignore=shutil.ignore_patterns("locks"))
    assert cli.main(lambda: [stages[n] for n in order], _args(root, "inserted", idx_dir)) == EXIT_OK

    s = _summary(root, "inserted")
    assert list(s["stages"]) == order
    assert [s["stages"][n]["status"] for n in order] == ["cached"] * 3 + ["ran"] * (len(order) - 3)
    store = MetadataStore(str(root))
    runs = {e["stage"]: e for e in store.run_executions("inserted")}
    assert (
        runs["train"]["inputs"]["examples"].uri
        == s["stages"]["passthrough"]["artifacts"]["passed_examples"]
    )
    # the copy is faithful: train saw the same examples, so the same number of them
    assert (
        s["stages"]["train"]["metrics"]["train_examples"]
        == _summary(first_run, "r1")["stages"]["train"]["metrics"]["train_examples"]
    )


def test_an_input_left_unwired_or_mistyped_is_refused_at_planning():
    from components.train.component import TRAIN  # as declared: its input not yet wired

    stages = {c.name: c for c in run_pipeline.create_pipeline()}
    with pytest.raises(TypeError, match="input 'examples' takes Examples, not train.model"):
        stages["train"].wire(examples=stages["train"].output("model"))
    with pytest.raises(TypeError, match="declares no input 'exemples'"):
        stages["train"].wire(exemples=stages["transform"].output("transformed_examples"))
    with pytest.raises(TypeError, match=r"train: inputs \['examples'\] are not wired"):
        runner.plan(
            [stages["ingest"], stages["validate"], stages["transform"], TRAIN], load_config()
        )
    with pytest.raises(
        TypeError,
        match=r"consumes \['transform.transformed_examples'\], not "
        "produced by an earlier component",
    ):
        runner.plan([stages["ingest"], stages["validate"], stages["train"]], load_config())


@pytest.mark.slow
def test_a_relocated_checkout_hits_the_cache(first_run, idx_dir, tmp_path):
    """The same code at another path (git ls-files copied there) reuses every stage."""
    root = first_run
    clone = tmp_path / "elsewhere" / "checkout"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if os.path.isfile(os.path.join(PROJECT, f)):
            os.makedirs(os.path.dirname(clone / f), exist_ok=True)
            shutil.copy2(os.path.join(PROJECT, f), clone / f)
    proc = subprocess.run(
        [sys.executable, str(clone / "run_pipeline.py"), *_args(root, "c1", idx_dir)],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
        env=user_env(PYTHONPATH=str(clone)),
    )
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    s = _summary(root, "c1")
    assert {st["status"] for st in s["stages"].values()} == {"cached"}, s["stages"]
    log = open(os.path.join(root, "runs", "c1", "pipeline.log")).read()
    assert str(clone) in log  # it really ran from the copy


@pytest.mark.slow
def test_corrupt_input_exits_3_naming_the_file_and_keeps_earlier_artifacts(
    first_run, idx_dir, tmp_path, capsys
):
    root = first_run
    before = _tree_digest(os.path.join(root, "artifacts"))
    bad = tmp_path / "bad"
    shutil.copytree(idx_dir, bad)
    path = bad / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    code = run_pipeline.main(_args(root, "bad1", bad))
    assert code == EXIT_DATA
    s = _summary(root, "bad1")
    assert s["status"] == "failed" and s["exit_code"] == EXIT_DATA
    assert s["error"]["stage"] == "ingest" and s["stages"]["ingest"]["status"] == "failed"
    assert "train-images-idx3-ubyte.gz" in s["error"]["message"]
    assert _tree_digest(os.path.join(root, "artifacts")) == before
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and "Traceback" not in err
    assert "Traceback" in open(os.path.join(root, "runs", "bad1", "pipeline.log")).read()


@pytest.mark.parametrize(
    "overrides",
    [
        ["--set", "train.epochs=0"],
        ["--config", "conv_pool", "--set", "model.latent_dim=32"],
        ["--set", 'beam.args=["--runner=NoSuchRunner"]'],
        ["--set", "noise.kind=blur"],
        ["--set", "gate.baseline=previous"],
        ["--set", "push.serving_dir=gs://bucket/serving"],
        ["--config", "no_such_preset"],
        ["--only", "no_such_stage"],
        ["--run-id", "bad/id"],
        ["--bogus"],
    ],
)
def test_bad_config_exits_2_before_anything_is_created(tmp_path, overrides, capsys):
    root = tmp_path / "root"
    assert run_pipeline.main(["run", "--root", str(root), *overrides]) == EXIT_CONFIG
    assert not root.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) >= 1


def test_only_without_upstream_artifacts_fails_with_stage_error(tmp_path, idx_dir):
    code = run_pipeline.main(_args(tmp_path, "o1", idx_dir, "--only", "train"))
    assert code == EXIT_STAGE
    s = _summary(tmp_path, "o1")
    assert "run without --only first" in s["error"]["message"]
    assert s["error"]["stage"] == "ingest"


def test_reusing_a_run_id_is_refused(tmp_path, idx_dir):
    os.makedirs(tmp_path / "runs" / "x")
    assert run_pipeline.main(_args(tmp_path, "x", idx_dir)) == EXIT_CONFIG


def test_code_fingerprint_covers_what_a_stage_runs_and_no_more():
    names = dict(fingerprint.code_closure("components.train.executor"))
    assert {"models.conv", "models.vae", "components.examples_io", "pipeline.errors"} <= set(names)
    # the spec and config machinery are named for type checkers only; the multi-worker
    # fit's child process (components/train/fit_process.py) runs the same fit, so is in
    assert not {
        "components.train.component",
        "pipeline.config",
        "pipeline.runner",
        "pipeline.launcher",
        "pipeline.component",
        "components.train.worker",
    } & set(names)
    assert {
        "components.train.distribute",
        "components.train.fit",
        "components.train.fit_process",
    } <= set(names)
    ingest = dict(fingerprint.code_closure("components.ingest.executor"))
    assert "models" not in ingest and "components.train.executor" not in ingest


def test_code_fingerprint_ignores_docstrings_comments_and_formatting(tmp_path):
    mod = tmp_path / "mod.py"
    mod.write_text(
        '"""A module."""\nimport os\n\n\ndef f(x):\n    """Doc."""\n    return x + 1  # one\n'
    )
    before = fingerprint.normalized_syntax(mod)
    mod.write_text(
        '"""A module, its docstring fixed."""\nimport os\n# a new comment\n'
        'def f( x ):\n    """Another doc."""\n\n    return (x + 1)\n'
    )
    assert fingerprint.normalized_syntax(mod) == before
    for changed in ("return x + 2", "return x + 1; os.sep"):
        mod.write_text(f"import os\ndef f(x):\n    {changed}\n")
        assert fingerprint.normalized_syntax(mod) != before, changed
    mod.write_text("import os\ndef f(x):\n    return 'return x + 1'\n")  # a string is code
    assert fingerprint.normalized_syntax(mod) != before


def test_fingerprint_closure_skips_type_checking_imports(tmp_path):
    mod = tmp_path / "mod.py"
    mod.write_text(
        "from typing import TYPE_CHECKING\nimport components.fake.used\n"
        "if TYPE_CHECKING:\n    import components.fake.unused\n"
        "else:\n    import components.fake.other\n"
        "def f():\n    from components.fake import lazy\n"
    )
    found = fingerprint._imports("components.fake.mod", mod)
    assert {"components.fake.used", "components.fake.other", "components.fake.lazy"} <= found
    assert "components.fake.unused" not in found


def test_missing_idx_file_exits_3_with_one_line_and_no_traceback(tmp_path):
    d = tmp_path / "idx"
    write_idx(d, "train", *synthetic_images(50, 1))  # no t10k files
    proc = subprocess.run(
        [
            sys.executable,
            "run_pipeline.py",
            "run",
            "--root",
            str(tmp_path / "root"),
            "--set",
            f"data.source=idx:{d}",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=300,
        env=user_env(),
    )
    assert proc.returncode == EXIT_DATA
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "t10k-images-idx3-ubyte" in lines[0] and "(exit 3)" in lines[0]


def test_cli_exit_code_in_subprocess_and_a_clean_console(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "run_pipeline.py",
            "run",
            "--root",
            str(tmp_path),
            "--set",
            "noise.kind=blur",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=300,
        env=user_env(),
    )
    assert proc.returncode == EXIT_CONFIG
    # nothing but our one line: no TF/CUDA, FutureWarning or IPython start-up noise
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if "ERROR noise.kind:" in line
    ]
    assert proc.stdout == ""


@pytest.mark.slow
def test_runs_and_show_inspect_what_a_run_produced(first_run, capsys):
    root = first_run
    capsys.readouterr()
    assert run_pipeline.main(["runs", "--root", str(root)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["run", "id", "status"]
    r1 = next(line for line in out.splitlines() if line.startswith("r1 "))
    assert "succeeded" in r1 and "fashion_mnist" in r1 and "dense" in r1
    assert "bce_excess" in r1 and "yes (v1)" in r1
    assert run_pipeline.main(["runs", "--root", str(root), "--json"]) == EXIT_OK
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["r1"]["status"] == "succeeded" and listed["r1"]["stages"]["train"] == "ran"
    assert listed["r1"]["blessed"] is True and listed["r1"]["pushed"] is True
    assert listed["r1"]["metric"] == "bce_excess" and listed["r1"]["value"] > 0
    assert run_pipeline.main(["runs", "--root", str(root), "--json", "--status", "failed"]) == 0
    assert all(r["status"] == "failed" for r in json.loads(capsys.readouterr().out))
    assert run_pipeline.main(["show", "r1", "--root", str(root), "--json"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown == summary.render(MetadataStore(str(root)), "r1", Views.of(COMPONENTS.values()))
    assert run_pipeline.main(["show", "r1", "--root", str(root)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "run r1: succeeded (exit 0)" in text and "bce=" in text
    assert "blessed: yes (fashion_mnist/dense/clean): first model of its lineage" in text
    assert "pushed: yes as version 1" in text
    assert "train.epochs=1" in text  # the config keys that differ from the defaults
    assert run_pipeline.main(["show", "nope", "--root", str(root)]) == EXIT_CONFIG


@pytest.mark.slow
def test_new_data_is_compared_with_the_data_behind_the_blessed_model(first_run, tmp_path, capsys):
    """Drift between scheduled batches: a new batch whose splits agree with each other but
    not with the data the blessed model was trained on stops the run (exit 3); accepted
    on purpose with validate.reference=none, it then stays accepted (cached)."""
    root = first_run
    copy = tmp_path / "root"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("locks"))
    new = tmp_path / "idx-mirrored"  # the same images, mirrored: per-image stats unchanged
    for prefix, (n, seed) in (("train", (300, 1)), ("t10k", (120, 2))):
        images, labels = synthetic_images(n, seed)
        write_idx(new, prefix, images[:, :, ::-1].copy(), labels)
    capsys.readouterr()
    assert run_pipeline.main(_args(copy, "d1", new)) == EXIT_DATA
    err = capsys.readouterr().err
    assert (
        "train/image (vs the train data of the last blessed model, validated in run r1): "
        "Pixel mean map shift"
    ) in err
    assert "test/" not in err  # test agrees with its own train split
    validate = _summary(copy, "d1")["stages"]["validate"]
    assert validate["status"] == "failed" and validate["error"]["exit_code"] == EXIT_DATA
    for stage in _summary(copy, "r1")["stages"].values():  # nothing committed is lost
        for uri in stage["artifacts"].values():
            assert artifacts.is_committed(uri.replace(str(root), str(copy))), uri

    assert (
        run_pipeline.main(
            _args(copy, "d2", new, "--only", "validate", "--set", "validate.reference=none")
        )
        == EXIT_OK
    )
    config = load_config(
        None,
        f"data.source=idx:{new}",
        "data.num_shards=2",
        "train.epochs=1",
        "train.batch_size=64",
        "gate.max_bce_excess=1.0",
    )
    plan = runner.plan(list(COMPONENTS.values()), config, str(copy))
    assert (
        MetadataStore(str(copy)).find_cached("validate", plan.fingerprints["validate"], usable)
        is not None
    )


@pytest.mark.slow
def test_a_worse_second_run_is_neither_blessed_nor_pushed_and_says_why(first_run, idx_dir, capsys):
    root = first_run
    assert run_pipeline.main(_args(root, "w1", idx_dir, "--set", "train.learning_rate=1e-6")) == 0
    s1, w1 = _summary(root, "r1"), _summary(root, "w1")
    assert s1["blessing"]["blessed"] is True and s1["push"]["version"] == 1
    assert w1["status"] == "succeeded" and w1["exit_code"] == EXIT_OK
    assert w1["blessing"]["blessed"] is False
    assert w1["blessing"]["reason"].startswith("worse than the blessed baseline")
    assert w1["blessing"]["baseline_run_id"] == "r1"
    assert w1["blessing"]["baseline_value"] == pytest.approx(s1["main_metric"]["value"], abs=1e-6)
    assert w1["push"]["pushed"] is False and w1["push"]["reason"].startswith("not blessed: worse")
    model_dir = os.path.join(root, "serving", "fashion_mnist_dense")
    assert sorted(n for n in os.listdir(model_dir) if n.isdigit()) == ["1"]
    capsys.readouterr()
    assert run_pipeline.main(["diff", "r1", "w1", "--root", str(root), "--json"]) == EXIT_OK
    d = json.loads(capsys.readouterr().out)
    assert d["config"] == {"train.learning_rate": [0.003, 1e-6]}
    assert d["outcome"]["blessed"] == [True, False] and d["outcome"]["pushed"] == [True, False]
    a, b = d["metrics"]["evaluate.bce_excess"]
    assert b > a
    assert run_pipeline.main(["diff", "r1", "w1", "--root", str(root)]) == EXIT_OK
    assert "train.learning_rate" in capsys.readouterr().out
    # the same worse config again: nothing new to compare, so everything is cached
    assert run_pipeline.main(_args(root, "w2", idx_dir, "--set", "train.learning_rate=1e-6")) == 0
    assert {st["status"] for st in _summary(root, "w2")["stages"].values()} == {"cached"}


@pytest.mark.slow
def test_lineage_goes_back_to_the_source_files(first_run, idx_dir, capsys):
    root = first_run
    s = _summary(root, "r1")
    blessing = s["stages"]["evaluate"]["artifacts"]["blessing"]
    capsys.readouterr()
    # a file inside an artifact names the artifact
    assert (
        run_pipeline.main(
            ["lineage", os.path.join(blessing, "blessing.json"), "--root", str(root), "--json"]
        )
        == EXIT_OK
    )
    node = json.loads(capsys.readouterr().out)
    assert node["type"] == "ModelBlessing" and node["made_by"]["stage"] == "evaluate"
    model = node["inputs"]["model"]
    assert model["made_by"]["stage"] == "train" and model["made_by"]["run_id"] == "r1"
    raw = model["inputs"]["examples"]["inputs"]["examples"]
    assert raw["made_by"]["stage"] == "ingest"
    with open(os.path.join(idx_dir, "train-images-idx3-ubyte.gz"), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert raw["source"]["files"]["train-images-idx3-ubyte.gz"] == sha
    assert run_pipeline.main(["lineage", str(raw["artifact_id"]), "--root", str(root)]) == 0
    text = capsys.readouterr().out
    assert f"source file train-images-idx3-ubyte.gz sha256 {sha}" in text
    assert run_pipeline.main(["lineage", "/nowhere", "--root", str(root)]) == EXIT_CONFIG


@pytest.mark.slow
def test_a_fully_cached_rerun_imports_neither_tensorflow_nor_beam(first_run, idx_dir):
    root = first_run
    code = (
        "import json, sys, run_pipeline; rc = run_pipeline.main(sys.argv[1:]); "
        "print(json.dumps([rc, sorted(m for m in ('tensorflow', 'keras', 'apache_beam', "
        "'tensorflow_data_validation', 'pipeline.beam_dag') if m in sys.modules)]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *_args(root, "n1", idx_dir)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        env=user_env(),
    )
    rc, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == EXIT_OK, proc.stderr
    assert loaded == []
    assert {st["status"] for st in _summary(root, "n1")["stages"].values()} == {"cached"}


def test_new_source_data_changes_every_stage_fingerprint(idx_dir, tmp_path):
    """A schedule on new or changed data reruns everything downstream of ingest; on the
    same data (even moved) every fingerprint, so every cache hit, stays."""
    from pipeline import runner
    from tests.helpers import load_config

    def fingerprints(source):
        return runner.plan(
            list(COMPONENTS.values()), load_config(None, f"data.source=idx:{source}")
        ).fingerprints

    before = fingerprints(idx_dir)
    moved = tmp_path / "moved"
    shutil.copytree(idx_dir, moved)
    assert fingerprints(moved) == before
    changed = tmp_path / "changed"
    shutil.copytree(idx_dir, changed)
    write_idx(changed, "t10k", *synthetic_images(120, 99))  # new test images
    after = fingerprints(changed)
    assert all(after[stage] != before[stage] for stage in STAGES), after


def test_every_executor_loads_and_takes_exactly_its_components_keys():
    from pipeline.component import Component, Input

    for component in COMPONENTS.values():
        assert callable(component.executor), component.name
    wrong = Component(
        name="push2",
        inputs={"blessing": Input("ModelBlessing")},
        outputs={"pushed_model": "PushedModel"},
        params=object,
        executor_module="components.push.executor",
        description="",
    )
    with pytest.raises(TypeError, match="saved_model"):
        _ = wrong.executor


@pytest.mark.slow
def test_gc_through_the_cli_on_a_real_root(first_run, capsys):
    root = first_run
    before = _tree_digest(os.path.join(root, "artifacts"))
    capsys.readouterr()
    assert (
        run_pipeline.main(["gc", "--root", str(root), "--keep-last", "1", "--dry-run", "--json"])
        == EXIT_OK
    )
    result = json.loads(capsys.readouterr().out)
    assert result["dry_run"] is True and result["kept_runs"]
    # r1's model is blessed and pushed: whatever else goes, it stays (kept or protected)
    s1 = _summary(root, "r1")
    released = {
        os.path.relpath(s1["stages"][stage]["artifacts"][key], root)
        for stage, key in (
            ("train", "model"),
            ("evaluate", "blessing"),
            ("export", "saved_model"),
            ("push", "pushed_model"),
        )
    }
    assert not released & {d["uri"] for d in result["deleted"]}
    assert all("blessed" in p["why"] or "pushed" in p["why"] for p in result["protected"])
    assert run_pipeline.main(["gc", "--root", str(root), "--keep-days", "1", "--dry-run"]) == 0
    assert "would free" in capsys.readouterr().out
    assert _tree_digest(os.path.join(root, "artifacts")) == before  # a dry run deletes nothing
    assert run_pipeline.main(["gc", "--root", str(root)]) == EXIT_CONFIG  # no policy given


@pytest.mark.slow
def test_a_rollback_is_respected_and_a_wiped_serving_directory_is_pushed_to_again(
    first_run, idx_dir
):
    """The cache never claims a push that Serving no longer has, and never undoes a rollback."""
    root = first_run
    s1 = _summary(root, "r1")
    model_dir = os.path.join(root, "serving", "fashion_mnist_dense")
    # rollback: the newest version deleted by hand; the schedule does not push it back
    shutil.rmtree(os.path.join(model_dir, str(s1["push"]["version"])))
    assert run_pipeline.main(_args(root, "p1", idx_dir)) == EXIT_OK
    p1 = _summary(root, "p1")
    assert p1["stages"]["push"]["status"] == "cached" and p1["push"]["cached"] is True
    assert not [n for n in os.listdir(model_dir) if n.isdigit()]
    # wiped: the model directory is gone; the next run pushes the blessed model again
    shutil.rmtree(model_dir)
    assert run_pipeline.main(_args(root, "p2", idx_dir)) == EXIT_OK
    p2 = _summary(root, "p2")
    assert p2["stages"]["evaluate"]["status"] == "cached"
    assert p2["stages"]["push"]["status"] == "ran" and p2["push"]["pushed"] is True
    assert p2["push"]["cached"] is False
    assert os.path.exists(os.path.join(p2["push"]["destination"], "saved_model.pb"))
