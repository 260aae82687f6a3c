"""ingest: MNIST / Fashion-MNIST (tfds or original IDX files) -> sharded GZIP TFRecords
with train / validation / test splits; validation carved deterministically from train."""

from pipeline import artifacts as a
from pipeline.component import ComponentSpec


def _params(c):
    return {
        "dataset": c.data.dataset,
        "source": c.data.source,
        "max_examples": c.data.max_examples,
        "validation_fraction": c.data.validation_fraction,
        "num_shards": c.data.num_shards,
    }


COMPONENT = ComponentSpec(
    name="ingest",
    inputs={},
    outputs={"examples": a.EXAMPLES},
    executor="components.ingest.executor:run",
    params=_params,
    external_fingerprint="components.ingest.sources:source_identity",
    description="read the dataset, write sharded TFRecords per split",
)
