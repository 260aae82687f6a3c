"""A run that spans processes: `start` records the run, then each stage is executed by a
process of its own (`stage STAGE --run-id ID`), on this machine or another sharing the
root, as an Airflow task per stage does it (deploy/airflow/).

A stage process joins the run: it takes its inputs from the stages this run committed
(never from whatever the cache holds now), owns its stage as a one-process run owns
itself (a lock, a heartbeat in the run's record, abandoned detection when it dies), and
records and publishes the run's state. The run ends when its last stage ends, or when a
stage fails; a retry of the stage that ended it reopens it.
"""

from __future__ import annotations

import logging
import os
import time

from pipeline import config as config_lib
from pipeline import locks, summary
from pipeline.artifacts import Artifact
from pipeline.component import Component
from pipeline.errors import EXIT_OK, ConfigError
from pipeline.launcher import RunContext, launch, usable
from pipeline.metadata import MetadataStore
from pipeline.runner import (
    STAGE_PROCESSES,
    Heartbeat,
    Plan,
    Scratch,
    Skipped,
    end,
    fail,
    owner_note,
    param_classes,
    plan,
    publish,
    register,
    scratch_dir,
    stage_lock,
    sweep_abandoned,
)
from pipeline.views import Views

log = logging.getLogger("pipeline")
COMMITTED = ("complete", "cached")  # a stage's execution states whose outputs stand
ENDED_BY_STAGE = ("failed", "interrupted", "abandoned")  # a retry of that stage reopens


def start(p: Plan, root: str, run_id: str, *, force: bool, command: str) -> dict:
    """Record the run (its config, stages and fingerprints as planned now); no stage
    runs. Starting a run that exists with the same config is a no-op (a retried start)."""
    store = MetadataStore(root)
    views = Views.of(p.components)
    existing = store.get_run(run_id)
    if existing is not None:
        if existing.get("mode") == STAGE_PROCESSES and existing.get("config") == p.config.to_dict():
            log.info("run %s: already started (%s): nothing to do", run_id, existing["status"])
            return summary.render(store, run_id, views)
        raise ConfigError(
            f"--run-id {run_id!r}: a run with this id already exists under {root}; "
            "run ids are never reused"
        )
    log.info("run %s: started, for a process per stage; root %s", run_id, root)
    register(
        store,
        p,
        run_id,
        p.components,
        views,
        mode=STAGE_PROCESSES,
        force=force,
        skip_if_running=False,
        command=command,
    )
    return publish(store, run_id, views)


def run_stage(components: list[Component], root: str, run_id: str, stage: str) -> dict:
    """Execute `stage` of run `run_id` in this process; returns the run's summary. Raises
    ConfigError (exit 2) for a run or stage that cannot be joined, Skipped (75) while
    another process runs the stage, or what the stage raised (the run then ends)."""
    store = MetadataStore(root)
    views = Views.of(components)
    lock = stage_lock(root, run_id, stage)
    with locks.held(root, "runs"):  # a dead stage is swept before anyone takes it over
        sweep_abandoned(store, views)
        latest = _latest(store, run_id)
        run = _joinable(store, run_id, stage, latest)
        if run is None:  # committed already in this run: nothing to do
            return summary.render(store, run_id, views)
        component = next(c for c in components if c.name == stage)
        inputs = _committed_inputs(run_id, component, latest)
        if not lock.acquire(blocking=False, note=owner_note()):
            raise Skipped(
                f"stage {stage} of run {run_id} is being run by process {lock.holder_note()}"
            )
        if run["status"] != "running":
            log.info("run %s: reopened by a retry of stage %s", run_id, stage)
        store.update_run(
            run_id,
            status="running",
            finished=None,
            exit_code=None,
            error=None,
            **{f"owner.{stage}": owner_note(), f"heartbeat.{stage}": time.time()},
        )
    heartbeat = Heartbeat(root, run_id, field=f"heartbeat.{stage}")
    heartbeat.start()
    try:
        p = plan(components, _recorded_config(components, run), root)
        ctx = RunContext(
            root=root,
            run_id=run_id,
            beam_args=p.beam.args,
            force=bool(run.get("force")),
            views=views,
        )
        with Scratch(os.path.join(scratch_dir(root, run_id), stage)):
            launch(component, p.params[stage], inputs, ctx)
        heartbeat.check()
    except BaseException as exc:
        heartbeat.stop()
        with locks.held(root, f"run-{run_id}-end"):
            if (store.get_run(run_id) or {}).get("status") == "running":
                fail(store, run_id, views, exc, stage=stage)
            else:  # a sibling stage ended the run first; this stage's record stands
                publish(store, run_id, views)
        raise
    finally:
        heartbeat.stop()
        lock.release()
    return _after_stage(store, run_id, views)


def _joinable(
    store: MetadataStore, run_id: str, stage: str, latest: dict[str, dict]
) -> dict | None:
    """The run's record if `stage` may run in it now; None if this run has committed the
    stage already; ConfigError naming what stands in the way otherwise."""
    run = store.get_run(run_id)
    if run is None:
        raise ConfigError(f"no run {run_id!r} under {store.root} (start it with `start`)")
    if run.get("mode") != STAGE_PROCESSES:
        raise ConfigError(
            f"run {run_id} runs in one process (`run`); stage processes join runs made by `start`"
        )
    if stage not in run.get("stages", []):
        raise ConfigError(
            f"stage {stage!r} is not a stage of run {run_id} ({', '.join(run.get('stages', []))})"
        )
    if latest.get(stage, {}).get("state") in COMMITTED:
        log.info("[%s] already committed in run %s: nothing to do", stage, run_id)
        return None
    status, error = run.get("status"), run.get("error") or {}
    if status != "running" and not (status in ENDED_BY_STAGE and error.get("stage") == stage):
        by = f" in stage {error['stage']}" if error.get("stage") else ""
        raise ConfigError(f"run {run_id} has already ended ({status}{by}); start a new run")
    return run


def _latest(store: MetadataStore, run_id: str) -> dict[str, dict]:
    """Stage -> its last execution in the run (ordered by id: the last attempt wins)."""
    return {e["stage"]: e for e in store.run_executions(run_id)}


def _committed_inputs(run_id: str, component: Component, latest: dict[str, dict]) -> dict:
    """The component's channel inputs, as the run's upstream stages committed them
    (`latest`: stage -> its last execution in the run)."""
    inputs: dict[str, Artifact] = {}
    for k, ch in component.channels.items():
        e = latest.get(ch.producer)
        if e is None or e.get("state") not in COMMITTED:
            state = "pending" if e is None else e.get("state")
            raise ConfigError(
                f"stage {component.name} of run {run_id} needs {ch.producer}.{ch.output}, "
                f"which this run has not committed ({ch.producer} is {state}); run "
                f"{ch.producer} first"
            )
        artifact = e["outputs"][ch.output]
        if not usable(artifact):
            raise ConfigError(
                f"stage {component.name} of run {run_id} needs {ch.producer}.{ch.output}, "
                f"committed at {artifact.uri} but no longer there (deleted by gc?); start a "
                "new run"
            )
        inputs[k] = artifact
    return inputs


def _recorded_config(components: list[Component], run: dict) -> config_lib.Config:
    return config_lib.from_record(
        param_classes(components), run.get("config", {}), run.get("preset") or None
    )


def _after_stage(store: MetadataStore, run_id: str, views: Views) -> dict:
    """The stage committed: the run ends if every stage has; its views are rendered again
    either way (Airflow's UI links them while the run goes on)."""
    with locks.held(store.root, f"run-{run_id}-end"):
        run = store.get_run(run_id) or {}
        latest = _latest(store, run_id)
        done = all(latest.get(s, {}).get("state") in COMMITTED for s in run.get("stages", []))
        if done and run.get("status") == "running":
            return end(store, run_id, views, status="succeeded", exit_code=EXIT_OK)
        return publish(store, run_id, views)
