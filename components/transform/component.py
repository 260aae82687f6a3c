"""transform: pixels to float in [0,1]; a deterministic noisy copy for the denoising
variants; the output validated against the curated normalized schema."""

from pipeline import artifacts as a
from pipeline.component import ComponentSpec
from pipeline.schemas import NORMALIZED_SCHEMA, schema_digest


def _params(c):
    return {
        "noise_kind": c.noise.kind,
        "noise_factor": c.noise.factor if c.noise.kind != "none" else 0.0,
        "seed": c.train.seed,
        "num_shards": c.data.num_shards,
        "schema": str(NORMALIZED_SCHEMA),
        "schema_sha256": schema_digest(NORMALIZED_SCHEMA),
    }


COMPONENT = ComponentSpec(
    name="transform",
    # statistics: only so transform runs after validation has passed.
    inputs={"examples": (a.EXAMPLES, "ingest.examples"),
            "statistics": (a.STATISTICS, "validate.statistics")},
    outputs={"examples": a.EXAMPLES, "statistics": a.STATISTICS, "anomalies": a.ANOMALIES},
    executor="components.transform.executor:run",
    params=_params,
    description="normalize to [0,1], add noise, validate against schemas/normalized",
)
