"""Unattended runs on a shared root: overlapping runs, killed runs, skipped runs, and ML
Metadata's SQLite under concurrent writers. Real processes, real signals."""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipeline import artifacts, locks, runner, summary
from pipeline.errors import EXIT_OK, EXIT_SKIPPED
from pipeline.metadata import MetadataStore
from pipeline.views import Views
from tests.helpers import synthetic_images, user_env, write_idx

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSOLE_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")


def _cli(root, idx, *extra):
    return [
        sys.executable,
        "run_pipeline.py",
        "run",
        "--root",
        str(root),
        "--set",
        f"data.source=idx:{idx}",
        "--set",
        "data.num_shards=2",
        *extra,
    ]


def _summaries(root) -> dict[str, dict]:
    out = {}
    for path in glob.glob(os.path.join(root, "runs", "*", "summary.json")):
        with open(path) as f:
            s = json.load(f)
        out[s["run_id"]] = s
    return out


@pytest.mark.slow
def test_two_identical_runs_started_together_both_succeed(tmp_path, idx_dir):
    """The second waits for the stage the first is running and reuses its output."""
    args = _cli(tmp_path, idx_dir, "--config", "dense", "--set", "train.epochs=2")
    procs = [
        subprocess.Popen(
            args,
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=user_env(),
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == EXIT_OK, err[-3000:]
        # the console holds the pipeline's own lines only
        assert all(CONSOLE_LINE.match(line) for line in err.strip().splitlines()), err
    runs = _summaries(tmp_path)
    assert len(runs) == 2 and all(s["status"] == "succeeded" for s in runs.values())
    a, b = runs.values()
    for stage in a["stages"]:
        statuses = sorted([a["stages"][stage]["status"], b["stages"][stage]["status"]])
        assert statuses == ["cached", "ran"], (stage, statuses)
        assert a["stages"][stage]["artifacts"] == b["stages"][stage]["artifacts"]
    logs = "".join(open(os.path.join(tmp_path, "runs", r, "pipeline.log")).read() for r in runs)
    assert "waiting: run" in logs


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sigkill_during_train_then_the_same_command_resumes(tmp_path_factory, tmp_path):
    idx = tmp_path_factory.mktemp("idx-big")
    write_idx(idx, "train", *synthetic_images(1500, 7))
    write_idx(idx, "t10k", *synthetic_images(100, 8))
    args = _cli(
        tmp_path,
        idx,
        "--config",
        "dense",
        "--set",
        "train.epochs=12",
        "--set",
        "train.batch_size=32",
        "--set",
        "train.early_stopping_patience=0",
    )
    victim = subprocess.Popen(
        [*args, "--run-id", "killed"],
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    backups = os.path.join(
        tmp_path, "work", "train", "*", "backup", "epoch-*", "training_metadata.json"
    )
    try:
        _wait_for(lambda: glob.glob(backups), 300, "the first finished epoch's backup")
        victim.send_signal(signal.SIGSTOP)  # alive but frozen mid-training, whatever the speed
        # while it lives, a scheduler that prefers to skip overlapping runs is told so
        skipped = subprocess.run(
            [*args, "--run-id", "skipper", "--skip-if-running"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert skipped.returncode == EXIT_SKIPPED, skipped.stderr
        assert "killed" in skipped.stderr and "Traceback" not in skipped.stderr
        assert _summaries(tmp_path)["skipper"]["status"] == "skipped"
        assert _summaries(tmp_path)["killed"]["status"] == "running"
        # under cron (docs/operations.md, "Schedules"): a skip at --log-level error prints
        # nothing, so no mail; gc beside the live run refuses with the same code, also silently
        quiet = subprocess.run(
            [*args, "--run-id", "skipper2", "--skip-if-running", "--log-level", "error"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=300,
            env=user_env(),
        )
        assert (quiet.returncode, quiet.stderr) == (EXIT_SKIPPED, "")
        gc = subprocess.run(
            [
                sys.executable,
                "run_pipeline.py",
                "gc",
                "--root",
                str(tmp_path),
                "--keep-last",
                "1",
                "--log-level",
                "error",
            ],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=300,
            env=user_env(),
        )
        assert (gc.returncode, gc.stderr, gc.stdout) == (EXIT_SKIPPED, "", "")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert glob.glob(
        os.path.join(tmp_path, "artifacts", "train", "killed", artifacts.TMP_PREFIX + "*")
    )

    # `runs` sees that the owner is gone, records it, and removes its staging dirs
    shown = subprocess.run(
        [sys.executable, "run_pipeline.py", "runs", "--root", str(tmp_path), "--json"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    listed = {r["run_id"]: r for r in json.loads(shown.stdout)}
    assert listed["killed"]["status"] == "abandoned"
    assert listed["killed"]["stages"]["train"] == "abandoned"
    assert _summaries(tmp_path)["killed"]["status"] == "abandoned"
    assert not glob.glob(
        os.path.join(tmp_path, "artifacts", "*", "killed", artifacts.TMP_PREFIX + "*")
    )

    again = subprocess.run(
        [*args, "--run-id", "again"], cwd=PROJECT, capture_output=True, text=True, timeout=400
    )
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    s = _summaries(tmp_path)["again"]
    assert [s["stages"][n]["status"] for n in ("ingest", "validate", "transform")] == ["cached"] * 3
    train = s["stages"]["train"]
    assert train["status"] == "ran" and train["metrics"]["resumed"] is True
    assert train["metrics"]["epochs_run"] == 12
    with open(os.path.join(train["artifacts"]["model_run"], "history.json")) as f:
        assert json.load(f)["epoch"] == list(range(12))
    assert (
        "resuming from the backup"
        in open(os.path.join(tmp_path, "runs", "again", "pipeline.log")).read()
    )


def _register(store: MetadataStore, run_id: str, **props) -> None:
    base = {
        "status": "running",
        "started": time.time(),
        "heartbeat": time.time(),
        "owner_pid": 0,
        "owner_host": socket.gethostname(),
        "stages": ["ingest"],
    }
    store.start_run(run_id, {**base, **props})


def test_dead_owner_is_abandoned_live_owner_is_not(tmp_path):
    root = str(tmp_path)
    store = MetadataStore(root)
    _register(store, "dead")
    _register(store, "alive")
    _register(store, "remote-fresh", owner_host="elsewhere")
    _register(
        store,
        "remote-stale",
        owner_host="elsewhere",
        heartbeat=time.time() - 2 * runner.STALE_AFTER_S,
    )
    staging = os.path.join(root, "artifacts", "ingest", "dead", artifacts.TMP_PREFIX + "examples-1")
    os.makedirs(staging)
    held = runner.run_lock(root, "alive")
    held.acquire()
    try:
        found = runner.sweep_abandoned(store, Views())
    finally:
        held.release()
    assert sorted(found) == ["dead", "remote-stale"]
    assert store.get_run("dead")["status"] == "abandoned"
    assert store.get_run("alive")["status"] == "running"
    assert store.get_run("remote-fresh")["status"] == "running"
    assert not os.path.exists(staging)
    assert summary.render(store, "dead", Views())["status"] == "abandoned"


def test_paths_inside_the_root_follow_a_moved_store(tmp_path):
    """An artifact's uri and the paths inside the root its properties name are recorded
    relative to the root; paths elsewhere as they are."""
    root, moved = tmp_path / "root", tmp_path / "moved"
    store = MetadataStore(str(root))
    _register(store, "r")
    served = str(root / "serving" / "m" / "1")
    pushed = artifacts.Artifact(
        "PushedModel",
        str(root / "artifacts" / "push" / "r" / "pushed_model"),
        properties={
            "destination": served,
            artifacts.EXTERNAL_PATHS: [served, "/srv/models/m"],
            "splits": ["train", "test"],
        },
    )
    execution = store.put_execution("r", "push", "complete", {}, outputs={"pushed_model": pushed})
    del store
    os.rename(root, moved)
    [got] = MetadataStore(str(moved)).artifacts_of(execution).values()
    assert got.uri == str(moved / "artifacts" / "push" / "r" / "pushed_model")
    assert got.properties == {
        "destination": str(moved / "serving" / "m" / "1"),
        artifacts.EXTERNAL_PATHS: [str(moved / "serving" / "m" / "1"), "/srv/models/m"],
        "splits": ["train", "test"],
    }


def test_stage_lock_makes_the_second_holder_wait(tmp_path):
    waited = []
    first = locks.FileLock(str(tmp_path), "stage-x")
    assert first.acquire(note="run-a")
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_hold_then_note, args=(str(tmp_path),))
    child.start()
    time.sleep(1.0)
    assert child.is_alive()  # blocked behind run-a
    first.release()
    child.join(30)
    assert child.exitcode == 0
    with locks.held(str(tmp_path), "stage-x", on_wait=waited.append):
        pass
    assert waited == []


def _hold_then_note(root):
    with locks.held(root, "stage-x", note="run-b"):
        pass


def _hammer(root: str, worker: int, n: int) -> None:
    store = MetadataStore(root)
    for i in range(n):
        store.update_run("shared", **{f"w{worker}": i})
        store.put_execution("shared", "ingest", "complete", {"fingerprint": f"{worker}-{i}"})


def test_ml_metadata_survives_concurrent_writers(tmp_path):
    root = str(tmp_path)
    _register(MetadataStore(root), "shared")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_hammer, args=(root, w, 25)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    store = MetadataStore(root)
    assert len(store.run_executions("shared")) == 100
    assert all(store.get_run("shared")[f"w{w}"] == 24 for w in range(4))
