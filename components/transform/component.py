"""transform: pixels to float in [0,1]; a deterministic noisy copy for the denoising
variants; the output validated against the curated normalized schema. Owns the [noise]
config keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from components.transform import noise
from pipeline import artifacts
from pipeline.component import Component, Input
from pipeline.config import Params, key, require
from pipeline.schemas import NORMALIZED_SCHEMA, schema_digest
from pipeline.views import DataOutputs, View

EXAMPLES_KEY = "examples"
RAW_ANOMALIES_KEY = "raw_anomalies"
TRANSFORMED_EXAMPLES_KEY = "transformed_examples"
STATISTICS_KEY = "statistics"
ANOMALIES_KEY = "anomalies"


@dataclass(frozen=True, kw_only=True)
class TransformParams(Params):
    noise_kind: str = key("noise.kind", "none", f"one of {noise.KINDS}")
    noise_factor: float = key(
        "noise.factor",
        0.5,
        "gaussian: stddev; salt_pepper: fraction of pixels flipped to 0 "
        "or 1; mask: fraction zeroed",
    )
    seed: int = key("train.seed")  # the run seed: noise is drawn from (seed, example id)
    schema: str = NORMALIZED_SCHEMA

    def check(self) -> None:
        require(
            self.noise_kind in noise.KINDS, "noise.kind", f"one of {noise.KINDS}", self.noise_kind
        )
        # (0, 10] whatever noise.kind says: with none the factor is unused, but a value out
        # of range is a mistake all the same. salt_pepper and mask read it as a fraction.
        fraction = self.noise_kind in ("salt_pepper", "mask")
        require(
            0.0 < self.noise_factor <= 10.0 and (not fraction or self.noise_factor < 1.0),
            "noise.factor",
            f"a {self.noise_kind} fraction in (0, 1)"
            if fraction
            else "a gaussian stddev in (0, 10]"
            if self.noise_kind == "gaussian"
            else "a number in (0, 10] (checked even with noise.kind none)",
            self.noise_factor,
        )

    def cache_key(self) -> dict:
        key_ = {**dataclasses.asdict(self), "schema_sha256": schema_digest(self.schema)}
        if self.noise_kind == "none":  # factor and seed change nothing without noise
            key_.update(noise_factor=None, seed=None)
        return key_


TRANSFORM = Component(
    name="transform",
    inputs={EXAMPLES_KEY: Input(artifacts.EXAMPLES), RAW_ANOMALIES_KEY: Input(artifacts.ANOMALIES)},
    outputs={
        TRANSFORMED_EXAMPLES_KEY: artifacts.EXAMPLES,
        STATISTICS_KEY: artifacts.STATISTICS,
        ANOMALIES_KEY: artifacts.ANOMALIES,
    },
    params=TransformParams,
    executor_module="components.transform.executor",
    description="normalize to [0,1], add noise, validate against schemas/normalized",
    published_on_rejection=(STATISTICS_KEY, ANOMALIES_KEY),
    view=View(headline=("num_examples",), data=DataOutputs(STATISTICS_KEY, ANOMALIES_KEY)),
)
