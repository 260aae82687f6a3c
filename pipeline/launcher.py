"""One component, launched as TFX's launcher does it: driver, executor, publisher.

- driver: reuse a committed execution with the same fingerprint (the cache) or, for
  `--only`, insist on one; otherwise take the stage lock, so that of two runs needing
  the same stage output one computes it and the other waits and reuses it;
- executor: stage the outputs under temporary names and call the component's executor
  with its typed parameters;
- publisher: commit the outputs by rename and record the execution, its events and its
  metrics in ML Metadata, then re-render the run's summary.json from there.

The runner, the component tests that need commits, and the benchmarks all go through
`launch`.
"""

from __future__ import annotations

import logging
import posixpath
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline import artifacts, console, locks, summary
from pipeline import fingerprint as fingerprint_lib
from pipeline.artifacts import Artifact
from pipeline.component import BLESSED_MODEL_DATA, Component, ExecutionContext
from pipeline.errors import DataError, Interrupted, StageError, describe
from pipeline.metadata import MetadataStore
from pipeline.views import Views

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class RunContext:
    """Where and how this run executes; plain data, so Beam can pickle it."""

    root: str
    run_id: str
    beam_args: tuple[str, ...]  # the run's beam.args (runner.BeamParams)
    only: str | None = None  # run just this stage; the others must come from the cache
    force: bool = False  # ignore the cache
    views: Views = Views()  # what the run's summary.json shows (pipeline/views.py)

    def artifact_uri(self, stage: str, output: str) -> str:
        return posixpath.join(self.root, "artifacts", stage, self.run_id, output)

    def work_dir(self, stage: str, fingerprint: str) -> str:
        return posixpath.join(self.root, "work", stage, fingerprint[:16])


def resolve(
    store: MetadataStore | None, component: Component, key: str, params, candidate: str | None
) -> Artifact | None:
    """The `Resolved` input `key` of `component` (its strategy: pipeline/component.py), or
    None. `candidate`: the fingerprint of the input the spec names as its candidate."""
    spec = component.resolved[key]
    if store is None:
        return None
    if spec.strategy == BLESSED_MODEL_DATA:
        scope = params.reference_scope()
        return (
            None
            if scope is None
            else store.blessed_model_data(
                scope, via=spec.candidate, stage=component.name, output=spec.output, usable=usable
            )
        )
    lineage = params.baseline_lineage()
    if lineage is None:
        return None
    return store.latest_blessed(
        spec.type, spec.candidate, lineage, exclude=candidate, usable=usable
    )


def fingerprint_inputs(
    component: Component,
    inputs: Mapping[str, Artifact | str | None],
    resolved: Mapping[str, Artifact | None],
) -> dict[str, str | None]:
    """The input identities a stage's fingerprint covers: every channel input, and the
    resolved inputs whose spec says `in_fingerprint`."""
    ids = {k: a if isinstance(a, str) or a is None else identity(a) for k, a in inputs.items()}
    ids.update(
        {
            k: identity(a, resolved=True)
            for k, a in resolved.items()
            if component.resolved[k].in_fingerprint
        }
    )
    return ids


def identity(artifact: Artifact | None, resolved: bool = False) -> str | None:
    """What of an input enters its consumer's fingerprint: the fingerprint its producer
    gave it (its content); for a resolved input also its ML Metadata id, since a model
    retrained with --force keeps its fingerprint but not its weights."""
    if artifact is None:
        return None
    fp = artifact.properties.get("fingerprint")
    return f"{fp}#{artifact.id}" if resolved else fp


def stage_fingerprint(component: Component, params, identities: dict[str, str | None]) -> str:
    return fingerprint_lib.stage_fingerprint(
        component.name, params.cache_key(), identities, component.executor_module
    )


def launch(
    component: Component, params, inputs: dict[str, Artifact], run: RunContext
) -> dict[str, Artifact]:
    """Run or reuse one stage given its upstream artifacts; returns its committed
    outputs. Raises what the stage raised. The driver resolves the `Resolved` inputs now
    and keys the stage by what it really gets; one that found nothing is None for the
    executor, and ML Metadata records no event for it."""
    store = MetadataStore(run.root)
    # Resolved inputs outside the fingerprint are looked up only if the stage executes.
    resolved = {
        k: resolve(store, component, k, params, identity(inputs.get(spec.candidate)))
        for k, spec in component.resolved.items()
        if spec.in_fingerprint
    }
    fingerprint = stage_fingerprint(
        component, params, fingerprint_inputs(component, inputs, resolved)
    )
    inputs = {**inputs, **{k: a for k, a in resolved.items() if a is not None}}
    attempt = _Attempt(store, component, fingerprint, run)
    use_cache = not run.force and run.only != component.name
    if run.only and run.only != component.name:
        hit = store.find_cached(component.name, fingerprint, usable)
        if hit is None:
            error = StageError(
                f"--only {run.only}: upstream stage {component.name!r} has no committed output "
                f"for this configuration (fingerprint {fingerprint[:12]}); run without --only "
                "first"
            )
            _record_failure(attempt, inputs, error)
            raise error
        return _reuse(attempt, inputs, hit)
    if use_cache and (hit := store.find_cached(component.name, fingerprint, usable)):
        return _reuse(attempt, inputs, hit)

    def waiting(holder: str) -> None:
        log.info(
            "[%s] waiting: run %s is computing this stage (fingerprint %s)",
            component.name,
            holder or "?",
            fingerprint[:12],
        )

    with locks.held(
        run.root, f"stage-{component.name}-{fingerprint[:16]}", note=run.run_id, on_wait=waiting
    ):
        # Whoever held the lock may have just published exactly this.
        if use_cache and (hit := store.find_cached(component.name, fingerprint, usable)):
            return _reuse(attempt, inputs, hit)
        for k, spec in component.resolved.items():
            if not spec.in_fingerprint and (a := resolve(store, component, k, params, None)):
                inputs[k] = a
        return _execute(attempt, params, inputs)


def usable(a: Artifact) -> bool:
    """Committed on disk (a deleted artifact is never reused), and everything outside the
    root it stands for still there (`external_paths`: e.g. a push record stands for its
    model directory, so a wiped serving directory is pushed to again)."""
    return artifacts.is_committed(a.uri) and all(
        artifacts.exists(p) for p in a.properties.get(artifacts.EXTERNAL_PATHS, ())
    )


@dataclass(frozen=True)
class _Attempt:
    """One launch of a stage: the store it is recorded in, what keys it, since when."""

    store: MetadataStore
    component: Component
    fingerprint: str
    run: RunContext
    started: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.component.name

    def duration(self) -> float:
        return round(time.time() - self.started, 2)

    def record(self, state: str, properties: dict, **events) -> int:
        """This execution's state in ML Metadata, then the run's summary.json from there."""
        execution_id = self.store.put_execution(
            self.run.run_id, self.name, state, properties, **events
        )
        summary.write(self.store, self.run.run_id, self.run.views)
        return execution_id


def _execute(a: _Attempt, params, inputs: dict[str, Artifact]) -> dict[str, Artifact]:
    run = a.run
    staged = {k: artifacts.begin(run.artifact_uri(a.name, k)) for k in a.component.outputs}
    outputs = {k: Artifact(type=t, uri=staged[k]) for k, t in a.component.outputs.items()}
    execution_id = a.record(
        "running",
        {"fingerprint": a.fingerprint, "started": a.started, "params": params.cache_key()},
        inputs=inputs,
    )
    log.info("[%s] started: %s", a.name, a.component.description)
    try:
        with console.stderr_to_log():  # what libraries print while they are imported
            a.component.executor  # noqa: B018 - loads (and checks) it
        metrics = a.component.call(params, _context(a), inputs, outputs)
    except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
        _record_exception(a, exc, staged, outputs, execution_id)
        raise
    duration = a.duration()
    committed = _commit(
        a,
        staged,
        outputs,
        {
            "stage": a.name,
            "fingerprint": a.fingerprint,
            "started": a.started,
            "duration_s": duration,
            "metrics": metrics,
            "inputs": {k: artifacts.relative_uri(run.root, x.uri) for k, x in inputs.items()},
        },
    )
    a.record(
        "complete",
        {"metrics": metrics, "duration_s": duration},
        outputs=committed,
        execution_id=execution_id,
    )
    log.info("[%s] finished in %.1fs", a.name, duration)
    return committed


def _context(a: _Attempt) -> ExecutionContext:
    run = a.run
    work_dir = run.work_dir(a.name, a.fingerprint)
    if run.force:  # --force recomputes from scratch: no resuming from a crashed attempt
        artifacts.discard(work_dir)
    return ExecutionContext(
        run_id=run.run_id,
        root=run.root,
        beam_args=run.beam_args,
        work_dir=work_dir,
        log=logging.getLogger(f"pipeline.{a.name}"),
    )


def _record_exception(
    a: _Attempt,
    exc: BaseException,
    staged: dict[str, str],
    outputs: dict[str, Artifact],
    execution_id: int,
) -> None:
    """A stage raised `exc`: publish what a rejection publishes, discard the rest, record
    the failure where the store can still be written, and log it in one line."""
    error = describe(exc, where=a.run.root)
    log.debug("[%s] traceback:\n%s", a.name, traceback.format_exc())
    rejected = isinstance(exc, DataError) and error["exit_code"] == DataError.exit_code
    keep = a.component.published_on_rejection if rejected else ()
    published = {}
    try:
        published = _commit(a, {k: staged[k] for k in keep}, outputs)
    except Exception:  # noqa: BLE001 - e.g. the disk filled up: the stage's error stands
        log.debug("[%s] could not publish %s", a.name, list(keep), exc_info=True)
    for k in staged:
        if k not in published:
            artifacts.discard(staged[k])
    duration = a.duration()
    state = "canceled" if error["kind"] == Interrupted.kind else "failed"
    try:
        a.record(
            state,
            {"error": error, "duration_s": duration},
            outputs=published,
            execution_id=execution_id,
        )
    except Exception:  # noqa: BLE001 - a full disk or a broken store: the error stands
        log.debug("[%s] could not record the failure in ML Metadata", a.name, exc_info=True)
    log.error("[%s] %s after %.1fs: %s", a.name, state.upper(), duration, error["message"])


def _commit(
    a: _Attempt, staged: dict[str, str], outputs: dict[str, Artifact], execution: dict | None = None
) -> dict[str, Artifact]:
    """Commit the staged outputs. Each `_artifact.json` also keeps `execution` (what made
    it, from which inputs), so that `recover` can rebuild ML Metadata from the files."""
    committed = {}
    for k, tmp in staged.items():
        final = a.run.artifact_uri(a.name, k)
        props = dict(outputs[k].properties)
        props.update(
            {
                "fingerprint": f"{a.fingerprint}:{a.name}.{k}",
                "producer": a.name,
                "run_id": a.run.run_id,
            }
        )
        stored = artifacts.relative_properties(a.run.root, props)
        artifacts.commit(
            tmp, final, {**stored, "type": outputs[k].type, artifacts.EXECUTION_RECORD: execution}
        )
        committed[k] = Artifact(type=outputs[k].type, uri=final, properties=props)
    return committed


def _reuse(a: _Attempt, inputs: dict[str, Artifact], hit) -> dict[str, Artifact]:
    source_id, outputs = hit
    a.record(
        "cached",
        {
            "fingerprint": a.fingerprint,
            "cached_from": source_id,
            "started": a.started,
            "duration_s": a.duration(),
        },
        inputs=inputs,
        outputs=outputs,
    )
    log.info(
        "[%s] cached: reusing the outputs of run %s",
        a.name,
        next(iter(outputs.values())).properties.get("run_id", "?"),
    )
    return outputs


def _record_failure(a: _Attempt, inputs: dict[str, Artifact], error: Exception) -> None:
    a.record(
        "failed",
        {
            "fingerprint": a.fingerprint,
            "started": a.started,
            "duration_s": 0.0,
            "error": describe(error),
        },
        inputs=inputs,
    )
