"""validate: TFDV statistics per split, checked against the curated raw schema;
anomalies (including train/test label drift) stop the run."""

from pipeline import artifacts as a
from pipeline.component import ComponentSpec
from pipeline.schemas import RAW_SCHEMA, schema_digest


def _params(c):
    return {"schema": str(RAW_SCHEMA), "schema_sha256": schema_digest(RAW_SCHEMA)}


COMPONENT = ComponentSpec(
    name="validate",
    inputs={"examples": (a.EXAMPLES, "ingest.examples")},
    outputs={"statistics": a.STATISTICS, "anomalies": a.ANOMALIES},
    executor="components.validate.executor:run",
    params=_params,
    description="TFDV statistics and anomalies against schemas/raw",
)
