"""Test helpers: parameters built from the real config, and small artifacts shaped
exactly like the real ones, written to disk.

Images are real-shaped (28x28, uint8 pixel statistics like Fashion-MNIST's: a dark
background with a bright blob whose size depends on the label) so that models can
learn something in a few steps and probes beat chance.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct

import numpy as np

from components import features as F
from pipeline import artifacts, runner
from pipeline.artifacts import Artifact
from pipeline.component import ExecutionContext
from pipeline.console import QUIET_ENV
from pipeline.metadata import MetadataStore
from pipeline.views import Views
from run_pipeline import create_pipeline

COMPONENTS = {c.name: c for c in create_pipeline()}


def user_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would give the CLI: none of the logging switches the
    CLI sets for itself (pipeline/console.py), whatever this test process has set."""
    return {**{k: v for k, v in os.environ.items() if k not in QUIET_ENV}, **extra}


def load_config(preset: str | None = None, *overrides: str):
    """The pipeline's real config: defaults < preset < overrides ("section.key=value")."""
    return runner.load_config(COMPONENTS.values(), preset, overrides)


def params(stage: str, *overrides: str, preset: str | None = None):
    """A stage's parameters exactly as the runner builds them."""
    return COMPONENTS[stage].params.from_config(load_config(preset, *overrides))


def output_artifacts(stage: str, directory) -> dict[str, Artifact]:
    """Empty output directories for running `stage`'s executor alone."""
    out = {}
    for name, type_ in COMPONENTS[stage].outputs.items():
        out[name] = Artifact(type_, os.path.join(str(directory), name))
        os.makedirs(out[name].uri, exist_ok=True)
    return out


def run_executor(
    stage: str, params_, inputs: dict, outputs: dict, ctx: ExecutionContext | None = None
) -> dict:
    """Call a stage's executor directly on artifacts on disk (no commit, no metadata), as
    the launcher calls it."""
    return COMPONENTS[stage].call(params_, ctx or ExecutionContext(), inputs, outputs)


def fit_scorer(examples: Artifact, model: Artifact, directory, *overrides: str) -> Artifact:
    """The novelty stage's scorer for a trained model, run alone on the artifacts (its
    parameters from the real config with `overrides`)."""
    outputs = output_artifacts("novelty", directory)
    inputs = {"examples": examples, "model": model}
    run_executor("novelty", params("novelty", *overrides), inputs, outputs)
    return outputs["scorer"]


def neutral_fitted(model, threshold: float):
    """Scorer constants for a model without a fit (an untrained one in a unit test):
    identity whitening, one class at the origin, unit layer scales and standardization,
    every threshold `threshold`."""
    from components.novelty.component import SCORES
    from components.novelty.scores import Fitted, hidden_layers

    dim, layers = int(model.latent_dim), len(hidden_layers(model.encoder))
    return Fitted(
        np.eye(dim, dtype=np.float32),
        np.zeros((1, dim), np.float32),
        np.ones(layers, np.float32),
        np.zeros(3, np.float32),
        np.ones(3, np.float32),
        {k: threshold for k in SCORES},
    )


def small_run(source, *settings: str) -> list[str]:
    """The `key=value` settings of the suite's small end-to-end runs on the IDX files in
    `source`: two shards, one epoch of the dense model at batch 64, then `settings`. The
    model is no part of what these runs check, and the dense one traces and exports in a
    fraction of the default model's time; the default model runs end to end in
    tests/test_presets.py."""
    return [
        f"data.source=idx:{source}",
        "data.num_shards=2",
        "model.variant=dense",
        "train.epochs=1",
        "train.batch_size=64",
        *settings,
    ]


def blessed_small_run(source, *settings: str) -> list[str]:
    """small_run with the gate's ceiling lifted: synthetic images are far from
    Fashion-MNIST's, so the run is blessed (and pushed) on the comparison alone. conftest's
    small_root is this run; a run with these settings on its copy is reused from it."""
    return small_run(source, "gate.max_bce_excess=1.0", *settings)


def copy_root(source, dest) -> None:
    """A copy of a root, moved as a user would move one (without its lock files), with each
    run's summary.json and report and the index published again for where it now lies:
    they name artifacts by absolute path."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("locks"))
    store = MetadataStore(str(dest))
    views = Views.of(COMPONENTS.values())
    for run in store.list_runs():
        runner.publish(store, run["run_id"], views)


def set_args(settings) -> list[str]:
    """`--set` arguments of the command line for `key=value` settings."""
    return [arg for setting in settings for arg in ("--set", setting)]


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n,28,28] and labels [n]: a filled rectangle whose size codes the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, y in enumerate(labels):
        h = 6 + int(y) * 2
        top = rng.integers(0, 28 - h + 1)
        left = rng.integers(2, 8)
        images[i, top : top + h, left : left + 14] = rng.integers(120, 256)
    noise = rng.integers(0, 30, size=images.shape)
    return np.clip(images.astype(np.int64) + noise, 0, 255).astype(np.uint8), labels


def write_idx(
    directory, prefix: str, images: np.ndarray, labels: np.ndarray, compress: bool = True
) -> tuple[str, str]:
    """IDX files as MNIST ships them: big-endian magic and dims, then uint8 data."""
    os.makedirs(directory, exist_ok=True)
    ext = ".gz" if compress else ""
    img_path = os.path.join(directory, f"{prefix}-images-idx3-ubyte{ext}")
    lbl_path = os.path.join(directory, f"{prefix}-labels-idx1-ubyte{ext}")
    opener = gzip.open if compress else open
    with opener(img_path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28))
        f.write(images.astype(np.uint8).tobytes())
    with opener(lbl_path, "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)))
        f.write(labels.astype(np.uint8).tobytes())
    return img_path, lbl_path


def write_examples_artifact(
    uri: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    normalized: bool,
    noisy: dict[str, np.ndarray] | None = None,
    num_shards: int = 2,
) -> Artifact:
    """A committed Examples artifact with F.* features, as ingest (raw) or transform
    (normalized) writes it, through the same encoder, shard writer and commit.

    splits: split -> (images [n,28,28] uint8 or float, labels [n]); ids "<split>-<index>".
    """
    from components import records  # TensorFlow: only for the tests that write examples

    staging = artifacts.begin(uri)
    for split, (images, labels) in splits.items():
        os.makedirs(os.path.join(staging, f"Split-{split}"))
        pixels = {
            F.IMAGE: images.reshape(len(images), -1).astype(np.float32 if normalized else np.int64)
        }
        if normalized and noisy is not None:
            pixels[F.NOISY_IMAGE] = noisy[split].reshape(len(images), -1).astype(np.float32)
        for s, rows in enumerate(np.array_split(np.arange(len(images)), num_shards)):
            path = os.path.join(staging, f"Split-{split}", F.shard_name(s, num_shards))
            with records.shard_writer(path) as writer:
                if len(rows):  # the encoder needs at least one row
                    for example in records.encode(
                        [f"{split}-{i:05d}" for i in rows],
                        labels[rows],
                        {k: v[rows] for k, v in pixels.items()},
                    ):
                        writer.write(example)
    props = {
        "splits": list(splits),
        "counts": {s: len(v[0]) for s, v in splits.items()},
        "normalized": normalized,
        "noisy": noisy is not None,
    }
    artifacts.commit(staging, uri, {**props, "type": artifacts.EXAMPLES})
    return Artifact(type=artifacts.EXAMPLES, uri=uri, properties=props)


def read_shard(path: str, float_images: bool) -> dict[str, np.ndarray]:
    """All examples of one shard as numpy arrays (id bytes, label, flat image)."""
    from components import records  # TensorFlow, as above

    parts = list(records.iter_shard(path, float_images))
    if not parts:
        return {
            F.ID: np.zeros([0], object),
            F.LABEL: np.zeros([0], np.int64),
            F.IMAGE: np.zeros([0, F.PIXELS], np.float32 if float_images else np.int64),
        }
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def without_labels(columns: dict[str, np.ndarray], exclude_labels) -> dict[str, np.ndarray]:
    """An examples_io.load_split result without the examples of classes `exclude_labels`."""
    from components import examples_io  # TensorFlow, as above

    keep = examples_io.kept_mask(columns[F.LABEL], exclude_labels)
    return {k: v[keep] for k, v in columns.items()}
