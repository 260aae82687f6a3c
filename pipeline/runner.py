"""The runner: plans a pipeline (a list of components it is handed) and runs it as a
Beam pipeline, one step per component as TFX's BeamDagRunner does (pipeline/beam_dag.py).
When every stage's fingerprint matches a committed execution, the stages are recorded as
cached one after the other without starting Beam: a scheduled run on unchanged data and
config then costs well under a second, not the imports of TensorFlow and Beam.

A run registers itself in ML Metadata with its owner (pid, host, start), holds its run
lock for as long as it lives and beats a heartbeat. A run still marked `running` whose
owner is gone (its lock is free on this host, or its heartbeat is stale elsewhere) is
recorded as `abandoned` by the next run, `runs` and `show`, and its staging
directories are removed. Its finished stages stay in the cache, and the trainer's
backup stays in the stage's work directory, so the same command resumes it.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass

from pipeline import artifacts, locks, report, summary
from pipeline import config as config_lib
from pipeline.artifacts import Artifact
from pipeline.component import Component
from pipeline.config import Config, Params, key
from pipeline.errors import (
    EXIT_OK,
    EXIT_SKIPPED,
    ConfigError,
    EnvironmentFailure,
    Interrupted,
    PipelineError,
    StopRun,
    describe,
    environment_failure,
)
from pipeline.launcher import (
    RunContext,
    fingerprint_inputs,
    launch,
    resolve,
    stage_fingerprint,
    usable,
)
from pipeline.metadata import DB_FILE, MetadataStore, backup_store, check_store
from pipeline.views import Views

log = logging.getLogger("pipeline")
# How a run executes: one process runs every stage (`run`), or each stage has its own
# process that joins the run (`start`, then `stage`: pipeline/stage_process.py).
ONE_PROCESS, STAGE_PROCESSES = "process", "stages"
HEARTBEAT_S = 10.0
# A run on another host is abandoned when its heartbeat is this old.
STALE_AFTER_S = 120.0


class Skipped(PipelineError):
    """--skip-if-running found another live run on the root."""

    exit_code = EXIT_SKIPPED
    kind = "skipped"


DEFAULT_BEAM_ARGS = ("--runner=DirectRunner",)


@dataclass(frozen=True, kw_only=True)
class BeamParams(Params):
    args: tuple[str, ...] = key(
        "beam.args",
        DEFAULT_BEAM_ARGS,
        "Beam pipeline options for the data-parallel work, e.g. --runner=PortableRunner "
        "--job_endpoint=localhost:8099, or --direct_num_workers=2 "
        "--direct_running_mode=multi_processing",
    )

    def check(self) -> None:
        if self.args == DEFAULT_BEAM_ARGS:
            return  # Beam's own local runner: nothing to check, and no Beam import (~1 s)
        from apache_beam.options import pipeline_options
        from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

        name = "beam.args"
        bad = [a for a in self.args if not a.startswith("--")]
        if bad:
            raise ConfigError(f"{name}: expected --flag=value options, got {bad}")
        # The parser PipelineOptions itself uses, without its exit-and-print on a bad value.
        parser = pipeline_options._BeamArgumentParser(exit_on_error=False)
        for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
            cls._add_argparse_args(parser)
        try:
            _, unknown = parser.parse_known_args(list(self.args))
        except argparse.ArgumentError as e:
            raise ConfigError(f"{name}: {e}") from None
        if unknown:
            raise ConfigError(f"{name}: unknown Beam option(s) {unknown}")
        runner = PipelineOptions(list(self.args)).view_as(StandardOptions).runner
        if runner:
            from apache_beam.runners.runner import create_runner

            try:
                create_runner(runner)
            except (ValueError, ImportError, AttributeError) as e:
                raise ConfigError(
                    f"{name}: --runner={runner} is not a Beam runner here "
                    f"({str(e).splitlines()[0]})"
                ) from None


@dataclass(frozen=True)
class Plan:
    """Everything decided before anything runs: parameters and cache keys of every stage."""

    components: tuple[Component, ...]
    config: Config
    params: dict  # component name -> its Params
    fingerprints: dict  # component name -> expected stage fingerprint (cache hits as of now)
    beam: BeamParams

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)


def param_classes(components) -> list[type[Params]]:
    return [c.params for c in components] + [BeamParams]


def load_config(components, preset: str | None = None, overrides=()) -> Config:
    """The config of this pipeline: its components' keys (and the runner's beam.args),
    defaults < preset < `--set` overrides. The CLI, the tests and the benchmarks use it."""
    return config_lib.load(param_classes(components), preset, overrides)


def plan(components, config: Config, root: str | None = None) -> Plan:
    """Build every stage's parameters (all config checks) and its expected fingerprint
    (which reads the identity of external data): errors surface here, before any
    directory exists. `Resolved` inputs are looked up as they stand now, for the
    expectation only: the launcher resolves them again when their stage starts."""
    store = _existing_store(root)
    seen: set[str] = set()
    params: dict[str, Params] = {}
    fingerprints: dict[str, str] = {}
    for c in components:
        check_wiring(c, seen)
        p = c.params.from_config(config)
        params[c.name] = p
        inputs = {
            k: f"{fingerprints[ch.producer]}:{ch.producer}.{ch.output}"
            for k, ch in c.channels.items()
        }
        resolved = {
            k: resolve(store, c, k, p, inputs[r.candidate])
            for k, r in c.resolved.items()
            if r.in_fingerprint
        }
        fingerprints[c.name] = stage_fingerprint(c, p, fingerprint_inputs(c, inputs, resolved))
        seen.add(c.name)
    return Plan(tuple(components), config, params, fingerprints, BeamParams.from_config(config))


def check_wiring(component: Component, earlier: set[str]) -> None:
    """Every declared input is wired, to an output of an earlier component."""
    if component.unbound:
        raise TypeError(
            f"component {component.name}: inputs {list(component.unbound)} are "
            "not wired to an upstream output (create_pipeline)"
        )
    missing = [
        f"{ch.producer}.{ch.output}"
        for ch in component.channels.values()
        if ch.producer not in earlier
    ]
    if missing:
        raise TypeError(
            f"component {component.name} consumes {missing}, not produced by an earlier component"
        )


def _existing_store(root: str | None) -> MetadataStore | None:
    """The root's ML Metadata if it exists (planning creates nothing); a damaged or lost
    store is an EnvironmentFailure here, before anything runs."""
    if root is None or "://" in root:  # a remote root's store is local to no one here
        return None
    check_store(root)
    if not os.path.exists(os.path.join(root, DB_FILE)):
        return None
    return MetadataStore(root, readonly=True)


# -- liveness ---------------------------------------------------------------------------


def run_lock(root: str, run_id: str) -> locks.FileLock:
    return locks.FileLock(root, f"run-{run_id}")


def stage_lock(root: str, run_id: str, stage: str) -> locks.FileLock:
    """Held by the process that executes `stage` of a run made of stage processes."""
    return locks.FileLock(root, f"run-{run_id}.{stage}")


def owner_note() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _owner_gone(lock: locks.FileLock, host: str | None, heartbeat) -> bool:
    """Its lock is free on this host, or (another host) its heartbeat is stale."""
    if host == socket.gethostname():
        return not lock.is_held_elsewhere()
    return time.time() - float(heartbeat or 0) > STALE_AFTER_S


def is_abandoned(root: str, run: dict) -> bool:
    """A one-process run whose process is gone. A run of stage processes is never
    abandoned as a whole (between its stages no process owns it): its dead stages are
    (`dead_stages`)."""
    if run.get("status") != "running" or run.get("mode") == STAGE_PROCESSES:
        return False
    return _owner_gone(run_lock(root, run["run_id"]), run.get("owner_host"), run.get("heartbeat"))


def is_live(root: str, run: dict) -> bool:
    """A run some process is working on now: a one-process run not abandoned, or a run
    of stage processes with a stage process alive (between its stages, none is)."""
    if run.get("status") != "running":
        return False
    if run.get("mode") != STAGE_PROCESSES:
        return not is_abandoned(root, run)
    return any(
        not _stage_owner_gone(root, run, s) for s in run.get("stages", []) if run.get(f"owner.{s}")
    )


def _stage_owner_gone(root: str, run: dict, stage: str) -> bool:
    """The process recorded as the owner of `stage` (`owner.<stage>`: pid@host, and its
    `heartbeat.<stage>`, in the run's record) is gone."""
    host = str(run.get(f"owner.{stage}") or "@").partition("@")[2]
    lock = stage_lock(root, run["run_id"], stage)
    return _owner_gone(lock, host, run.get(f"heartbeat.{stage}"))


def dead_stages(root: str, run: dict, executions: list[dict]) -> list[str]:
    """The stages of a running run of stage processes recorded as running whose process
    is gone (their owner and heartbeat are in the run's record, per stage)."""
    if run.get("status") != "running" or run.get("mode") != STAGE_PROCESSES:
        return []
    return [
        e["stage"]
        for e in executions
        if e.get("state") == "running" and _stage_owner_gone(root, run, e["stage"])
    ]


def sweep_abandoned(store: MetadataStore, views: Views) -> list[str]:
    """Record runs whose owner is gone as abandoned and remove their staging dirs; `views`:
    what their pages show (pipeline/views.py)."""
    found = []
    for run in store.list_runs():
        run_id = run["run_id"]
        if run.get("mode") == STAGE_PROCESSES and run.get("status") == "running":
            _sweep_dead_stages(store, run, views)
            continue
        if not is_abandoned(store.root, run):
            continue
        for e in store.run_executions(run_id):
            if e.get("state") == "running":
                store.put_execution(
                    run_id,
                    e["stage"],
                    "abandoned",
                    {"error": _abandoned_error("the run's process died while this stage ran")},
                    execution_id=e["execution_id"],
                )
        for tmp in glob.glob(
            os.path.join(store.root, "artifacts", "*", run_id, artifacts.TMP_PREFIX + "*")
        ):
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(scratch_dir(store.root, run_id), ignore_errors=True)
        _remove_empty_run_dirs(store.root, run_id)
        store.update_run(run_id, status="abandoned", finished=run.get("heartbeat"))
        publish(store, run_id, views)
        log.warning(
            "run %s was abandoned (its process %s on %s is gone); recorded as such",
            run_id,
            run.get("owner_pid"),
            run.get("owner_host"),
        )
        found.append(run_id)
    return found


def _sweep_dead_stages(store: MetadataStore, run: dict, views: Views) -> None:
    """A stage process died (SIGKILL, a lost machine): its execution is recorded as
    abandoned, its staging and scratch removed, and the run ends as abandoned by that
    stage, which a retry of the stage reopens (pipeline/stage_process.py)."""
    run_id = run["run_id"]
    executions = store.run_executions(run_id)
    dead = dead_stages(store.root, run, executions)
    if not dead:
        return
    for e in executions:
        if e["stage"] in dead and e.get("state") == "running":
            store.put_execution(
                run_id,
                e["stage"],
                "abandoned",
                {"error": _abandoned_error(f"the process running stage {e['stage']} died")},
                execution_id=e["execution_id"],
            )
    for stage in dead:
        for tmp in glob.glob(
            os.path.join(store.root, "artifacts", stage, run_id, artifacts.TMP_PREFIX + "*")
        ):
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(os.path.join(scratch_dir(store.root, run_id), stage), ignore_errors=True)
    error = {
        **_abandoned_error(f"the process running stage {dead[0]} died"),
        "stage": dead[0],
    }
    store.update_run(run_id, status="abandoned", finished=time.time(), error=error)
    publish(store, run_id, views)
    log.warning(
        "run %s: stage %s was abandoned (its process %s is gone); recorded as such",
        run_id,
        dead[0],
        run.get(f"owner.{dead[0]}"),
    )


def _abandoned_error(message: str) -> dict:
    """What an execution or run whose process died records as its error."""
    return {"kind": "abandoned", "exit_code": None, "message": message}


class Heartbeat(threading.Thread):
    """Beats the run's heartbeat in ML Metadata. When it cannot (the disk filled up, the
    store broke), it says nothing on the console and stops the run: it raises StopRun
    carrying the EnvironmentFailure in the main thread (a run whose liveness cannot be
    recorded would soon be taken for abandoned by the others)."""

    def __init__(self, root: str, run_id: str, field: str = "heartbeat"):
        super().__init__(daemon=True, name=f"heartbeat-{run_id}")
        self.root, self.run_id, self.field = root, run_id, field
        self.stopped = threading.Event()
        self.main = threading.get_ident()  # the thread running the run
        self._stopping = threading.Lock()  # no StopRun once the run has ended
        self.lost: type[StopRun] | None = None  # the StopRun sent to the main thread

    def check(self) -> None:
        """In the main thread, after the work: no StopRun is sent from now on, and the one
        sent already, if any, is raised here (a pending one withdrawn first). An exception
        sent to another thread can land inside code that catches it and carries on, and
        the run must not end as succeeded when its liveness could not be recorded."""
        with self._stopping:
            self.stopped.set()
            lost = self.lost
        if lost is not None:
            # NULL withdraws an exception sent but not yet raised in this thread
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.main), None)
            raise lost

    def stop(self) -> None:
        with self._stopping:
            self.stopped.set()

    def run(self):
        try:
            store = MetadataStore(self.root)  # its own connection: MLMD stores are not shared
            while not self.stopped.wait(HEARTBEAT_S):
                store.update_run(self.run_id, **{self.field: time.time()})
        except Exception as e:  # noqa: BLE001 - handed to the main thread, traceback to the log
            if self.stopped.is_set():
                return
            log.debug("heartbeat of run %s failed", self.run_id, exc_info=True)
            failure = environment_failure(e) or EnvironmentFailure(
                f"{os.path.join(self.root, DB_FILE)}: the run's heartbeat cannot be written "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            )
            # A class, since that is what CPython raises asynchronously in another thread.
            stop = type("HeartbeatLost", (StopRun,), {"reason": failure})
            with self._stopping:
                if not self.stopped.is_set():
                    self.lost = stop
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(self.main), ctypes.py_object(stop)
                    )


def scratch_dir(root: str, run_id: str) -> str:
    """The run's own temporary directory (TMPDIR while it runs: Beam's pipeline temp,
    autograph's generated files): `<root>/tmp/<run_id>`, local for a remote root."""
    if "://" in root:
        digest = hashlib.sha256(root.encode()).hexdigest()[:16]
        return os.path.join(tempfile.gettempdir(), "ae-pipeline-scratch", digest, run_id)
    return os.path.join(root, "tmp", run_id)


class Scratch:
    """TMPDIR and Python's tempfile point into the run's scratch for the block; the
    directory is removed afterwards (a killed run's: by sweep_abandoned or `gc`)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        os.makedirs(self.path, exist_ok=True)
        self.saved = os.environ.get("TMPDIR"), tempfile.tempdir
        os.environ["TMPDIR"] = tempfile.tempdir = self.path
        return self

    def __exit__(self, *exc):
        env, tempfile.tempdir = self.saved
        if env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = env
        shutil.rmtree(self.path, ignore_errors=True)


def _remove_empty_run_dirs(root: str, run_id: str) -> None:
    """`artifacts/<stage>/<run_id>` left empty by discarded staging (never inside an
    artifact: a SavedModel's empty assets/ is part of it)."""
    for path in glob.glob(os.path.join(root, "artifacts", "*", run_id)):
        _remove_empty_dir(path)


def _remove_empty_dir(path: str) -> None:
    try:
        os.rmdir(path)  # only succeeds when empty
    except OSError:
        pass


def prune_empty_dirs(root: str, *names: str) -> None:
    """Remove empty directories under `<root>/<name>` (the stages' work directories once
    their work is done), bottom up; never the root itself."""
    for name in names:
        for path, _, _ in sorted(os.walk(os.path.join(root, name)), key=lambda w: -len(w[0])):
            _remove_empty_dir(path)


def run(
    p: Plan,
    root: str,
    run_id: str,
    *,
    only: str | None = None,
    force: bool = False,
    skip_if_running: bool = False,
    command: str = "",
) -> dict:
    """Run the plan; returns the summary (rendered from ML Metadata). Raises the failing
    stage's error (the summary and ML Metadata already say what failed)."""
    root = artifacts.normalize_root(root)
    store = MetadataStore(root)
    names = [c.name for c in p.components]
    components = p.components[: names.index(only) + 1 if only else len(names)]
    views = Views.of(p.components)
    lock = register(
        store,
        p,
        run_id,
        components,
        views,
        mode=ONE_PROCESS,
        force=force,
        skip_if_running=skip_if_running,
        command=command,
    )
    assert lock is not None  # a one-process run holds its run lock
    heartbeat = Heartbeat(root, run_id)
    heartbeat.start()
    ctx = RunContext(
        root=root, run_id=run_id, beam_args=p.beam.args, only=only, force=force, views=views
    )
    try:
        with Scratch(scratch_dir(root, run_id)):
            summary.write(store, run_id, views)
            _execute(store, p, components, ctx)
        heartbeat.check()
    except BaseException as exc:
        heartbeat.stop()
        fail(store, run_id, views, exc)
        raise
    finally:
        heartbeat.stop()
        lock.release()
    return end(store, run_id, views, status="succeeded", exit_code=EXIT_OK)


def register(
    store: MetadataStore,
    p: Plan,
    run_id: str,
    components: tuple[Component, ...],
    views: Views,
    *,
    mode: str,
    force: bool,
    skip_if_running: bool,
    command: str,
) -> locks.FileLock | None:
    """Sweep abandoned runs, then record this one as running (and, for a one-process
    run, take its run lock), as one step under the root's `runs` lock; with
    `skip_if_running` beside a live run, record it as skipped and raise Skipped."""
    root = store.root
    lock = run_lock(root, run_id)
    with locks.held(root, "runs"):
        sweep_abandoned(store, views)
        live = [r["run_id"] for r in store.list_runs() if is_live(root, r)]
        registration = {
            "status": "running",
            "started": time.time(),
            "heartbeat": time.time(),
            "owner_pid": os.getpid(),
            "owner_host": socket.gethostname(),
            "stages": [c.name for c in components],
            "config": p.config.to_dict(),
            "config_changed": p.config.differences(),
            "preset": p.config.preset or "",
            "fingerprints": p.fingerprints,
            "command": command,
            "exit_code": None,
            "mode": mode,
            "force": force,
        }
        if skip_if_running and live:
            skipped = Skipped(
                f"run {', '.join(live)} is still running on {root} (--skip-if-running)"
            )
            store.start_run(
                run_id,
                {
                    **registration,
                    "status": "skipped",
                    "finished": time.time(),
                    "exit_code": Skipped.exit_code,
                    "error": describe(skipped),
                },
            )
            publish(store, run_id, views)
            raise skipped
        if mode == ONE_PROCESS:
            lock.acquire(note=owner_note())
        store.start_run(run_id, registration)
    return lock if mode == ONE_PROCESS else None


def _execute(
    store: MetadataStore, p: Plan, components: tuple[Component, ...], ctx: RunContext
) -> None:
    """Every stage a cache hit: recorded in order without Beam; else the stage DAG on Beam."""
    if (
        not ctx.force
        and not ctx.only
        and all(store.find_cached(c.name, p.fingerprints[c.name], usable) for c in components)
    ):
        _record_cached(p, components, ctx)
    else:
        from pipeline import beam_dag  # Beam loads only for a run that computes something

        beam_dag.run(components, p.params, ctx)


def fail(
    store: MetadataStore, run_id: str, views: Views, exc: BaseException, stage: str | None = None
) -> None:
    """Record how the run ended (the stage's error, not Beam's wrapper of it; `stage`: the
    one a stage process ran); a heartbeat that stopped the run raises its reason instead
    of the interrupt it used."""
    error = (
        {**describe(exc, where=store.root), "stage": stage}
        if stage
        else _stage_error(store, run_id) or describe(exc, where=store.root)
    )
    interrupted = isinstance(exc, KeyboardInterrupt) and error["kind"] == Interrupted.kind
    end(
        store,
        run_id,
        views,
        status="interrupted" if interrupted else "failed",
        exit_code=error["exit_code"],
        error=error,
    )
    if isinstance(exc, StopRun):
        assert exc.reason is not None  # the only StopRun raised is HeartbeatLost's
        raise exc.reason from None


def end(store: MetadataStore, run_id: str, views: Views, **outcome) -> dict:
    """A run has ended: its record, its views, a backup of the store, and no empty
    directories left behind. Where the store or the disk fails here, the run's outcome
    stands (logged; the traceback goes to the run's log)."""
    view: dict = {"run_id": run_id, **outcome}
    try:
        store.update_run(run_id, finished=time.time(), **outcome)
        view = publish(store, run_id, views)
    except Exception:  # noqa: BLE001
        if outcome["status"] == "succeeded":
            raise
        log.debug("could not record the end of run %s", run_id, exc_info=True)
    if "://" not in store.root:
        try:
            backup_store(store.root, run_id)
        except Exception:  # noqa: BLE001 - the run's outcome stands; the last backup stays
            log.warning(
                "could not back up the metadata store to %s (see pipeline.log)",
                os.path.join(store.root, "backups"),
            )
            log.debug("backup traceback", exc_info=True)
        # Not other runs' scratch: a live run's may be empty now and written to later.
        prune_empty_dirs(store.root, "work")
        _remove_empty_dir(scratch_dir(store.root, run_id))  # emptied by its stage processes
        _remove_empty_dir(os.path.join(store.root, "tmp"))
        _remove_empty_run_dirs(store.root, run_id)
    return view


def publish(store: MetadataStore, run_id: str, views: Views) -> dict:
    """A run has ended: its summary.json, its report.html and the root's index.html, all
    rendered from ML Metadata and what the components declare for the views. A page that
    cannot be written never changes the outcome."""
    view = summary.write(store, run_id, views)
    try:
        report.write_run(store, run_id, views)
        report.write_index(store, views)
    except Exception:  # noqa: BLE001 - logged with its traceback; the run's result stands
        log.warning("could not write the HTML report of run %s (see pipeline.log)", run_id)
        log.debug("report traceback", exc_info=True)
    return view


def _record_cached(p: Plan, components, ctx: RunContext) -> None:
    """Every stage is a cache hit: the launcher records each as such, in order, no Beam."""
    outputs: dict[str, dict[str, Artifact]] = {}
    for c in components:
        inputs = {k: outputs[ch.producer][ch.output] for k, ch in c.channels.items()}
        outputs[c.name] = launch(c, p.params[c.name], inputs, ctx)


def _stage_error(store: MetadataStore, run_id: str) -> dict | None:
    """The failing stage's recorded error (Beam wraps the exception itself); None where
    the store cannot say."""
    try:
        executions = store.run_executions(run_id)
    except Exception:  # noqa: BLE001 - a broken store: the exception describes itself
        log.debug("could not read the stages of run %s", run_id, exc_info=True)
        return None
    for e in executions:
        if e.get("state") in ("failed", "canceled") and e.get("error"):
            return {**e["error"], "stage": e["stage"]}
    return None
