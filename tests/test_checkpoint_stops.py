"""A stop at any instant of a checkpoint write leaves train's resumable state usable
(components/train/checkpoints.py): real processes, real SIGTERM and SIGKILL sent inside
the making of the weights file, after its bytes are written and before the backup is
renamed into place, for the backup and the best checkpoint; then a rerun completes."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import h5py
import pytest

from components.train import checkpoints
from pipeline.component import ExecutionContext
from tests.helpers import output_artifacts, params, run_executor, user_env

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(PROJECT, "tests", "stop_during_checkpoint.py")
EPOCHS = 4


def _train(examples, work_dir, out_dir, *stop: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, CHILD, examples.uri, str(work_dir), str(out_dir), str(EPOCHS), *stop],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        env=user_env(),
    )


def _backups_loadable(work_dir) -> list[str]:
    """Every backup directory in place holds a complete weights file and its epoch."""
    found = sorted(glob.glob(os.path.join(work_dir, "backup", checkpoints.EPOCH_PREFIX + "*")))
    for d in found:
        with h5py.File(os.path.join(d, checkpoints.WEIGHTS), "r"):
            pass  # a truncated file does not open
        with open(os.path.join(d, checkpoints.METADATA)) as f:
            assert isinstance(json.load(f)["epoch"], int)
    return found


@pytest.mark.slow
def test_stops_inside_checkpoint_writes_then_a_rerun_completes(normalized_examples, tmp_path):
    work = tmp_path / "work"
    # Each stop hits the same work directory, as a nightly unit stopped night after night.
    stops = [
        ("TERM", "best", "1", "2"),  # the first best checkpoint's weights
        ("KILL", "best", "1", "fsync"),  # its bytes written, not yet synced
        ("TERM", "backup", "2", "1"),  # the second epoch's backup, first dataset
        ("KILL", "backup", "1", "3"),  # mid-file, in a resumed process
        ("TERM", "backup", "1", "fsync"),
        ("KILL", "backup", "1", "rename"),
    ]  # complete, not yet renamed into place
    expected_rc = {"TERM": 130, "KILL": -9}
    for i, stop in enumerate(stops):
        done = _train(normalized_examples, work, tmp_path / f"out{i}", *stop)
        assert done.returncode == expected_rc[stop[0]], (stop, done.stderr[-3000:])
        _backups_loadable(work)
    assert _backups_loadable(work), "the first epochs' backup survived the stops"
    done = _train(normalized_examples, work, tmp_path / "final")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["resumed"] is True and metrics["epochs_run"] == EPOCHS
    assert "warnings" not in metrics  # no backup had to be set aside
    assert not os.path.exists(work / "backup")  # removed after the fit, leftovers included
    assert not glob.glob(str(tmp_path / "final" / "**" / "*.tmp-*"), recursive=True)


def test_an_unusable_backup_is_set_aside_and_training_starts_again(normalized_examples, tmp_path):
    """What Keras' in-place BackupAndRestore left after a stop mid-write (a truncated
    latest.weights.h5): the stage used to fail on every later run ('could not be loaded')."""
    work = tmp_path / "work"
    backup = work / "backup"
    backup.mkdir(parents=True)
    (backup / checkpoints.WEIGHTS).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (backup / checkpoints.METADATA).write_text(json.dumps({"epoch": 2, "batch": 0}))
    metrics = run_executor(
        "train",
        params("train", "model.variant=dense", "train.epochs=2", "train.early_stopping_patience=0"),
        {"examples": normalized_examples},
        output_artifacts("train", tmp_path / "out"),
        ExecutionContext(work_dir=str(work)),
    )
    assert metrics["resumed"] is False and metrics["epochs_run"] == 2
    [aside] = glob.glob(str(work / checkpoints.UNUSABLE_DIR / "*"))
    assert os.path.exists(os.path.join(aside, checkpoints.WEIGHTS))
    assert metrics["warnings"] == [f"unusable training backup moved aside to {aside}"]
