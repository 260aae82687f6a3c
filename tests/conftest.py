"""Shared fixtures (helpers live in tests/helpers.py), and how the suite is spread over
the cores (pytest-xdist, `--dist loadgroup`: see pytest_collection_modifyitems)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import synthetic_images, write_examples_artifact, write_idx


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
def idx_dir(tmp_path_factory):
    """IDX files as MNIST ships them: 300 train and 120 test real-shaped images."""
    d = tmp_path_factory.mktemp("idx")
    write_idx(d, "train", *synthetic_images(300, 1))
    write_idx(d, "t10k", *synthetic_images(120, 2))
    return d
