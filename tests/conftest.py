"""Shared fixtures (helpers live in tests/helpers.py), and how the suite is spread over
the cores (pytest-xdist, `--dist loadgroup`: see pytest_collection_modifyitems). What is
costly and only read afterwards (the IDX files, a root after one small run) is built once
for all workers (build_once)."""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import run_pipeline
from pipeline.errors import EXIT_OK
from tests.helpers import (
    blessed_small_run,
    set_args,
    synthetic_images,
    write_examples_artifact,
    write_idx,
)


@pytest.hookimpl(trylast=True)  # after the mark plugin has deselected, and after xdist's hook
def pytest_collection_modifyitems(config, items):
    """The tests of a module that share a module-scoped fixture (a whole pipeline run, a
    trained model) form one xdist group: `--dist loadgroup` sends them to one worker as one
    unit, so the fixture is built once (each worker would build its own copy, and a worker
    running other tests in between would tear it down and build it again)."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        if defs and any(d[-1].scope == "module" for d in defs.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    if getattr(config.option, "loadgroup", False):  # set in xdist's workers
        for item in items:
            _name_the_group(item)


def _name_the_group(item) -> None:
    """loadgroup reads a test's group from an `@group` suffix of its node id, which
    pytest-xdist 3.8 still writes to the attribute pytest 9 no longer reads (pytest-xdist
    issue 1386); the suffix goes on the node id here until xdist does it again."""
    groups = {
        str(m.args[0] if m.args else m.kwargs.get("name", "default"))
        for m in item.iter_markers("xdist_group")
    }
    if groups and "@" not in item.nodeid.rpartition("]")[2]:
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(groups))}")


@pytest.fixture(scope="session")
def normalized_examples(tmp_path_factory):
    """A committed normalized Examples artifact with a gaussian-noisy copy (train 320,
    validation 64, test 128)."""
    rng = np.random.default_rng(1)
    splits, noisy = {}, {}
    for split, n, seed in (("train", 320, 1), ("validation", 64, 2), ("test", 128, 3)):
        images, labels = synthetic_images(n, seed)
        x = images.astype(np.float32) / 255.0
        splits[split] = (x, labels)
        noisy[split] = np.clip(x + 0.5 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    uri = str(tmp_path_factory.mktemp("normalized") / "examples")
    return write_examples_artifact(uri, splits, normalized=True, noisy=noisy)


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory, worker_id) -> Path:
    """A directory that every xdist worker of this session sees: the parent of their own
    temporary directories (this session's own one without xdist)."""
    base = tmp_path_factory.getbasetemp()
    shared = (base if worker_id == "master" else base.parent) / "shared"
    shared.mkdir(exist_ok=True)
    return shared


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """`path`, built by `build(path)` in the worker that asks first while the others wait
    on a file lock, then reused by all. Nothing may write to it afterwards: tests that
    change it work on a copy. A build that failed leaves no marker; the next one redoes it."""
    built = path.with_name(path.name + ".built")
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            shutil.rmtree(path, ignore_errors=True)
            build(path)
            built.touch()
    return path


@pytest.fixture(scope="session")
def idx_dir(shared_tmp):
    """IDX files as MNIST ships them: 300 train and 120 test real-shaped images. One
    directory for all workers: its path is part of the data source, so of every cache key,
    and small_root's runs are reused only by runs on the same path."""

    def build(d: Path) -> None:
        write_idx(d, "train", *synthetic_images(300, 1))
        write_idx(d, "t10k", *synthetic_images(120, 2))

    return build_once(shared_tmp / "idx", build)


@pytest.fixture(scope="session")
def small_root(shared_tmp, idx_dir) -> Path:
    """A root after one successful small run, r1 (tests.helpers.blessed_small_run on
    idx_dir: blessed and pushed), made once for the session. Read only: tests take a copy
    (tests.helpers.copy_root)."""

    def build(root: Path) -> None:
        settings = set_args(blessed_small_run(idx_dir))
        args = ["run", "--root", str(root), "--run-id", "r1", *settings]
        assert run_pipeline.main(args) == EXIT_OK

    return build_once(shared_tmp / "small-root", build)
