"""`<root>/runs/<run_id>/summary.json`: a view of one run rendered from ML Metadata (the
one record of run state) after every stage, written atomically. Schedulers and people
read it; nothing reads it back. `runs` and `show` render the same view.

Stage statuses: pending, running, ran, cached, failed, interrupted, abandoned, skipped
(not reached because an earlier stage failed). The main metric and each decision (e.g.
whether the model was blessed and pushed, and why: its artifact's properties) are those
the pipeline's components declare (pipeline/views.py).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from pipeline.metadata import MetadataStore
from pipeline.views import Views

SUMMARY_FILE = "summary.json"
_STAGE_STATUS = {
    "complete": "ran",
    "cached": "cached",
    "failed": "failed",
    "running": "running",
    "canceled": "interrupted",
    "abandoned": "abandoned",
}


def iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.datetime.fromtimestamp(float(ts), datetime.UTC).isoformat(timespec="seconds")


def render(store: MetadataStore, run_id: str, views: Views) -> dict[str, Any]:
    run = store.get_run(run_id)
    if run is None:
        raise FileNotFoundError(f"no run {run_id!r} in {store.path}")
    stages, outputs = _stages(store, run_id, run)
    finished = run.get("finished")
    config = run.get("config", {})
    return {
        "run_id": run_id,
        "status": run.get("status"),
        "exit_code": run.get("exit_code"),
        "dataset": config.get("data", {}).get("dataset"),
        "variant": config.get("model", {}).get("variant"),
        "main_metric": _main_metric(stages, views),
        **{d.key: _decision(outputs, stages, stage, d) for stage, d in views.decisions()},
        "started": iso(run.get("started")),
        "finished": iso(finished),
        "duration_s": round(float(finished) - float(run["started"]), 1) if finished else None,
        "owner": {
            "pid": run.get("owner_pid"),
            "host": run.get("owner_host"),
            "heartbeat": iso(run.get("heartbeat")),
        },
        # "process": one process ran every stage; "stages": a process per stage joined it.
        "mode": run.get("mode") or "process",
        "stage_owners": {
            s: {"process": run[f"owner.{s}"], "heartbeat": iso(run.get(f"heartbeat.{s}"))}
            for s in run.get("stages", [])
            if run.get(f"owner.{s}")
        },
        "command": run.get("command"),
        "error": run.get("error"),
        "stages": stages,
        "preset": run.get("preset") or None,
        "config_changed": run.get("config_changed", {}),
        "config": config,
        "gc": run.get("gc"),
    }


def _stages(store: MetadataStore, run_id: str, run: dict) -> tuple[dict, dict]:
    """(stage -> its entry in the view, stage -> output key -> Artifact)."""
    latest: dict[str, dict] = {}
    for execution in store.run_executions(run_id):
        latest[execution["stage"]] = execution  # ordered by id: the last attempt wins
    outputs: dict[str, dict] = {}
    sources = store.executions(
        [
            int(e["cached_from"])
            for e in latest.values()
            if e["state"] == "cached" and e.get("cached_from")
        ]
    )
    stages: dict[str, dict[str, Any]] = {}
    for name in run.get("stages", []):
        e = latest.get(name)
        if e is None:
            stages[name] = {"status": "pending" if run.get("status") == "running" else "skipped"}
            continue
        metrics = e.get("metrics")
        if e["state"] == "cached" and e.get("cached_from"):
            source = sources[int(e["cached_from"])]
            metrics = source.get("metrics")
            cached_from = {
                "execution_id": source["execution_id"],
                "run_id": next(iter(e["outputs"].values())).properties.get("run_id")
                if e["outputs"]
                else None,
            }
        else:
            cached_from = None
        outputs[name] = e["outputs"]
        stages[name] = {
            "status": _STAGE_STATUS[e["state"]],
            "duration_s": e.get("duration_s", 0.0),
            "execution_id": e["execution_id"],
            "fingerprint": e.get("fingerprint"),
            "cached_from": cached_from,
            "artifacts": {k: a.uri for k, a in e["outputs"].items()},
            "metrics": metrics or {},
            "error": e.get("error"),
        }
    return stages, outputs


def _main_metric(stages: dict, views: Views) -> dict[str, Any]:
    declared = views.main_metric()
    if declared is None:
        return {"name": None, "value": None}
    stage, main = declared
    metrics = stages.get(stage, {}).get("metrics") or {}
    name = main.pick(metrics)
    return {"name": name, "value": metrics.get(name)}


def _decision(outputs: dict, stages: dict, stage: str, decision) -> dict | None:
    artifact = outputs.get(stage, {}).get(decision.output)
    if artifact is None:
        return None
    found = {f: artifact.properties.get(f) for f in decision.fields}
    if decision.says_if_reused:  # this run reused an earlier run's outcome
        found["cached"] = stages.get(stage, {}).get("status") == "cached"
    return found


def path(root: str, run_id: str) -> str:
    return os.path.join(root, "runs", run_id, SUMMARY_FILE)


def write(store: MetadataStore, run_id: str, views: Views) -> dict[str, Any]:
    view = render(store, run_id, views)
    target = path(store.root, run_id)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(view, f, indent=2, default=str)
        os.replace(tmp, target)
    except BaseException:  # a full disk: no half-written file left beside the view
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return view
