"""The stage graph: the six components in topological order."""

from components.evaluate.component import COMPONENT as EVALUATE
from components.export.component import COMPONENT as EXPORT
from components.ingest.component import COMPONENT as INGEST
from components.train.component import COMPONENT as TRAIN
from components.transform.component import COMPONENT as TRANSFORM
from components.validate.component import COMPONENT as VALIDATE

STAGES = (INGEST, VALIDATE, TRANSFORM, TRAIN, EVALUATE, EXPORT)
BY_NAME = {s.name: s for s in STAGES}
STAGE_NAMES = tuple(BY_NAME)


def upstream(spec) -> list[str]:
    """Stages whose outputs `spec` consumes, in graph order."""
    ups = {ref.split(".")[0] for _, ref in spec.inputs.values()}
    return [s for s in STAGE_NAMES if s in ups]
