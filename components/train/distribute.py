"""How train spreads its fit over devices and machines: the `train.distribute` setting.

    auto          MirroredStrategy when several local GPUs are visible, else TensorFlow's
                  default strategy; multi_worker when TF_CONFIG names several workers
    one_device    the default strategy: one device (the first GPU when visible, else CPU)
    mirrored      MirroredStrategy over the local GPUs (one CPU replica without a GPU)
    multi_worker  MultiWorkerMirroredStrategy over the workers TF_CONFIG names (exit 2
                  without a usable TF_CONFIG)

Multi-worker training (MultiWorkerMirroredStrategy, "MWMS"):

- Who runs what. The chief (TF_CONFIG task `chief`, or `worker` 0 when the cluster has no
  chief) runs the pipeline as usual (`run_pipeline.py run`); every other worker runs
  `run_pipeline.py train-worker --root R --run-id ID` with the same config and its own
  TF_CONFIG. A worker waits in ML Metadata (read only) for the chief's train execution of
  run ID, checks that it has the same train parameters, and takes part in the fit on the
  same Examples artifact, writing only into a scratch directory that it deletes. The chief's
  launcher alone stages, commits and records artifacts: "the chief alone commits".
- Where the fit runs. MWMS must be created before TensorFlow's runtime starts in a process
  ("Collective ops must be configured at program startup"), and the chief's launcher has
  run TensorFlow long before train (ingest, transform). So on every worker the fit runs in a
  fresh child process (`python -m components.train.distribute JOB`), which creates the
  strategy first and then calls the train executor on the artifacts it is handed; the
  chief's child writes into the launcher's staging directories, a worker's into scratch.
  Its log lines come back to the parent's log; its metrics and errors come back as JSON.
- Batch size. `train.batch_size` is the global batch: each step takes batch_size examples
  over all workers (batch_size / workers per replica), as Keras does with a batched dataset
  under a strategy; the data are sharded by element (tf.data AutoShardPolicy.DATA): each
  worker builds the same shuffled batches and keeps its slice of each. So steps per epoch,
  the learning-rate schedule and the examples of every step are those of the single-worker
  fit, and losses agree up to float rounding.
- Not resumable: the fit does not keep Keras' BackupAndRestore state across attempts (all
  workers would have to resume the same epoch); a crashed multi-worker train stage starts
  again from epoch 1.
- Keras 3 (3.15) with the TF backend cannot fit under MWMS as shipped (keras-team/keras
  #20585, tensorflow/tensorflow #72388): its trainer calls `strategy.reduce` on a nest of
  per-replica values, which CollectiveAllReduceStrategy does not map over (MirroredStrategy
  does), and with `axis=0` on scalar metrics. `_KerasMultiWorkerStrategy` does both
  reductions as MirroredStrategy would; nothing else is changed.

This module imports no TensorFlow at import time: the train spec checks TF_CONFIG with it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from pipeline.errors import ERROR_CLASSES, ConfigError, Interrupted, PipelineError, StageError

MODES = ("auto", "one_device", "mirrored", "multi_worker")
TF_CONFIG = "TF_CONFIG"
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LOG_MARK = "@@log "  # a child's log record on its stderr: "@@log LEVEL NAME MESSAGE"
_JOB, _RESULT = "job.pickle", "result.json"


@dataclass(frozen=True)
class Cluster:
    """What TF_CONFIG says: how many workers train and which one this process is."""

    workers: int
    task_type: str
    task_index: int
    has_chief: bool

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (not self.has_chief and self.task_index == 0)

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"


def cluster(environ=None) -> Cluster | None:
    """The cluster TF_CONFIG describes; None when TF_CONFIG is unset or empty. A TF_CONFIG
    that is set but unusable is a ConfigError naming what was expected."""
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
    if not text:
        return None
    expected = ('expected JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}} (an optional "chief" job of one)')
    try:
        conf = json.loads(text)
        jobs = conf["cluster"]
        task_type, index = conf["task"]["type"], int(conf["task"]["index"])
        workers, chief = list(jobs.get("worker", [])), list(jobs.get("chief", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{TF_CONFIG}: {expected}, got {text[:200]!r}") from None
    if set(jobs) - {"worker", "chief"} or len(chief) > 1:
        raise ConfigError(f"{TF_CONFIG}: {expected}; other jobs ({sorted(set(jobs))}) are for "
                          "parameter-server training, which train does not do")
    size = {"worker": len(workers), "chief": len(chief)}.get(task_type, 0)
    if not 0 <= index < size:
        raise ConfigError(f"{TF_CONFIG}: {expected}; task {task_type} {index} is not in the "
                          f"cluster ({len(chief)} chief, {len(workers)} workers)")
    return Cluster(len(workers) + len(chief), task_type, index, bool(chief))


def multi_worker_cluster(mode: str, environ=None) -> Cluster | None:
    """The cluster when `mode` means a multi-worker fit (multi_worker, or auto with
    TF_CONFIG naming several workers), else None. ConfigError when multi_worker has no
    usable TF_CONFIG."""
    found = cluster(environ) if mode in ("auto", "multi_worker") else None
    if mode == "multi_worker" and (found is None or found.workers < 2):
        raise ConfigError(
            f"train.distribute: multi_worker needs the environment variable {TF_CONFIG} naming "
            "a cluster of at least two workers and this process's task, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
            f'"index": 0}}; got {"none" if found is None else f"{found.workers} worker"}')
    return found if found is not None and found.workers >= 2 else None


# -- the strategy (in the process that fits) ----------------------------------------------

_multi_worker = None  # this process's MultiWorkerMirroredStrategy, made at its start


def strategy(mode: str, gpus: list, log: logging.Logger):
    """The tf.distribute strategy for the fit in this process."""
    import tensorflow as tf

    if _multi_worker is not None:
        chosen, what = _multi_worker, "MultiWorkerMirroredStrategy"
    elif mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        chosen, what = tf.distribute.MirroredStrategy(), "MirroredStrategy"
    else:
        chosen, what = tf.distribute.get_strategy(), "one device (default strategy)"
    log.info("train: train.distribute=%s: %s, %d replica(s) in sync", mode, what,
             chosen.num_replicas_in_sync)
    return chosen


def distribute_input(dataset, strategy_):
    """Under MWMS, shard by element: every worker keeps its slice of the same global
    batches (see the module docstring); otherwise the dataset as it is."""
    import tensorflow as tf

    if strategy_ is not _multi_worker or _multi_worker is None:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _make_multi_worker_strategy():
    """MWMS from TF_CONFIG, with the two reductions Keras 3 asks of it done as
    MirroredStrategy does them (module docstring)."""
    import tensorflow as tf

    class _KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def one(v):
                scalar = all(getattr(t, "shape", None) is not None and t.shape.rank == 0
                             for t in self.experimental_local_results(v))
                return super(_KerasMultiWorkerStrategy, self).reduce(
                    reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return _KerasMultiWorkerStrategy()


# -- the fit process ----------------------------------------------------------------------

def fit_in_worker_process(params, ctx, *, examples, model, model_run) -> dict:
    """The chief's train executor under multi_worker: the fit runs in a child process that
    writes into this launcher's staging directories (`model`, `model_run`)."""
    found = multi_worker_cluster(params.distribute)
    if not found.is_chief:
        raise ConfigError(
            f"{TF_CONFIG} names this process {found.name}, not the chief: run "
            "`run_pipeline.py train-worker --root ROOT --run-id ID` on it (only the chief runs "
            "the pipeline and commits)")
    ctx.log.info("train: multi-worker fit, %d workers (this process: %s, the chief)",
                 found.workers, found.name)
    metrics = run_fit_process(params, examples, model, model_run, ctx.run_id, ctx.log)
    metrics.update(distribute="multi_worker", workers=found.workers)
    return metrics


def run_fit_process(params, examples, model, model_run, run_id: str, log) -> dict:
    """Fit in a fresh child process (MWMS made first) writing into `model` and `model_run`;
    its log lines come back to this log, its metrics are returned, its error raised."""
    job_dir = tempfile.mkdtemp(prefix="train-fit-")
    try:
        with open(os.path.join(job_dir, _JOB), "wb") as f:
            pickle.dump({"params": params, "examples": examples, "model_uri": model.uri,
                         "model_run_uri": model_run.uri, "run_id": run_id}, f)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p)}
        child = subprocess.Popen([sys.executable, "-m", "components.train.distribute", job_dir],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, env=env)
        try:
            for line in child.stderr:
                _relay(line.rstrip("\n"))
            code = child.wait()
        finally:
            if child.poll() is None:  # interrupted: the fit goes with us
                child.terminate()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        result_path = os.path.join(job_dir, _RESULT)
        if not os.path.exists(result_path):
            raise StageError(f"the training process exited with code {code} before it "
                             "reported a result (see the run's log)")
        with open(result_path) as f:
            result = json.load(f)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    if "error" in result:
        error = result["error"]
        cls = next((c for c in ERROR_CLASSES if c.kind == error["kind"]), StageError)
        raise cls(error["message"])
    model.properties.update(result["model_properties"])
    model_run.properties.update(result["model_run_properties"])
    return result["metrics"]


def _relay(line: str) -> None:
    """One line of the child's stderr into this process's log: its own log records at
    their level, anything else (TensorFlow's native logging) to the run's log file only."""
    if line.startswith(_LOG_MARK):
        level, name, message = (line[len(_LOG_MARK):].split(" ", 2) + ["", ""])[:3]
        logging.getLogger(name).log(logging.getLevelName(level), "%s", message)
    elif line.strip():
        logging.getLogger("train.worker_process").info("%s", line)


def _child_main(job_dir: str) -> int:
    """`python -m components.train.distribute JOB_DIR`: create MWMS before anything else
    touches TensorFlow's runtime, then run the train executor on the job's artifacts."""
    global _multi_worker
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_MARK + "%(levelname)s %(name)s %(message)s"))
    logging.getLogger("pipeline").addHandler(handler)
    logging.getLogger("pipeline").setLevel(logging.INFO)
    logging.getLogger("pipeline").propagate = False
    result: dict
    try:
        _multi_worker = _make_multi_worker_strategy()
        with open(os.path.join(job_dir, _JOB), "rb") as f:
            job = pickle.load(f)
        from pipeline.artifacts import MODEL, MODEL_RUN, Artifact
        from pipeline.component import ExecutionContext
        from components.train import executor

        model = Artifact(MODEL, job["model_uri"])
        model_run = Artifact(MODEL_RUN, job["model_run_uri"])
        # No work_dir: no resumable state (module docstring).
        ctx = ExecutionContext(run_id=job["run_id"], log=logging.getLogger("pipeline.train"))
        metrics = executor.run(job["params"], ctx, examples=job["examples"], model=model,
                               model_run=model_run)
        result = {"metrics": metrics, "model_properties": model.properties,
                  "model_run_properties": model_run.properties}
    except BaseException as e:  # noqa: BLE001 - reported to the parent as one line
        import traceback

        traceback.print_exc()
        if isinstance(e, KeyboardInterrupt):
            e = Interrupted("interrupted (SIGINT or SIGTERM)")
        kind = e.kind if isinstance(e, PipelineError) else StageError.kind
        message = str(e) if isinstance(e, PipelineError) else f"{type(e).__name__}: {e}"
        result = {"error": {"kind": kind, "message": message.strip().splitlines()[0]}}
    with open(os.path.join(job_dir, _RESULT), "w") as f:
        json.dump(result, f, default=str)
    sys.stderr.flush()
    return 0 if "error" not in result else 1


def in_worker_process() -> bool:
    """Whether this process is a fit process (its MWMS already made)."""
    return _multi_worker is not None


if __name__ == "__main__":
    # Through the imported module, whose strategy the executor's import sees (this file
    # runs as __main__, a second module object).
    from components.train import distribute as _self

    sys.exit(_self._child_main(sys.argv[1]))
