"""A fit in a fresh process, as a multi-worker fit needs: MWMS must be made before
TensorFlow's runtime starts (distribute.py), and the chief's launcher started it long ago.

The parent hands the child a FitJob and relays its log lines; the child's entry point,
`main` (`python -m components.train.fit_process JOB_DIR`), makes the strategy, fits
(fit.py) and reports its metrics or its error as JSON. The parent half loads no
TensorFlow: the train-worker command only waits and relays.
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
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

from components.train import distribute
from pipeline.artifacts import Artifact
from pipeline.errors import ERROR_CLASSES, StageError, describe

if TYPE_CHECKING:
    from components.train.component import TrainParams

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LOG_MARK = "@@log "  # a child's log record on its stderr: "@@log LEVEL NAME MESSAGE"
_JOB, _RESULT = "job.pickle", "result.json"


@dataclass(frozen=True)
class FitJob:
    """What one fit needs (fit.train); plain data, so a child process is handed the same."""

    params: TrainParams
    examples: Artifact
    model: Artifact  # written into: the launcher's staging directory, or a worker's scratch
    model_run: Artifact
    work_dir: str = ""  # the resumable state's home, stable per stage fingerprint; "" = none


# -- the parent ---------------------------------------------------------------------------


def fit_in_child(job: FitJob) -> dict:
    """Fit `job` in a fresh child process; its log lines come back to this process's
    loggers, its metrics are returned and its artifacts' properties set, its error raised."""
    job_dir = tempfile.mkdtemp(prefix="train-fit-")
    try:
        with open(os.path.join(job_dir, _JOB), "wb") as f:
            pickle.dump(job, f)
        code = _run_child(job_dir)
        result_path = os.path.join(job_dir, _RESULT)
        if not os.path.exists(result_path):
            raise StageError(
                f"the training process exited with code {code} before it "
                "reported a result (see the run's log)"
            )
        with open(result_path) as f:
            result = json.load(f)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    if "error" in result:
        error = result["error"]
        cls = next((c for c in ERROR_CLASSES if c.kind == error["kind"]), StageError)
        raise cls(error["message"])
    job.model.properties.update(result["model_properties"])
    job.model_run.properties.update(result["model_run_properties"])
    return result["metrics"]


def _run_child(job_dir: str) -> int:
    """Run the child to its end, relaying its stderr; an interrupt takes the child along."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p
        ),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", __name__, job_dir],  # main() below
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stderr is not None  # stderr=PIPE
    try:
        for line in child.stderr:
            _relay(line.rstrip("\n"))
        return child.wait()
    finally:
        if child.poll() is None:  # interrupted: the fit goes with us
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _relay(line: str) -> None:
    """One line of the child's stderr into this process's log: its own log records at
    their level, anything else (TensorFlow's native logging) to the run's log file only."""
    if line.startswith(_LOG_MARK):
        level, name, message = (line[len(_LOG_MARK) :].split(" ", 2) + ["", ""])[:3]
        logging.getLogger(name).log(logging.getLevelName(level), "%s", message)
    elif line.strip():
        logging.getLogger("train.worker_process").info("%s", line)


# -- the child ----------------------------------------------------------------------------


def main(job_dir: str) -> int:
    """The child: make MWMS before anything else touches TensorFlow's runtime, fit the
    job, write its metrics or its one-line error into the job directory."""
    _log_to_parent()
    job = None
    try:
        strategy = distribute.multi_worker_strategy()
        # Keras and TensorFlow's data code load here, in the child only, after the strategy.
        from components.train import fit

        with open(os.path.join(job_dir, _JOB), "rb") as f:
            job = pickle.load(f)
        metrics = fit.train(job, strategy, logging.getLogger("pipeline.train"))
        result = {
            "metrics": metrics,
            "model_properties": job.model.properties,
            "model_run_properties": job.model_run.properties,
        }
    except BaseException as e:  # noqa: BLE001 - reported to the parent as one line
        traceback.print_exc()
        error = describe(e, where=job.model.uri if job is not None else job_dir)
        result = {
            "error": {"kind": error["kind"], "message": (error["message"].splitlines() or [""])[0]}
        }
    with open(os.path.join(job_dir, _RESULT), "w") as f:
        json.dump(result, f, default=str)
    sys.stderr.flush()
    return 0 if "error" not in result else 1


def _log_to_parent() -> None:
    """The pipeline's log records onto stderr, marked for the parent's `_relay`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_MARK + "%(levelname)s %(name)s %(message)s"))
    pipeline_log = logging.getLogger("pipeline")
    pipeline_log.addHandler(handler)
    pipeline_log.setLevel(logging.INFO)
    pipeline_log.propagate = False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
