"""A stage made for the wiring test: it copies its input examples, files and properties,
to its output unchanged, so the pipeline around it computes what it computes without it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from pipeline import artifacts
from pipeline.artifacts import Artifact
from pipeline.component import Component, ExecutionContext, Input
from pipeline.config import Params


@dataclass(frozen=True, kw_only=True)
class PassThroughParams(Params):
    pass


PASSTHROUGH = Component(
    name="passthrough",
    inputs={"examples": Input(artifacts.EXAMPLES)},
    outputs={"passed_examples": artifacts.EXAMPLES},
    params=PassThroughParams,
    executor_module="tests.stages.passthrough",
    description="copy the examples unchanged",
)


def run(
    params: PassThroughParams,
    ctx: ExecutionContext,
    *,
    examples: Artifact,
    passed_examples: Artifact,
) -> dict:
    shutil.copytree(
        examples.uri,
        passed_examples.uri,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(artifacts.COMMIT_MARKER, "_artifact.json"),
    )
    passed_examples.properties.update(
        {k: v for k, v in examples.properties.items() if k != artifacts.EXTERNAL_PATHS}
    )
    return {"splits": sorted(examples.properties.get("splits", []))}
