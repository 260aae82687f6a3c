"""Test helpers: parameters built from the real config, and small artifacts shaped
exactly like the real ones, written to disk.

Images are real-shaped (28x28, uint8 pixel statistics like Fashion-MNIST's: a dark
background with a bright blob whose size depends on the label) so that models can
learn something in a few steps and probes beat chance.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from components import features as F
from pipeline import artifacts
from pipeline import runner
from pipeline.artifacts import Artifact
from pipeline.component import ExecutionContext
from run_pipeline import create_pipeline

COMPONENTS = {c.name: c for c in create_pipeline()}


def user_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would give the CLI: none of the logging switches the
    CLI sets for itself (pipeline/console.py), whatever this test process has set."""
    from pipeline.console import QUIET_ENV

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


def run_executor(stage: str, params_, inputs: dict, outputs: dict,
                 ctx: ExecutionContext | None = None) -> dict:
    """Call a stage's executor directly on artifacts on disk (no commit, no metadata), as
    the launcher calls it."""
    return COMPONENTS[stage].call(params_, ctx or ExecutionContext(), inputs, outputs)


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n,28,28] and labels [n]: a filled rectangle whose size codes the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, y in enumerate(labels):
        h = 6 + int(y) * 2
        top = rng.integers(0, 28 - h + 1)
        left = rng.integers(2, 8)
        images[i, top:top + h, left:left + 14] = rng.integers(120, 256)
    noise = rng.integers(0, 30, size=images.shape)
    return np.clip(images.astype(np.int64) + noise, 0, 255).astype(np.uint8), labels


def write_idx(directory, prefix: str, images: np.ndarray, labels: np.ndarray,
              compress: bool = True) -> tuple[str, str]:
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


def write_examples_artifact(uri: str, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                            normalized: bool, noisy: dict[str, np.ndarray] | None = None,
                            num_shards: int = 2, commit: bool = True) -> artifacts.Artifact:
    """An Examples artifact with F.* features, as ingest (raw) or transform (normalized) writes it.

    splits: split -> (images [n,28,28] uint8 or float, labels [n]).
    """
    import tensorflow as tf

    counts = {}
    for split, (images, labels) in splits.items():
        d = os.path.join(uri, f"Split-{split}")
        os.makedirs(d, exist_ok=True)
        flat = images.reshape(len(images), -1)
        shards = np.array_split(np.arange(len(flat)), num_shards)
        opts = tf.io.TFRecordOptions(compression_type=F.COMPRESSION)
        for s, idx in enumerate(shards):
            with tf.io.TFRecordWriter(os.path.join(d, F.shard_name(s, num_shards)), opts) as w:
                for i in idx:
                    feat = {
                        F.ID: tf.train.Feature(bytes_list=tf.train.BytesList(
                            value=[f"{split}-{i:05d}".encode()])),
                        F.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])])),
                    }
                    if normalized:
                        feat[F.IMAGE] = tf.train.Feature(float_list=tf.train.FloatList(value=flat[i]))
                        if noisy is not None:
                            feat[F.NOISY_IMAGE] = tf.train.Feature(float_list=tf.train.FloatList(
                                value=noisy[split].reshape(len(flat), -1)[i]))
                    else:
                        feat[F.IMAGE] = tf.train.Feature(int64_list=tf.train.Int64List(value=flat[i]))
                    w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
        counts[split] = len(flat)
    props = {"splits": list(splits), "counts": counts, "normalized": normalized,
             "noisy": noisy is not None}
    if commit:
        os.makedirs(uri, exist_ok=True)
        open(os.path.join(uri, artifacts.COMMIT_MARKER), "w").close()
        import json
        with open(os.path.join(uri, "_artifact.json"), "w") as f:
            json.dump(props, f)
    return artifacts.Artifact(type=artifacts.EXAMPLES, uri=uri, properties=props)


