"""A run that spans processes (pipeline/stage_process.py): `start`, then `stage` per stage.
Stage processes join the run, take the run's own upstream outputs, end the run with the
last stage or a failure, and refuse (exit 2) what cannot be joined."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

import run_pipeline
from pipeline import runner
from pipeline.errors import EXIT_CONFIG, EXIT_DATA, EXIT_OK, EXIT_SKIPPED
from pipeline.metadata import MetadataStore
from tests.helpers import COMPONENTS, blessed_small_run, copy_root, set_args

STAGES = list(COMPONENTS)


def _settings(source) -> list[str]:
    return set_args(blessed_small_run(source))


def _start(root, run_id, source, *extra) -> int:
    return run_pipeline.main(
        ["start", "--root", str(root), "--run-id", run_id, *_settings(source), *extra]
    )


def _stage(root, run_id, stage) -> int:
    return run_pipeline.main(["stage", stage, "--root", str(root), "--run-id", run_id])


def _summary(root, run_id) -> dict:
    with open(os.path.join(root, "runs", run_id, "summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def root(tmp_path_factory, small_root):
    """A root where a one-process run has computed every stage with `_settings` (r1: a
    copy of the session's small_root)."""
    root = tmp_path_factory.mktemp("stages") / "root"
    copy_root(small_root, root)
    return root


def test_stage_processes_make_one_run_equal_to_a_one_process_run(root, idx_dir):
    assert _start(root, "s1", idx_dir) == EXIT_OK
    assert _summary(root, "s1")["status"] == "running"
    for i, stage in enumerate(STAGES):
        assert _stage(root, "s1", stage) == EXIT_OK
        view = _summary(root, "s1")
        assert view["stages"][stage]["status"] == "cached"
        assert view["status"] == ("succeeded" if i == len(STAGES) - 1 else "running")
    one, staged = _summary(root, "r1"), _summary(root, "s1")
    assert staged["mode"] == "stages" and one["mode"] == "process"
    assert set(staged["stage_owners"]) == set(STAGES)
    for stage in STAGES:
        assert staged["stages"][stage]["metrics"] == one["stages"][stage]["metrics"], stage
    assert os.path.exists(os.path.join(root, "runs", "s1", "report.html"))
    # Each stage consumed what this run committed upstream, recorded in ML Metadata.
    store = MetadataStore(str(root), readonly=True)
    executions = {e["stage"]: e for e in store.run_executions("s1")}
    for c in COMPONENTS.values():
        for key, ch in c.channels.items():
            produced = executions[ch.producer]["outputs"][ch.output]
            assert executions[c.name]["inputs"][key].id == produced.id, (c.name, key)
    # A stage the run has committed is a no-op; a retried start with the same config too.
    assert _stage(root, "s1", "push") == EXIT_OK
    assert _start(root, "s1", idx_dir) == EXIT_OK
    assert len(store.run_executions("s1")) == len(STAGES)


def test_what_cannot_be_joined_is_refused_with_exit_2(root, idx_dir, capsys):
    assert _start(root, "s2", idx_dir) == EXIT_OK
    capsys.readouterr()
    refused = {
        "needs transform.transformed_examples, which this run has not committed "
        "(transform is pending)": lambda: _stage(root, "s2", "train"),
        "no run 'nope'": lambda: _stage(root, "nope", "ingest"),
        "run r1 runs in one process": lambda: _stage(root, "r1", "ingest"),
        "stage 'polish': expected one of ingest": lambda: _stage(root, "s2", "polish"),
        "a run with this id already exists": lambda: _start(
            root, "s2", idx_dir, "--set", "train.epochs=2"
        ),
    }
    for message, call in refused.items():
        assert call() == EXIT_CONFIG, message
        err = capsys.readouterr().err
        assert message in err and "(exit 2)" in err and "Traceback" not in err, err
    # The refusals recorded nothing: the run still waits for its first stage.
    assert MetadataStore(str(root), readonly=True).run_executions("s2") == []


def test_a_failed_stage_ends_the_run_and_its_retry_reopens_it(root, idx_dir, tmp_path, capsys):
    source = tmp_path / "idx"
    shutil.copytree(idx_dir, source)
    assert _start(root, "s3", source) == EXIT_OK
    images = source / "train-images-idx3-ubyte.gz"
    good = images.read_bytes()
    images.write_bytes(good[:1000])  # truncated after the run was planned
    assert _stage(root, "s3", "ingest") == EXIT_DATA
    view = _summary(root, "s3")
    assert view["status"] == "failed" and view["error"]["stage"] == "ingest"
    capsys.readouterr()
    assert _stage(root, "s3", "validate") == EXIT_CONFIG
    assert "already ended (failed in stage ingest)" in capsys.readouterr().err
    images.write_bytes(good)
    assert _stage(root, "s3", "ingest") == EXIT_OK  # the retry reopens the run
    view = _summary(root, "s3")
    assert view["status"] == "running" and view["error"] is None
    assert view["stages"]["ingest"]["status"] == "cached"


def _pretend_running(root, run_id: str, stage: str, pid: int) -> None:
    """Record `stage` of a started run as running in process `pid` of this host, as a
    stage process does before its executor starts."""
    store = MetadataStore(str(root))
    store.put_execution(run_id, stage, "running", {"fingerprint": "x", "started": time.time()})
    store.update_run(
        run_id,
        **{f"owner.{stage}": f"{pid}@{runner.socket.gethostname()}", f"heartbeat.{stage}": 0},
    )


def test_a_dead_stage_process_is_abandoned_and_its_retry_takes_over(root, idx_dir):
    assert _start(root, "s4", idx_dir) == EXIT_OK
    _pretend_running(root, "s4", "ingest", pid=999999)  # its lock is free: the process is gone
    assert _stage(root, "s4", "ingest") == EXIT_OK
    store = MetadataStore(str(root), readonly=True)
    states = [e["state"] for e in store.run_executions("s4")]
    assert states == ["abandoned", "cached"]
    assert _summary(root, "s4")["status"] == "running"


def test_a_live_stage_process_is_left_alone_and_blocks_gc(root, idx_dir, capsys):
    assert _start(root, "s5", idx_dir) == EXIT_OK
    args = ["gc", "--root", str(root), "--keep-last", "100", "--dry-run"]
    assert run_pipeline.main(args) == EXIT_OK  # between stages no process owns the run
    lock = runner.stage_lock(str(root), "s5", "ingest")
    assert lock.acquire(blocking=False)  # a live stage process holds it
    try:
        _pretend_running(root, "s5", "ingest", pid=os.getpid())
        assert _stage(root, "s5", "ingest") == EXIT_SKIPPED
        assert run_pipeline.main(args) == EXIT_SKIPPED
        assert "s5 still running" in capsys.readouterr().err
        assert MetadataStore(str(root), readonly=True).run_executions("s5")[0]["state"] == (
            "running"
        )
    finally:
        lock.release()
