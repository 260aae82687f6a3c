"""examples_io's two input paths (in memory, streaming from the shards) and train's choice
between them by train.memory_budget_mb (issue 10, data larger than memory)."""

from __future__ import annotations

import logging

import pytest

from components import examples_io
from components import features as F
from pipeline.artifacts import Artifact
from pipeline.errors import ConfigError
from tests.helpers import output_artifacts, params, run_executor

TRAIN_N, VAL_N = 320, 64  # the normalized_examples fixture (tests/conftest.py)


def _pairs(ds) -> list[tuple[float, float]]:
    """Each example as (sum of x, sum of y): noisy input and clean target together identify it."""
    return [
        (round(float(x.sum()), 3), round(float(y.sum()), 3))
        for xb, yb in ds
        for x, y in zip(xb.numpy(), yb.numpy())
    ]


def _all_pairs(examples) -> list[tuple[float, float]]:
    split = examples_io.load_split(examples, "train")
    return sorted(
        (round(float(n.sum()), 3), round(float(c.sum()), 3))
        for n, c in zip(split[F.NOISY_IMAGE], split[F.IMAGE])
    )


@pytest.mark.parametrize("cache", [True, False])
def test_each_path_yields_every_example_once_per_epoch(normalized_examples, cache):
    """A shuffle buffer smaller than the split (100 < 320) on the streaming path: still every
    example exactly once per epoch, reshuffled each epoch, reproducibly from the seed."""
    expected = _all_pairs(normalized_examples)
    assert len(set(expected)) == TRAIN_N  # the pairs identify the examples

    def make():
        return examples_io.dataset(
            normalized_examples,
            "train",
            50,
            F.NOISY_IMAGE,
            shuffle=True,
            seed=3,
            shuffle_buffer=100,
            cache=cache,
        )

    ds = make()
    epoch1, epoch2 = _pairs(ds), _pairs(ds)
    assert sorted(epoch1) == expected and sorted(epoch2) == expected
    assert epoch1 != epoch2
    assert _pairs(make()) == epoch1  # a fresh pipeline, same seed: the same order
    shapes = [tuple(x.shape) for x, _ in ds]
    assert shapes == [(50, 28, 28, 1)] * 6 + [(20, 28, 28, 1)]


def test_unshuffled_streaming_is_the_in_memory_order(normalized_examples):
    streamed = examples_io.dataset(normalized_examples, "validation", 16, cache=False)
    cached = examples_io.dataset(normalized_examples, "validation", 16, cache=True)
    assert _pairs(streamed) == _pairs(cached) and len(_pairs(streamed)) == VAL_N


def test_plan_cache_compares_the_parsed_size_with_the_budget(normalized_examples):
    splits = ("train", "validation")
    per_image = F.PIXELS * 4
    assert examples_io.bytes_per_example((F.IMAGE,)) == per_image
    assert examples_io.bytes_per_example((F.NOISY_IMAGE, F.IMAGE)) == 2 * per_image
    assert examples_io.bytes_per_example((F.IMAGE, F.IMAGE)) == per_image  # input = target

    clean = (TRAIN_N + VAL_N) * per_image  # 1.15 MiB
    plan = examples_io.plan_cache(normalized_examples, splits, (F.IMAGE,), 2)
    assert plan.cache and plan.needed_bytes == clean and "in memory" in plan.reason
    plan = examples_io.plan_cache(normalized_examples, splits, (F.IMAGE,), 1)
    assert not plan.cache and "> train.memory_budget_mb 1" in plan.reason
    # A denoising fit holds two images per example: the same budget no longer suffices.
    plan = examples_io.plan_cache(normalized_examples, splits, (F.NOISY_IMAGE, F.IMAGE), 2)
    assert not plan.cache and plan.needed_bytes == 2 * clean
    assert not examples_io.plan_cache(normalized_examples, splits, (F.IMAGE,), 0).cache

    no_counts = Artifact(
        normalized_examples.type,
        normalized_examples.uri,
        properties={**normalized_examples.properties, "counts": {}},
    )
    plan = examples_io.plan_cache(no_counts, splits, (F.IMAGE,), 10**6)
    assert not plan.cache and plan.needed_bytes is None and "no example count" in plan.reason


def test_memory_budget_is_checked_by_the_config():
    assert params("train").memory_budget_mb == 1024
    with pytest.raises(ConfigError, match="train.memory_budget_mb"):
        params("train", "train.memory_budget_mb=-1")


@pytest.mark.parametrize("budget, expected", [(1024, "in_memory"), (1, "streaming")])
def test_train_picks_the_path_by_the_budget_and_records_it(
    normalized_examples, tmp_path, caplog, monkeypatch, budget, expected
):
    built = {}
    dataset = examples_io.dataset

    def recording_dataset(examples, split, *args, **kwargs):
        built[split] = kwargs.get("cache", True)
        return dataset(examples, split, *args, **kwargs)

    monkeypatch.setattr(examples_io, "dataset", recording_dataset)
    p = params(
        "train",
        "model.variant=dense",
        "train.epochs=1",
        "train.early_stopping_patience=0",
        f"train.memory_budget_mb={budget}",
    )
    with caplog.at_level(logging.INFO, logger="pipeline"):
        metrics = run_executor(
            "train", p, {"examples": normalized_examples}, output_artifacts("train", tmp_path)
        )
    cache = expected == "in_memory"
    assert built == {"train": cache, "validation": cache}
    assert metrics["input_pipeline"] == expected and metrics["memory_budget_mb"] == budget
    assert metrics["input_mib_parsed"] == round((TRAIN_N + VAL_N) * F.PIXELS * 4 / 2**20, 1)
    assert metrics["train_examples"] == TRAIN_N and metrics["epochs_run"] == 1
    line = next(r.getMessage() for r in caplog.records if "input pipeline" in r.getMessage())
    assert ("in memory" if cache else "streaming from the shards") in line
    assert f"train.memory_budget_mb {budget}" in line
