"""The Model artifact's layout, shared by train (writer) and evaluate/export (readers).

    <model uri>/model.weights.h5   best weights by validation loss (Keras weights file)
    <model uri>/model.json         what models.build needs to rebuild the network, plus
                                   how it was trained (denoising, input feature, the
                                   classes left out: holdout_labels)

Weights only, as the model zoo prescribes: rebuild with models.build(...), call once on
zeros, load the weights.
"""

from __future__ import annotations

import json
import posixpath

import numpy as np
from tensorflow.io import gfile

from pipeline.artifacts import Artifact
from pipeline.errors import StageError

WEIGHTS_FILE = "model.weights.h5"
MODEL_JSON = "model.json"


def write_model_json(uri: str, info: dict) -> None:
    with gfile.GFile(posixpath.join(uri, MODEL_JSON), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)


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
    import models

    try:
        model = models.build(info["variant"], latent_dim=int(info["latent_dim"]),
                             beta=float(info["beta"]), activity_l1=float(info["activity_l1"]),
                             decoder=info["decoder"])
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
        raise StageError(f"cannot load weights {weights} into a {info['variant']} model "
                         f"(latent_dim {info['latent_dim']}): {e}") from None
    return model

