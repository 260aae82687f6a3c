"""export: SavedModel with encode / decode / reconstruct / serving_default signatures,
and the embeddings of every example of every split (Parquet + TensorBoard projector)."""

from pipeline import artifacts as a
from pipeline.component import ComponentSpec


def _params(c):
    return {"batch_size": 512}


COMPONENT = ComponentSpec(
    name="export",
    inputs={"model": (a.MODEL, "train.model"),
            "examples": (a.EXAMPLES, "transform.examples")},
    outputs={"saved_model": a.SAVED_MODEL, "embeddings": a.EMBEDDINGS},
    executor="components.export.executor:run",
    params=_params,
    description="SavedModel + embeddings",
)
