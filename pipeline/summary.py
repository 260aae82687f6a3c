"""`<root>/runs/<run_id>/summary.json`: the run's status and, per stage, its status
(ran / cached / failed / skipped), duration, artifact URIs and metrics.

Each stage writes its own record (stages/<name>.json) and the summary is rebuilt
from them after every stage, written atomically, so it is readable mid-run and
complete after a crash.
"""

from __future__ import annotations

import datetime
import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

from tensorflow.io import gfile

from pipeline.errors import EXIT_OK, EXIT_STAGE, KIND_TO_EXIT, PipelineError


@dataclass
class StageRecord:
    name: str
    status: str = "pending"  # pending | running | ran | cached | failed | skipped
    duration_s: float = 0.0
    fingerprint: str = ""
    execution_id: int | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] | None = None

    def set_error(self, err: PipelineError, trace: str = "") -> None:
        self.error = {"kind": err.kind, "message": str(err), "exit_code": err.exit_code}
        if trace:
            self.error["traceback"] = trace[-4000:]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: str, value: Any) -> None:
    tmp = path + ".tmp"
    with gfile.GFile(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=False, default=str)
    gfile.rename(tmp, path, overwrite=True)


def _read_json(path: str) -> Any:
    with gfile.GFile(path) as f:
        return json.load(f)


def start(run_dir: str, run_id: str, config: dict, stages: list[str]) -> None:
    gfile.makedirs(posixpath.join(run_dir, "stages"))
    _write_json(posixpath.join(run_dir, "run.json"), {
        "run_id": run_id, "started": _now(), "config": config, "stages": stages})
    _compose(run_dir)


def write_stage(run_dir: str, record: StageRecord) -> None:
    _write_json(posixpath.join(run_dir, "stages", f"{record.name}.json"), asdict(record))
    _compose(run_dir)


def _compose(run_dir: str, status: str = "running", exit_code: int | None = None,
             error: dict | None = None) -> dict:
    run = _read_json(posixpath.join(run_dir, "run.json"))
    stages = {}
    for name in run["stages"]:
        path = posixpath.join(run_dir, "stages", f"{name}.json")
        stages[name] = _read_json(path) if gfile.exists(path) else asdict(
            StageRecord(name=name, status="skipped" if status != "running" else "pending"))
    out = {
        "run_id": run["run_id"],
        "status": status,
        "exit_code": exit_code,
        "started": run["started"],
        "finished": _now() if status != "running" else None,
        "error": error,
        "stages": stages,
        "config": run["config"],
    }
    _write_json(posixpath.join(run_dir, "summary.json"), out)
    return out


def finish(run_dir: str) -> dict:
    return _compose(run_dir, "succeeded", EXIT_OK)


def fail(run_dir: str, fallback: PipelineError | None = None, exit_code: int | None = None) -> dict:
    """Compose a failed summary; the failing stage's own record decides the exit code."""
    error = None
    for name in _read_json(posixpath.join(run_dir, "run.json"))["stages"]:
        path = posixpath.join(run_dir, "stages", f"{name}.json")
        if gfile.exists(path):
            rec = _read_json(path)
            if rec["status"] == "failed" and rec.get("error"):
                error = {k: v for k, v in rec["error"].items() if k != "traceback"}
                error["stage"] = name
                break
    if error is None and fallback is not None:
        error = {"kind": fallback.kind, "message": str(fallback), "exit_code": fallback.exit_code}
    if exit_code is None:
        exit_code = KIND_TO_EXIT.get(error["kind"], EXIT_STAGE) if error else EXIT_STAGE
    return _compose(run_dir, "failed", exit_code, error)


def load(root: str, run_id: str) -> dict:
    path = posixpath.join(root, "runs", run_id, "summary.json")
    if not gfile.exists(path):
        raise FileNotFoundError(f"no run {run_id!r} under {root} (no {path})")
    return _read_json(path)


def cached_metrics(root: str, stage: str, artifact_uris: dict[str, str]) -> dict:
    """Metrics of the run that produced these artifacts, from its stage record."""
    for uri in artifact_uris.values():
        props_path = posixpath.join(uri, "_artifact.json")
        if gfile.exists(props_path):
            run_id = _read_json(props_path).get("run_id")
            path = posixpath.join(root, "runs", str(run_id), "stages", f"{stage}.json")
            if run_id and gfile.exists(path):
                return _read_json(path).get("metrics", {})
    return {}
