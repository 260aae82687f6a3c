"""Faults of the machine and the root, made real: a full disk (a small tmpfs), a read-only
root (a read-only bind mount), a damaged or lost metadata store, a heartbeat that cannot be
written, a killed run's temporary files. Each ends in one line and exit 74 (or works, for
reading), and the root is usable by the next run without a person.

Mounts need root: they run in a private mount namespace (`unshare -m`), skipped with the
reason where that is not allowed."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from pipeline import metadata, runner
from pipeline.errors import EXIT_ENVIRONMENT, EXIT_OK, EnvironmentFailure, StopRun
from run_pipeline import create_pipeline
from tests.helpers import blessed_small_run, copy_root, set_args, user_env

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
CONSOLE_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


needs_mounts = pytest.mark.skipif(
    not _can_unshare(), reason="needs `unshare -m` (root) for tmpfs and bind mounts"
)


def _run_args(root, idx, *extra) -> list[str]:
    """The command line of conftest's small_root run (there r1) on `root`."""
    settings = set_args(blessed_small_run(idx))
    return [PY, "run_pipeline.py", "run", "--root", str(root), *settings, *extra]


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "run_pipeline.py", *map(str, args)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env or user_env(),
    )


def _in_namespace(script: str) -> subprocess.CompletedProcess:
    """A bash script in a private mount namespace (its mounts vanish with it)."""
    return subprocess.run(
        ["unshare", "-m", "bash", "-euc", script],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        env=user_env(),
    )


def _one_error_line(stderr: str, *words: str) -> str:
    """The console holds the pipeline's own lines only, and one ERROR naming `words`."""
    lines = stderr.strip().splitlines()
    assert all(CONSOLE_LINE.match(line) for line in lines), stderr[-3000:]
    errors = [line for line in lines if " ERROR " in line and all(w in line for w in words)]
    assert errors, stderr[-3000:]
    return errors[-1]


@pytest.fixture(scope="module")
def idx(idx_dir):
    return idx_dir  # conftest's IDX files: 300 train, 120 test images


@pytest.fixture(scope="module")
def base_root(small_root):
    """A root after one successful small run, `_run_args` (conftest's small_root: read
    only, each test works on a copy)."""
    return small_root


def _copy(base_root, tmp_path):
    root = tmp_path / "root"
    copy_root(base_root, root)
    return root


def _run_id(root) -> str:
    [run_id] = os.listdir(os.path.join(root, "runs"))
    return run_id


# -- the metadata store: damaged, lost, recovered ------------------------------------------


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _garbage(path):
    size = os.path.getsize(path)
    open(path, "wb").write(os.urandom(size))


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage,backup", [("truncate", True), ("garbage", True), ("missing", False), ("empty", False)]
)
def test_a_damaged_or_lost_store_is_reported_then_recovered(
    base_root, tmp_path, idx, damage, backup
):
    root = _copy(base_root, tmp_path)
    run_id = _run_id(root)
    store = os.path.join(root, metadata.DB_FILE)
    assert len(metadata.backups(str(root))) == 1  # every run that ends takes one
    if not backup:
        shutil.rmtree(os.path.join(root, metadata.BACKUP_DIR))
    {
        "truncate": _truncate,
        "garbage": _garbage,
        "missing": os.remove,
        "empty": lambda p: open(p, "w").close(),
    }[damage](store)

    for command in (
        ["runs", "--root", root],
        ["show", run_id, "--root", root],
        _run_args(root, idx)[2:],
    ):
        done = _cli(*command)
        assert done.returncode == EXIT_ENVIRONMENT, (command, done.stderr[-2000:])
        line = _one_error_line(done.stderr, store)
        assert ("damaged" if backup else "missing") in line and "recover" in line

    done = _cli("recover", "--root", root, "--json")
    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert bool(result["restored_from"]) == backup
    if damage in ("truncate", "garbage"):  # the damaged file is kept, never deleted
        assert os.path.exists(result["moved_aside"])
    runs = json.loads(_cli("runs", "--root", root, "--json").stdout)
    assert [r["run_id"] for r in runs] == [run_id]
    assert runs[0]["status"] == ("succeeded" if backup else "recovered")
    # The root is a copy: the push record names the copy's serving directory, whether it
    # came from the backup or was rebuilt from the artifacts' _artifact.json.
    pushed = os.path.join(root, "artifacts", "push", run_id, "pushed_model")
    found = metadata.MetadataStore(str(root)).artifact_by_uri(pushed)
    assert found is not None
    assert found[0].properties["destination"].startswith(os.path.join(root, "serving") + os.sep)

    # The cache came back: the same command reuses every stage, and lineage is whole.
    done = _cli(*_run_args(root, idx)[2:])
    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    assert done.stdout.count(" cached ") == len(create_pipeline()), done.stdout
    model = os.path.join(root, "artifacts", "train", run_id, "model")
    lineage = json.loads(_cli("lineage", model, "--root", root, "--json").stdout)
    assert f"artifacts/ingest/{run_id}/examples" in json.dumps(lineage)  # back to the source


def test_backups_are_consistent_copies_and_bounded(tmp_path):
    root = str(tmp_path)
    store = metadata.MetadataStore(root)
    for i in range(metadata.KEEP_BACKUPS + 2):
        store.start_run(f"r{i}", {"status": "succeeded"})
        metadata.backup_store(root, f"r{i}")
        time.sleep(0.01)  # distinct modification times
    kept = metadata.backups(root)
    assert len(kept) == metadata.KEEP_BACKUPS
    assert kept[0].endswith(f"metadata-r{metadata.KEEP_BACKUPS + 1}.sqlite")
    con = sqlite3.connect(kept[0])
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not glob.glob(os.path.join(root, metadata.BACKUP_DIR, ".tmp-*"))


# -- read-only roots -----------------------------------------------------------------------


@needs_mounts
@pytest.mark.slow
def test_a_read_only_root_is_readable_and_refuses_writes(base_root, tmp_path, idx):
    root = _copy(base_root, tmp_path)
    shutil.rmtree(os.path.join(root, "locks"))  # reading needs no lock files
    run_id = _run_id(root)
    model = os.path.join(root, "artifacts", "train", run_id, "model")
    p = f"{PY} run_pipeline.py"
    done = _in_namespace(f"""
        mount --bind {root} {root}; mount -o remount,ro,bind {root}
        {p} runs --root {root} --json > {tmp_path}/runs.json
        {p} show {run_id} --root {root} > {tmp_path}/show.txt
        {p} lineage {model} --root {root} > {tmp_path}/lineage.txt
        {p} diff {run_id} {run_id} --root {root} > {tmp_path}/diff.txt
        {p} config --config dense > {tmp_path}/config.txt
        set +e
        {" ".join(_run_args(root, idx))}; echo "run=$?"
        {p} gc --root {root} --keep-last 0; echo "gc=$?"
    """)
    assert "run=74" in done.stdout and "gc=74" in done.stdout, done.stderr[-3000:]
    assert done.stderr.count("the pipeline root is not writable (Read-only file system)") == 2
    assert json.load(open(tmp_path / "runs.json"))[0]["run_id"] == run_id
    assert f"run {run_id}: succeeded" in open(tmp_path / "show.txt").read()
    assert "made by train" in open(tmp_path / "lineage.txt").read()
    assert not os.path.exists(os.path.join(root, "locks"))
    assert os.listdir(os.path.join(root, "runs")) == [run_id]  # nothing was started


# -- a full disk ----------------------------------------------------------------------------


@needs_mounts
@pytest.mark.slow
def test_a_disk_full_during_ingest_is_an_environment_failure(tmp_path, idx):
    root = tmp_path / "small"
    root.mkdir()
    done = _in_namespace(f"""
        mount -t tmpfs -o size=600k tmpfs {root}
        set +e; {" ".join(_run_args(root / "root", idx))}; echo "rc=$?"
        find {root} -name '.tmp-*' | sed 's/^/litter: /'
    """)
    assert "rc=74" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "litter:" not in done.stdout
    line = _one_error_line(done.stderr, "FAILED (exit 74) in stage ingest")
    assert "no space left on device" in line


@needs_mounts
@pytest.mark.slow
def test_a_disk_full_during_train_fails_cleanly_and_the_root_recovers(base_root, tmp_path, idx):
    disk = tmp_path / "disk"
    disk.mkdir()
    root = disk / "root"
    run = " ".join(_run_args(root, idx, "--set", "train.epochs=2"))
    done = _in_namespace(f"""
        mount -t tmpfs -o size=40m tmpfs {disk}
        cp -a {base_root} {root}
        free=$(df -k --output=avail {disk} | tail -1)
        fallocate -l $(( (free - 300) * 1024 )) {disk}/filler
        set +e; {run}; echo "full=$?"
        find {root} -name '.tmp-*' | sed 's/^/litter: /'
        rm {disk}/filler
        {run} > /dev/null 2>&1; echo "after=$?"
    """)
    assert "full=74" in done.stdout and "after=0" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "litter:" not in done.stdout
    line = _one_error_line(done.stderr, "FAILED (exit 74) in stage train")
    assert "no space left on device" in line and str(disk) in line


# -- the heartbeat -----------------------------------------------------------------------------

# A process of its own: the heartbeat's StopRun lands wherever the main thread is, an
# import included, and a half-imported module would break later tests in this process.
HEARTBEAT_FAILS = """
import sys
from pipeline import cli, metadata, runner
import run_pipeline

original = metadata.MetadataStore.update_run

def update_run(self, run_id, **properties):
    if set(properties) == {"heartbeat"}:
        raise OSError(28, "No space left on device")
    return original(self, run_id, **properties)

metadata.MetadataStore.update_run = update_run
runner.HEARTBEAT_S = 0.05
sys.exit(cli.main(run_pipeline.create_pipeline, sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_heartbeat_that_cannot_be_written_stops_the_run_cleanly(base_root, tmp_path, idx):
    root = _copy(base_root, tmp_path)
    # train.epochs=3: a stage that runs (the others are cached), long enough for a beat
    done = subprocess.run(
        [PY, "-c", HEARTBEAT_FAILS, *_run_args(root, idx, "--set", "train.epochs=3")[2:]],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        env=user_env(),
    )
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr[-3000:]
    line = _one_error_line(done.stderr, "FAILED (exit 74)")
    assert "no space left on device" in line
    assert "Traceback" not in done.stderr and "Exception in thread" not in done.stderr
    [view] = [
        json.load(open(p))
        for p in glob.glob(os.path.join(root, "runs", "*", "summary.json"))
        if json.load(open(p))["status"] == "failed"
    ]
    assert view["exit_code"] == EXIT_ENVIRONMENT and view["error"]["kind"] == "environment"


def test_a_lost_heartbeat_swallowed_by_the_work_still_stops_the_run(tmp_path, monkeypatch):
    """The heartbeat's StopRun is sent to the main thread, where code that catches it can
    carry on (once seen in CI: a whole run then succeeded without its liveness recorded).
    check(), called after the work, raises it there."""
    root = str(tmp_path)
    metadata.MetadataStore(root)  # an empty store for the heartbeat's own connection

    def update_run(self, run_id, **properties):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metadata.MetadataStore, "update_run", update_run)
    monkeypatch.setattr(runner, "HEARTBEAT_S", 0.01)
    heartbeat = runner.Heartbeat(root, "r1")
    swallowed = False
    heartbeat.start()
    deadline = time.time() + 30
    while not swallowed and time.time() < deadline:
        try:
            time.sleep(0.01)
        except StopRun:  # what a library's broad handler does with it
            swallowed = True
    assert swallowed, "the heartbeat never failed"
    with pytest.raises(StopRun) as raised:
        heartbeat.check()
    assert isinstance(raised.value.reason, EnvironmentFailure)
    assert "no space left on device" in str(raised.value.reason).lower()
    heartbeat.join(5)
    with pytest.raises(StopRun):
        heartbeat.check()  # the loss stays recorded


# -- litter ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_temporary_files_stay_in_the_root_and_go_with_the_run(base_root, tmp_path, idx):
    root = _copy(base_root, tmp_path)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    env = user_env(TMPDIR=str(system_tmp))
    proc = subprocess.Popen(
        _run_args(root, idx, "--set", "train.epochs=50"),
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 300

    def logs():
        return "".join(
            open(p).read() for p in glob.glob(os.path.join(root, "runs", "*", "pipeline.log"))
        )

    while "train: epoch 1/50" not in logs() and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.listdir(system_tmp) == []  # Beam's and autograph's files went to the run's scratch
    [killed] = [r for r in os.listdir(os.path.join(root, "runs")) if r != _run_id(base_root)]
    assert os.path.isdir(os.path.join(root, "tmp", killed))
    assert _cli("runs", "--root", root, env=env).returncode == EXIT_OK  # sweeps the dead run
    assert not os.path.exists(os.path.join(root, "tmp", killed))

    # A successful run leaves no empty directory behind (the SavedModel's own assets/ aside),
    # but leaves another live run's scratch alone, empty as it may be for now.
    other = os.path.join(root, "tmp", "another-live-run")
    os.makedirs(other)
    done = _cli(*_run_args(root, idx, "--set", "train.epochs=2")[2:], env=env)
    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    assert os.path.isdir(other)
    os.rmdir(other)
    os.rmdir(os.path.dirname(other))
    empty = [
        p
        for p, dirs, files in os.walk(root)
        if not dirs and not files and os.path.basename(p) != "assets"
    ]
    assert empty == []
    assert os.listdir(system_tmp) == []
