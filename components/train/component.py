"""train: an autoencoder variant from the model zoo, fed by tf.data from the
normalized TFRecords; best-by-validation checkpoint, early stopping, resumable."""

import dataclasses

from pipeline import artifacts as a
from pipeline.component import ComponentSpec


def _params(c):
    return {
        "model": dataclasses.asdict(c.model),
        "train": dataclasses.asdict(c.train),
        "denoising": c.noise.kind != "none",
    }


COMPONENT = ComponentSpec(
    name="train",
    inputs={"examples": (a.EXAMPLES, "transform.examples")},
    outputs={"model": a.MODEL, "model_run": a.MODEL_RUN},
    executor="components.train.executor:run",
    params=_params,
    description="fit the autoencoder (GPU when visible)",
)
