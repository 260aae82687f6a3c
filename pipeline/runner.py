"""Chains the stages as an Apache Beam pipeline, as TFX's BeamDagRunner does: one Beam
step per component, each step's output (its artifact references) handed to the
steps that consume it as a side input, which is also what orders them.

Each step: compute the cache key; reuse a committed execution with the same key,
or run the executor into staging directories and commit them atomically; record
the execution, its artifacts and events in ML Metadata; write the stage's record
for summary.json. Executors start their own Beam pipelines, with the run's Beam
options, for their data-parallel work.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import time
import traceback
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import artifacts, summary
from pipeline.artifacts import Artifact
from pipeline.component import ComponentSpec, ExecutionContext
from pipeline.config import Config
from pipeline.errors import PipelineError, StageError
from pipeline.fingerprint import stage_fingerprint
from pipeline.graph import BY_NAME, STAGES, upstream
from pipeline.metadata import MetadataStore

log = logging.getLogger("pipeline")


@dataclass
class RunPlan:
    """Everything a stage step needs; plain data so Beam can pickle it."""

    config: dict
    root: str
    run_id: str
    only: str | None = None
    force: bool = False
    params: dict = field(default_factory=dict)  # stage -> params
    fingerprints: dict = field(default_factory=dict)  # stage -> fingerprint

    @property
    def run_dir(self) -> str:
        return posixpath.join(self.root, "runs", self.run_id)

    @property
    def metadata_path(self) -> str:
        return posixpath.join(self.root, "metadata.sqlite")

    def artifact_uri(self, stage: str, output: str) -> str:
        return posixpath.join(self.root, "artifacts", stage, self.run_id, output)

    def work_dir(self, stage: str) -> str:
        return posixpath.join(self.root, "work", stage, self.fingerprints[stage][:16])


def plan(config: Config, root: str, run_id: str, only: str | None = None,
         force: bool = False) -> RunPlan:
    """Parameters and cache keys of every stage, computed before anything runs."""
    p = RunPlan(config=config.to_dict(), root=root, run_id=run_id, only=only, force=force)
    for spec in STAGES:
        params = spec.params(config)
        inputs = {name: p.fingerprints[ref.split(".")[0]] + ":" + ref
                  for name, (_, ref) in spec.inputs.items()}
        external = spec.external_identity(params)
        p.params[spec.name] = params
        p.fingerprints[spec.name] = stage_fingerprint(
            spec.name, {"params": params, "external": external}, inputs, spec.executor_module)
    return p


class _StageStep(beam.DoFn):
    """One component as a Beam step (TFX: _ComponentAsDoFn)."""

    def __init__(self, spec_name: str, plan: RunPlan):
        self.spec_name = spec_name
        self.plan = plan

    def process(self, _, **upstream_outputs):
        spec = BY_NAME[self.spec_name]
        yield execute_stage(spec, self.plan, upstream_outputs)


def _as_artifacts(outputs: dict) -> dict[str, Artifact]:
    return {k: Artifact(**v) for k, v in outputs.items()}


def execute_stage(spec: ComponentSpec, plan: RunPlan, upstream_outputs: dict) -> dict:
    """Run or reuse one stage; returns its outputs as plain dicts for downstream steps."""
    store = MetadataStore(plan.metadata_path)
    contexts = store.run_contexts(plan.run_id)
    fingerprint = plan.fingerprints[spec.name]
    inputs = {}
    for name, (_, ref) in spec.inputs.items():
        stage, output = ref.split(".")
        inputs[name] = _as_artifacts(upstream_outputs[stage])[output]
    record = summary.StageRecord(name=spec.name, fingerprint=fingerprint)
    started = time.time()

    if plan.only and plan.only != spec.name:
        # --only: upstream stages are resolved from the cache, never run.
        cached = store.find_cached(spec.name, fingerprint)
        if cached is None:
            record.status = "failed"
            err = StageError(
                f"--only {plan.only}: upstream stage {spec.name!r} has no committed output for "
                f"this configuration (fingerprint {fingerprint[:12]}); run without --only first")
            record.set_error(err)
            summary.write_stage(plan.run_dir, record)
            raise err
        return _reuse(store, contexts, spec, plan, record, inputs, cached, started)

    cached = None if (plan.force or plan.only == spec.name) else store.find_cached(spec.name, fingerprint)
    if cached is not None:
        return _reuse(store, contexts, spec, plan, record, inputs, cached, started)

    log.info("[%s] started (%s)", spec.name, spec.description)
    staged = {}
    outputs = {}
    for name, type_ in spec.outputs.items():
        final = plan.artifact_uri(spec.name, name)
        staged[name] = (artifacts.begin(final), final)
        outputs[name] = Artifact(type=type_, uri=staged[name][0])
    record.status = "running"
    summary.write_stage(plan.run_dir, record)
    execution_id = store.record_execution(contexts, spec.name, "running", fingerprint, inputs, {})
    ctx = ExecutionContext(run_id=plan.run_id, beam_args=list(plan.config["beam"]["args"]),
                           work_dir=plan.work_dir(spec.name), log=logging.getLogger(f"pipeline.{spec.name}"))
    try:
        metrics = spec.executor_fn()(inputs, outputs, plan.params[spec.name], ctx) or {}
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised
        # Validation reports are worth keeping even though the stage failed; the
        # execution is FAILED in the store, so the cache never reuses them.
        keep = set(getattr(e, "keep_outputs", ()))
        failed_outputs = _commit_all(spec, {k: v for k, v in staged.items() if k in keep},
                                     outputs, fingerprint, plan)
        for name, (tmp, _) in staged.items():
            if name not in keep:
                artifacts.discard(tmp)
        record.status = "failed"
        record.duration_s = round(time.time() - started, 2)
        record.artifacts = {k: a.uri for k, a in failed_outputs.items()}
        record.set_error(e if isinstance(e, PipelineError) else StageError(
            f"{type(e).__name__}: {e}"), traceback.format_exc())
        summary.write_stage(plan.run_dir, record)
        store.record_execution(contexts, spec.name, "failed", fingerprint, inputs, failed_outputs,
                               {"error": record.error["message"]}, execution_id=execution_id)
        log.error("[%s] FAILED after %.1fs: %s", spec.name, record.duration_s, record.error["message"])
        raise
    committed = _commit_all(spec, staged, outputs, fingerprint, plan)
    record.status = "ran"
    record.duration_s = round(time.time() - started, 2)
    record.metrics = metrics
    record.artifacts = {k: a.uri for k, a in committed.items()}
    record.execution_id = store.record_execution(
        contexts, spec.name, "complete", fingerprint, inputs, committed,
        {"metrics": metrics, "duration_s": record.duration_s}, execution_id=execution_id)
    summary.write_stage(plan.run_dir, record)
    log.info("[%s] finished in %.1fs", spec.name, record.duration_s)
    return {k: dataclasses.asdict(a) for k, a in committed.items()}


def _commit_all(spec, staged, outputs, fingerprint, plan) -> dict[str, Artifact]:
    committed = {}
    for name, (tmp, final) in staged.items():
        props = dict(outputs[name].properties)
        props.update({"fingerprint": f"{fingerprint}:{spec.name}.{name}", "producer": spec.name,
                      "run_id": plan.run_id, "type": outputs[name].type})
        artifacts.commit(tmp, final, props)
        committed[name] = Artifact(type=outputs[name].type, uri=final, properties=props)
    return committed


def _reuse(store, contexts, spec, plan, record, inputs, cached, started) -> dict:
    record.status = "cached"
    record.artifacts = {k: a.uri for k, a in cached.items()}
    # Earlier metrics travel with the cached artifacts' execution; look them up for the summary.
    record.metrics = summary.cached_metrics(plan.root, spec.name, record.artifacts)
    record.execution_id = store.record_execution(contexts, spec.name, "cached", record.fingerprint,
                                                 inputs, cached)
    record.duration_s = round(time.time() - started, 2)
    summary.write_stage(plan.run_dir, record)
    log.info("[%s] cached: reusing %s", spec.name, ", ".join(record.artifacts.values()))
    return {k: dataclasses.asdict(a) for k, a in cached.items()}


def run(config: Config, root: str, run_id: str, only: str | None = None, force: bool = False) -> dict:
    """Run the pipeline; returns the summary. Raises the failing stage's error."""
    root = os.path.abspath(root) if "://" not in root else root
    p = plan(config, root, run_id, only=only, force=force)
    summary.start(p.run_dir, run_id, p.config, [s.name for s in STAGES])
    MetadataStore(p.metadata_path).start_run(run_id, p.config)
    stage_names = [s.name for s in STAGES]
    last = stage_names.index(only) if only else len(stage_names) - 1
    # The DAG itself is tiny; it always runs in-process. The Beam options of the
    # run apply to the executors' data-parallel pipelines.
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
        outputs = {}
        for spec in STAGES[: last + 1]:
            side = {up: beam.pvalue.AsSingleton(outputs[up]) for up in upstream(spec)}
            outputs[spec.name] = (
                pipeline
                | f"Start[{spec.name}]" >> beam.Create([spec.name])
                | f"Run[{spec.name}]" >> beam.ParDo(_StageStep(spec.name, p), **side))
    return summary.finish(p.run_dir)
