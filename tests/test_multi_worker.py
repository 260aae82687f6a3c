"""Multi-worker training (train.distribute, TF_CONFIG; components/train/distribute.py).

Two local CPU workers, each its own process with its own TF_CONFIG: the chief launches
the train stage through the launcher (which stages, commits and records in ML Metadata),
the other runs `run_pipeline.py train-worker`. The fit must reach the loss of the
single-worker run of the same config, and only the chief may leave anything under the
root. Plus the config checks, which need no cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import run_pipeline
from pipeline import artifacts
from pipeline.artifacts import EXAMPLES, Artifact
from pipeline.errors import EXIT_CONFIG, EXIT_OK, ConfigError
from pipeline.launcher import RunContext, launch
from pipeline.metadata import MetadataStore
from tests.helpers import COMPONENTS, params, user_env

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_ID = "mw"
# A small fit: the dense variant, 2 epochs of the 320-image fixture at the default global
# batch (64: 32 per worker), the default train.distribute=auto (TF_CONFIG decides).
# The recipe the tolerance below was measured with (the defaults may move with the presets).
OVERRIDES = (
    "model.variant=dense",
    "train.epochs=2",
    "train.early_stopping_patience=0",
    "train.batch_size=64",
    "train.learning_rate=1e-3",
)
# Both fits see the same global batches (element-sharded) from the same initial weights;
# they differ only by float rounding in the all-reduce, which Adam (the default optimizer)
# amplifies where a gradient is near zero (its first steps are ~lr * sign(g)). Measured
# here: final loss 0.66626 (one worker) vs 0.66564 (two), |diff| 6e-4, while the fit
# itself lowers the loss by 0.019 over these two epochs; with train.optimizer=sgd the two
# agree to 3e-7.
LOSS_TOLERANCE = 2e-3


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps(
        {
            "cluster": {"worker": [f"localhost:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


def launch_train(root: str, examples_uri: str) -> dict:
    """The train stage of run RUN_ID on `root`, through the launcher, as the runner runs
    it (the run registered first); returns its metrics from ML Metadata."""
    with open(os.path.join(examples_uri, "_artifact.json")) as f:
        examples = Artifact(EXAMPLES, examples_uri, properties=json.load(f))
    store = MetadataStore(root)
    store.start_run(
        RUN_ID,
        {
            "status": "running",
            "started": time.time(),
            "heartbeat": time.time(),
            "owner_pid": os.getpid(),
            "owner_host": socket.gethostname(),
            "stages": ["train"],
        },
    )
    launch(
        COMPONENTS["train"],
        params("train", *OVERRIDES),
        {"examples": examples},
        RunContext(root=root, run_id=RUN_ID, beam_args=()),
    )
    store.update_run(RUN_ID, status="succeeded", finished=time.time())
    [train] = [e for e in store.run_executions(RUN_ID) if e["stage"] == "train"]
    assert train["state"] == "complete", train
    return train["metrics"]


def _chief_main(root: str, examples_uri: str, metrics_path: str) -> int:
    """The chief process of the test (what `run_pipeline.py run` does for its train stage)."""
    from pipeline import console

    console.quiet_third_party("INFO")
    metrics = launch_train(root, examples_uri)
    with open(metrics_path, "w") as f:
        json.dump(metrics, f)
    return EXIT_OK


def _files(root: str) -> set[str]:
    """Relative paths of the files under root; TensorBoard's event files are named by
    host, pid and time, so by directory only."""
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), root)
            out.add(re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents.*", rel))
    return out


@pytest.mark.slow
def test_two_workers_reach_the_single_worker_loss_and_only_the_chief_commits(
    normalized_examples, tmp_path
):
    single_root, multi_root = str(tmp_path / "single"), str(tmp_path / "multi")
    scratch = tmp_path / "worker-tmp"  # the non-chief worker's TMPDIR
    scratch.mkdir()
    t0 = time.perf_counter()
    single = launch_train(single_root, normalized_examples.uri)  # in this process, one device
    t_single = time.perf_counter() - t0

    ports = _free_ports(2)
    logs = {name: open(tmp_path / f"{name}.log", "w+") for name in ("chief", "worker")}
    commands = {
        "chief": [
            sys.executable,
            "-c",
            "import sys; from tests.test_multi_worker import "
            "_chief_main; sys.exit(_chief_main(*sys.argv[1:]))",
            multi_root,
            normalized_examples.uri,
            str(tmp_path / "chief-metrics.json"),
        ],
        "worker": [
            sys.executable,
            os.path.join(PROJECT, "run_pipeline.py"),
            "train-worker",
            "--root",
            multi_root,
            "--run-id",
            RUN_ID,
            "--wait-s",
            "60",
            *[a for o in OVERRIDES for a in ("--set", o)],
        ],
    }
    procs: dict[str, subprocess.Popen] = {}
    t0 = time.perf_counter()
    try:
        for index, name in enumerate(("chief", "worker")):
            env = user_env(
                TF_CONFIG=tf_config(ports, index),
                PYTHONPATH=PROJECT,
                **({"TMPDIR": str(scratch)} if name == "worker" else {}),
            )
            procs[name] = subprocess.Popen(
                commands[name],
                cwd=PROJECT,
                env=env,
                stdout=logs[name],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        codes = {name: p.wait(timeout=150) for name, p in procs.items()}
    finally:
        for p in procs.values():  # the fit processes they started are in their groups
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    t_multi = time.perf_counter() - t0
    out = {}
    for name, f in logs.items():
        f.seek(0)
        out[name] = f.read()
        f.close()
    assert codes == {"chief": 0, "worker": 0}, out
    multi = json.loads((tmp_path / "chief-metrics.json").read_text())

    # The fit was a two-worker fit, and it learned what the single-worker fit learned.
    assert multi["distribute"] == "multi_worker" and multi["workers"] == 2
    assert "2 replica(s) in sync" in out["chief"] and "2 replica(s) in sync" in out["worker"]
    assert "distribute" not in single
    print(
        f"final loss: single worker {single['final_loss']:.6f} ({t_single:.1f}s), "
        f"two workers {multi['final_loss']:.6f} ({t_multi:.1f}s wall, both processes)"
    )
    assert multi["final_loss"] == pytest.approx(single["final_loss"], abs=LOSS_TOLERANCE)
    assert multi["best_val_loss"] == pytest.approx(single["best_val_loss"], abs=LOSS_TOLERANCE)
    assert multi["epochs_run"] == single["epochs_run"] == 2
    for root in (single_root, multi_root):  # both learned
        with open(
            os.path.join(root, "artifacts", "train", RUN_ID, "model_run", "history.json")
        ) as f:
            loss = json.load(f)["loss"]
        assert loss[-1] < loss[0] - 5 * LOSS_TOLERANCE, (root, loss)
    worker_loss = re.search(r"final loss ([0-9.]+) \(nothing committed", out["worker"])
    assert worker_loss and float(worker_loss.group(1)) == pytest.approx(
        multi["final_loss"], abs=1e-6
    )

    # Only the chief committed: the root holds exactly what the single-process run left
    # (one committed model and model_run, one train execution), the worker's scratch is gone.
    assert _files(multi_root) == _files(single_root)
    store = MetadataStore(multi_root)
    [train] = [e for e in store.run_executions(RUN_ID) if e["stage"] == "train"]
    assert train["state"] == "complete" and set(train["outputs"]) == {"model", "model_run"}
    assert all(
        artifacts.is_committed(a.uri) and a.uri.startswith(multi_root)
        for a in train["outputs"].values()
    )
    assert list(scratch.iterdir()) == []


def test_multi_worker_needs_a_usable_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"train.distribute: multi_worker needs .*TF_CONFIG"):
        params("train", "train.distribute=multi_worker")
    assert params("train", "train.distribute=auto").distribute == "auto"
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match=r"^TF_CONFIG: expected JSON like"):
        params("train")  # auto reads TF_CONFIG too: a broken one is an error, not ignored
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 2))
    with pytest.raises(ConfigError, match=r"task worker 2 is not in the cluster"):
        params("train")
    monkeypatch.setenv("TF_CONFIG", tf_config([1], 0))  # one worker: auto = no cluster
    assert params("train").distribute == "auto"
    with pytest.raises(ConfigError, match="got 1 worker"):
        params("train", "train.distribute=multi_worker")
    with pytest.raises(ConfigError, match=r"train.distribute: expected one of"):
        params("train", "train.distribute=tpu")


def test_cli_rejects_a_bad_cluster_before_anything_runs(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert run_pipeline.main(["config", "--set", "train.distribute=multi_worker"]) == EXIT_CONFIG
    # train-worker on the chief's TF_CONFIG, or without a cluster: exit 2, nothing written.
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 0))
    root = tmp_path / "root"
    assert run_pipeline.main(["train-worker", "--root", str(root), "--run-id", "x"]) == EXIT_CONFIG
    assert "names this process the chief" in caplog.text
    monkeypatch.delenv("TF_CONFIG")
    assert run_pipeline.main(["train-worker", "--root", str(root), "--run-id", "x"]) == EXIT_CONFIG
    assert not root.exists()
