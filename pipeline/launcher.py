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
from dataclasses import dataclass

from pipeline import artifacts, console, locks, summary
from pipeline import fingerprint as fingerprint_lib
from pipeline.artifacts import Artifact
from pipeline.component import BLESSED_MODEL_DATA, Component, ExecutionContext
from pipeline.errors import (ConfigError, DataError, Interrupted, PipelineError, StageError,
                             StopRun, environment_failure)
from pipeline.metadata import MetadataStore

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class RunContext:
    """Where and how this run executes; plain data, so Beam can pickle it."""

    root: str
    run_id: str
    beam_args: tuple[str, ...]  # the run's beam.args (runner.BeamParams)
    only: str | None = None  # run just this stage; the others must come from the cache
    force: bool = False  # ignore the cache

    def artifact_uri(self, stage: str, output: str) -> str:
        return posixpath.join(self.root, "artifacts", stage, self.run_id, output)

    def work_dir(self, stage: str, fingerprint: str) -> str:
        return posixpath.join(self.root, "work", stage, fingerprint[:16])


def describe(exc: BaseException, where: str = "?") -> dict:
    """kind, one-line message and exit code of any exception a stage can raise. `where`:
    the path an environment failure names when the error itself names none."""
    if isinstance(exc, StopRun) and exc.reason is not None:
        exc = exc.reason
    elif isinstance(exc, KeyboardInterrupt):
        exc = Interrupted("interrupted (SIGINT or SIGTERM)")
    elif not isinstance(exc, (ConfigError, Interrupted)) and (env := environment_failure(exc, where)):
        exc = env  # a full disk is not bad data, whatever the code was reading
    elif not isinstance(exc, PipelineError):
        exc = StageError(f"{type(exc).__name__}: {exc}")
    message = str(exc).strip()
    return {"kind": exc.kind, "message": message, "exit_code": exc.exit_code}


def resolve(store: MetadataStore | None, component: Component, key: str, params,
            candidate: str | None) -> Artifact | None:
    """The `Resolved` input `key` of `component` (its strategy: pipeline/component.py), or
    None. `candidate`: the fingerprint of the input the spec names as its candidate."""
    spec = component.resolved[key]
    if store is None:
        return None
    if spec.strategy == BLESSED_MODEL_DATA:
        scope = params.reference_scope()
        return None if scope is None else store.blessed_model_data(
            scope, via=spec.candidate, stage=component.name, output=spec.output,
            usable=usable)
    lineage = params.baseline_lineage()
    if lineage is None:
        return None
    return store.latest_blessed(spec.type, spec.candidate, lineage, exclude=candidate,
                                usable=usable)


def fingerprint_inputs(component: Component, inputs: dict[str, Artifact | str | None],
                       resolved: dict[str, Artifact | None]) -> dict[str, str | None]:
    """The input identities a stage's fingerprint covers: every channel input, and the
    resolved inputs whose spec says `in_fingerprint`."""
    ids = {k: a if isinstance(a, str) or a is None else identity(a) for k, a in inputs.items()}
    ids.update({k: identity(a, resolved=True) for k, a in resolved.items()
                if component.resolved[k].in_fingerprint})
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
    return fingerprint_lib.stage_fingerprint(component.name, params.cache_key(), identities,
                                             component.executor_module)


def launch(component: Component, params, inputs: dict[str, Artifact],
           run: RunContext) -> dict[str, Artifact]:
    """Run or reuse one stage given its upstream artifacts; returns its committed
    outputs. Raises what the stage raised. The driver resolves the `Resolved` inputs now
    and keys the stage by what it really gets; one that found nothing is None for the
    executor, and ML Metadata records no event for it."""
    store = MetadataStore(run.root)
    # Resolved inputs outside the fingerprint are looked up only if the stage executes.
    resolved = {k: resolve(store, component, k, params, identity(inputs.get(spec.candidate)))
                for k, spec in component.resolved.items() if spec.in_fingerprint}
    fingerprint = stage_fingerprint(component, params,
                                    fingerprint_inputs(component, inputs, resolved))
    inputs = {**inputs, **{k: a for k, a in resolved.items() if a is not None}}
    started = time.time()
    use_cache = not run.force and run.only != component.name
    if run.only and run.only != component.name:
        hit = store.find_cached(component.name, fingerprint, usable)
        if hit is None:
            error = StageError(
                f"--only {run.only}: upstream stage {component.name!r} has no committed output "
                f"for this configuration (fingerprint {fingerprint[:12]}); run without --only first")
            _record_failure(store, component, fingerprint, inputs, run, error, started)
            raise error
        return _reuse(store, component, fingerprint, inputs, run, hit, started)
    if use_cache and (hit := store.find_cached(component.name, fingerprint, usable)):
        return _reuse(store, component, fingerprint, inputs, run, hit, started)

    def waiting(holder: str) -> None:
        log.info("[%s] waiting: run %s is computing this stage (fingerprint %s)",
                 component.name, holder or "?", fingerprint[:12])

    with locks.held(run.root, f"stage-{component.name}-{fingerprint[:16]}", note=run.run_id,
                    on_wait=waiting):
        # Whoever held the lock may have just published exactly this.
        if use_cache and (hit := store.find_cached(component.name, fingerprint, usable)):
            return _reuse(store, component, fingerprint, inputs, run, hit, started)
        for k, spec in component.resolved.items():
            if not spec.in_fingerprint and (a := resolve(store, component, k, params, None)):
                inputs[k] = a
        return _execute(store, component, params, fingerprint, inputs, run, started)


def usable(a: Artifact) -> bool:
    """Committed on disk (a deleted artifact is never reused), and everything outside the
    root it stands for still there (`external_paths`: e.g. a push record stands for its
    model directory, so a wiped serving directory is pushed to again)."""
    return artifacts.is_committed(a.uri) and all(
        artifacts.exists(p) for p in a.properties.get(artifacts.EXTERNAL_PATHS, ()))


def _execute(store, component, params, fingerprint, inputs, run, started) -> dict[str, Artifact]:
    name = component.name
    staged = {k: artifacts.begin(run.artifact_uri(name, k)) for k in component.outputs}
    outputs = {k: Artifact(type=t, uri=staged[k]) for k, t in component.outputs.items()}
    execution_id = store.put_execution(run.run_id, name, "running",
                                       {"fingerprint": fingerprint, "started": started,
                                        "params": params.cache_key()},
                                       inputs=inputs)
    summary.write(store, run.run_id)
    log.info("[%s] started: %s", name, component.description)
    work_dir = run.work_dir(name, fingerprint)
    if run.force:  # --force recomputes from scratch: no resuming from a crashed attempt
        artifacts.discard(work_dir)
    ctx = ExecutionContext(run_id=run.run_id, root=run.root, beam_args=run.beam_args,
                           work_dir=work_dir, log=logging.getLogger(f"pipeline.{name}"))
    try:
        with console.stderr_to_log():  # what libraries print while they are imported
            component.executor  # noqa: B018 - loads (and checks) it
        metrics = component.call(params, ctx, inputs, outputs)
    except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
        error = describe(exc, where=run.root)
        log.debug("[%s] traceback:\n%s", name, traceback.format_exc())
        rejected = isinstance(exc, DataError) and error["exit_code"] == DataError.exit_code
        keep = component.published_on_rejection if rejected else ()
        published = {}
        try:
            published = _commit(name, {k: staged[k] for k in keep}, outputs, fingerprint, run)
        except Exception:  # noqa: BLE001 - e.g. the disk filled up: the stage's error stands
            log.debug("[%s] could not publish %s", name, list(keep), exc_info=True)
        for k in staged:
            if k not in published:
                artifacts.discard(staged[k])
        duration = round(time.time() - started, 2)
        state = "canceled" if error["kind"] == Interrupted.kind else "failed"
        try:  # recorded where the store can still be written
            store.put_execution(run.run_id, name, state, {"error": error, "duration_s": duration},
                                outputs=published, execution_id=execution_id)
            summary.write(store, run.run_id)
        except Exception:  # noqa: BLE001 - a full disk or a broken store: the error stands
            log.debug("[%s] could not record the failure in ML Metadata", name, exc_info=True)
        log.error("[%s] %s after %.1fs: %s", name, state.upper(), duration, error["message"])
        raise
    duration = round(time.time() - started, 2)
    committed = _commit(name, staged, outputs, fingerprint, run,
                        {"stage": name, "fingerprint": fingerprint, "started": started,
                         "duration_s": duration, "metrics": metrics,
                         "inputs": {k: artifacts.relative_uri(run.root, a.uri)
                                    for k, a in inputs.items()}})
    store.put_execution(run.run_id, name, "complete", {"metrics": metrics, "duration_s": duration},
                        outputs=committed, execution_id=execution_id)
    summary.write(store, run.run_id)
    log.info("[%s] finished in %.1fs", name, duration)
    return committed


def _commit(name, staged, outputs, fingerprint, run, execution=None) -> dict[str, Artifact]:
    """Commit the staged outputs. Each `_artifact.json` also keeps `execution` (what made
    it, from which inputs), so that `recover` can rebuild ML Metadata from the files."""
    committed = {}
    for k, tmp in staged.items():
        final = run.artifact_uri(name, k)
        props = dict(outputs[k].properties)
        props.update({"fingerprint": f"{fingerprint}:{name}.{k}", "producer": name,
                      "run_id": run.run_id})
        artifacts.commit(tmp, final, {**props, "type": outputs[k].type,
                                      artifacts.EXECUTION_RECORD: execution})
        committed[k] = Artifact(type=outputs[k].type, uri=final, properties=props)
    return committed


def _reuse(store, component, fingerprint, inputs, run, hit, started) -> dict[str, Artifact]:
    source_id, outputs = hit
    store.put_execution(run.run_id, component.name, "cached",
                        {"fingerprint": fingerprint, "cached_from": source_id, "started": started,
                         "duration_s": round(time.time() - started, 2)},
                        inputs=inputs, outputs=outputs)
    summary.write(store, run.run_id)
    log.info("[%s] cached: reusing the outputs of run %s", component.name,
             next(iter(outputs.values())).properties.get("run_id", "?"))
    return outputs


def _record_failure(store, component, fingerprint, inputs, run, error, started) -> None:
    store.put_execution(run.run_id, component.name, "failed",
                        {"fingerprint": fingerprint, "started": started, "duration_s": 0.0,
                         "error": describe(error)}, inputs=inputs)
    summary.write(store, run.run_id)
