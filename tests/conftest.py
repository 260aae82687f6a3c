"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import synthetic_images, write_examples_artifact, write_idx


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
