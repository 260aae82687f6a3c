"""The novelty scores of one trained model, computed in the graph (Keras ops), so evaluate,
the SavedModel and the TFLite models compute the same numbers (docs/stages.md, "Novelty
scores"). Higher = more unusual, for every score:

  reconstruction  the per-image BCE above the image's own pixel entropy (components/scoring.py;
                  -ELBO above it for VAEs)
  latent          the code's squared Mahalanobis distance to the nearest training class,
                  under class means and one shared covariance with Ledoit-Wolf shrinkage,
                  fitted on train codes (a Gaussian mixture whose modes are the seen classes),
                  per code dimension
  activations     RaPP's idea: the encoder run on the image and on its reconstruction; the
                  squared difference of every hidden layer's activations (and of the code),
                  per unit, each layer divided by its mean on train, averaged over layers
  combined        the three standardized on validation (its mean and standard deviation),
                  averaged with equal weights

`Fitted` holds what the fit on train and validation produced (components/novelty/fit.py);
it travels as the `scorer` artifact (scorer.npz) and becomes constants in the graph.
"""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tensorflow.io import gfile

from components import scoring
from components.novelty.component import SCORES

COMPONENTS = SCORES[:3]  # what `combined` averages
SCORER_NPZ = "scorer.npz"
SCORER_JSON = "scorer.json"


@dataclass(frozen=True)
class Fitted:
    """Everything the scores need beyond the model's weights, all float32 numpy."""

    whitening: np.ndarray  # [D, D]: L with L L^T = the precision of the shared covariance
    class_means: np.ndarray  # [K, D]: each seen class's mean code, times `whitening`
    layer_scales: np.ndarray  # [layers]: mean squared activation difference on train
    centre: np.ndarray  # [3]: validation mean of reconstruction, latent, activations
    spread: np.ndarray  # [3]: their validation standard deviations
    thresholds: dict  # score name -> the threshold_quantile of its validation scores

    def save(self, directory: str, summary: dict) -> None:
        """scorer.npz (the arrays) and scorer.json (thresholds and how they were fitted)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            whitening=self.whitening,
            class_means=self.class_means,
            layer_scales=self.layer_scales,
            centre=self.centre,
            spread=self.spread,
        )
        with gfile.GFile(posixpath.join(directory, SCORER_NPZ), "wb") as f:
            f.write(buffer.getvalue())
        with gfile.GFile(posixpath.join(directory, SCORER_JSON), "w") as f:
            json.dump({"thresholds": self.thresholds, **summary}, f, indent=1, sort_keys=True)

    @classmethod
    def load(cls, directory: str) -> Fitted:
        with gfile.GFile(posixpath.join(directory, SCORER_NPZ), "rb") as f:
            arrays = np.load(io.BytesIO(f.read()))
            fields = {k: np.asarray(arrays[k], np.float32) for k in arrays.files}
        with gfile.GFile(posixpath.join(directory, SCORER_JSON)) as f:
            thresholds = {k: float(v) for k, v in json.load(f)["thresholds"].items()}
        return cls(thresholds=thresholds, **fields)


def hidden_layers(encoder: keras.Model) -> list:
    """The encoder layers whose activations `activations` compares: every layer with
    weights except BatchNormalization (a rescaling of the layer before it), then the code."""
    picked = [
        layer.output
        for layer in encoder.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not picked or picked[-1] is not encoder.outputs[0]:
        picked.append(encoder.outputs[0])
    return picked


class _Activations:
    """images -> the list of hidden_layers' activations, sharing the model's weights."""

    def __init__(self, encoder: keras.Model):
        self.model = keras.Model(encoder.inputs, hidden_layers(encoder), name="activations")

    def __call__(self, images, training=False) -> list:
        out = self.model(images, training=training)
        return list(out) if isinstance(out, (list, tuple)) else [out]  # one layer: a tensor


def activations_model(model) -> _Activations:
    return _Activations(model.encoder)


def layer_differences(a: list, b: list):
    """[B, layers]: per layer, the mean over its units of the squared difference between two
    lists of activations (of the images and of their reconstructions)."""
    return ops.stack(
        [
            ops.mean(ops.square(ops.reshape(x - y, (ops.shape(x)[0], -1))), axis=1)
            for x, y in zip(a, b)
        ],
        axis=1,
    )


def latent_distance(code, whitening, class_means):
    """[B]: the squared Mahalanobis distance of each code to the nearest class mean, per
    code dimension (whitening and class_means from Fitted)."""
    y = ops.matmul(ops.cast(code, "float32"), whitening)  # [B, D]
    d = ops.mean(ops.square(y[:, None, :] - class_means[None, :, :]), axis=2)  # [B, K]
    return ops.min(d, axis=1)


class Scorer:
    """All SCORES of a batch for one model and its Fitted constants (Keras ops: eager,
    traced into a tf.function or the SavedModel)."""

    def __init__(self, model, fitted: Fitted):
        self.model, self.fitted = model, fitted
        self.hidden = activations_model(model)
        f = fitted
        self._whitening = ops.convert_to_tensor(f.whitening, "float32")
        self._means = ops.convert_to_tensor(f.class_means, "float32")
        self._scales = ops.convert_to_tensor(f.layer_scales, "float32")
        self._centre = ops.convert_to_tensor(f.centre, "float32")
        self._spread = ops.convert_to_tensor(f.spread, "float32")

    def forward(self, images) -> dict:
        """images float32 [B,28,28,1] in [0,1] -> {"code", "reconstruction", "scores": {name:
        [B] for every score}}: the encoder runs on the images and on their reconstruction,
        the decoder once."""
        seen = self.hidden(images, training=False)
        code = seen[-1]  # the last hidden layer is the code (hidden_layers)
        reconstruction = self.model.decode(code)
        differences = layer_differences(seen, self.hidden(reconstruction, training=False))
        raw = {
            "reconstruction": scoring.score(self.model, images, reconstruction),
            "latent": latent_distance(code, self._whitening, self._means),
            "activations": ops.mean(differences / self._scales, axis=1),
        }
        stacked = ops.stack([ops.cast(raw[k], "float32") for k in COMPONENTS], axis=1)
        raw["combined"] = ops.mean((stacked - self._centre) / self._spread, axis=1)
        return {
            "code": ops.cast(code, "float32"),
            "reconstruction": ops.cast(reconstruction, "float32"),
            "scores": {k: ops.cast(raw[k], "float32") for k in SCORES},
        }


def compiled(model, fitted: Fitted):
    """Scorer.forward compiled (traced once for any batch size): images float32
    [B,28,28,1] -> numpy "code" [B,D], "reconstruction" [B,28,28,1] and "scores" {name:
    [B]}."""
    scorer = Scorer(model, fitted)

    @tf.function(
        input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],
        reduce_retracing=True,
        autograph=False,  # no control flow on tensors: converting the code costs ~1 s a run
    )
    def run(images):
        return scorer.forward(images)

    def call(images) -> dict:
        out = run(tf.constant(images, tf.float32))
        return {
            "code": out["code"].numpy(),
            "reconstruction": out["reconstruction"].numpy(),
            "scores": {k: v.numpy() for k, v in out["scores"].items()},
        }

    return call
