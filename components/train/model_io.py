"""The layout of train's outputs, shared by train (writer) and evaluate/export (readers).

    <model uri>/model.weights.h5   best weights by validation loss (Keras weights file)
    <model uri>/model.json         what models.build needs to rebuild the network, plus
                                   how it was trained (denoising, input feature, the
                                   classes left out: holdout_labels)
    <model_run uri>/history.csv    one row per epoch (Keras' CSVLogger columns)
    <model_run uri>/history.json   the same, one list per column
    <model_run uri>/tensorboard/   TensorBoard's event files

Weights only, as the model zoo prescribes: rebuild with models.build(...), call once on
zeros, load the weights.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath

import numpy as np
from tensorflow.io import gfile

import models
from pipeline.artifacts import Artifact
from pipeline.errors import StageError

WEIGHTS_FILE = "model.weights.h5"
MODEL_JSON = "model.json"
HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
TENSORBOARD_DIR = "tensorboard"


def write_model_json(uri: str, info: dict) -> None:
    with gfile.GFile(posixpath.join(uri, MODEL_JSON), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)


def write_history(uri: str, rows: list[dict]) -> None:
    """The ModelRun's history.csv and history.json from one dict per epoch."""
    keys = ["epoch"] + sorted({k for r in rows for k in r} - {"epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    with gfile.GFile(posixpath.join(uri, HISTORY_CSV), "w") as f:
        f.write(buf.getvalue())
    with gfile.GFile(posixpath.join(uri, HISTORY_JSON), "w") as f:
        json.dump({k: [r.get(k) for r in rows] for k in keys}, f, indent=1)


def read_model_json(model: Artifact) -> dict:
    path = posixpath.join(model.uri, MODEL_JSON)
    if not gfile.exists(path):
        raise StageError(f"model artifact has no {MODEL_JSON}: {path}")
    with gfile.GFile(path) as f:
        try:
            info = json.load(f)
        except json.JSONDecodeError as e:
            raise StageError(f"{path}: not valid JSON: {e}") from None
    for key in ("variant", "latent_dim", "beta", "activity_l1", "decoder", "input_feature"):
        if key not in info:
            raise StageError(f"{path}: missing key {key!r}")
    return info


def holdout_labels(info: dict) -> tuple[int, ...]:
    """The classes the model never saw in training (model.json; older models: none)."""
    return tuple(int(c) for c in info.get("holdout_labels", ()))


def build_model(info: dict):
    """A fresh (untrained, built) network as described by a model.json dict."""
    try:
        model = models.build(
            info["variant"],
            latent_dim=int(info["latent_dim"]),
            beta=float(info["beta"]),
            activity_l1=float(info["activity_l1"]),
            decoder=info["decoder"],
        )
    except (KeyError, ValueError) as e:
        raise StageError(f"cannot build model: {e}") from None
    model(np.zeros((1, 28, 28, 1), np.float32))  # create the variables
    return model


def load_model(model_artifact: Artifact):
    """Rebuild the trained Keras model from a Model artifact (model.json + weights)."""
    info = read_model_json(model_artifact)
    model = build_model(info)
    weights = posixpath.join(model_artifact.uri, WEIGHTS_FILE)
    if not gfile.exists(weights):
        raise StageError(f"model artifact has no weights file: {weights}")
    try:
        model.load_weights(weights)
    except Exception as e:  # h5 / layout mismatch: name the file
        raise StageError(
            f"cannot load weights {weights} into a {info['variant']} model "
            f"(latent_dim {info['latent_dim']}): {e}"
        ) from None
    return model
