"""The stage DAG as a Beam pipeline, as TFX's BeamDagRunner builds it: one step per
component, each calling the launcher with its upstream steps' artifacts as side inputs.

The DAG itself is tiny and always runs in-process; the run's Beam options (beam.args)
apply to the data-parallel pipelines inside the executors.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.artifacts import Artifact
from pipeline.component import Component
from pipeline.launcher import RunContext, launch


class _ComponentStep(beam.DoFn):
    """One component as a Beam step (TFX: _ComponentAsDoFn)."""

    def __init__(self, component: Component, params, run: RunContext):
        self.component, self.params, self.run = component, params, run

    def process(self, _, **upstream):
        inputs = {
            k: Artifact(**upstream[ch.producer][ch.output])
            for k, ch in self.component.channels.items()
        }
        outputs = launch(self.component, self.params, inputs, self.run)
        yield {k: dataclasses.asdict(a) for k, a in outputs.items()}


def run(components, params: dict, ctx: RunContext) -> None:
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
        steps: dict[str, beam.PCollection] = {}
        for c in components:
            side = {up: beam.pvalue.AsSingleton(steps[up]) for up in c.upstream}
            steps[c.name] = (
                pipeline
                | f"Start[{c.name}]" >> beam.Create([c.name])
                | f"Run[{c.name}]" >> beam.ParDo(_ComponentStep(c, params[c.name], ctx), **side)
            )
