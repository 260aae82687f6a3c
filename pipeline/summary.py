"""`<root>/runs/<run_id>/summary.json`: a view of one run rendered from ML Metadata (the
one record of run state) after every stage, written atomically. Schedulers and people
read it; nothing reads it back. `runs` and `show` render the same view.

Stage statuses: pending, running, ran, cached, failed, interrupted, abandoned, skipped
(not reached because an earlier stage failed). `blessing` and `push` say whether the
model was blessed and pushed, and why (the artifacts' properties in ML Metadata).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from pipeline.metadata import MetadataStore

SUMMARY_FILE = "summary.json"
_STAGE_STATUS = {"complete": "ran", "cached": "cached", "failed": "failed", "running": "running",
                 "canceled": "interrupted", "abandoned": "abandoned"}


def iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.datetime.fromtimestamp(float(ts), datetime.timezone.utc).isoformat(
        timespec="seconds")


def render(store: MetadataStore, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id)
    if run is None:
        raise FileNotFoundError(f"no run {run_id!r} in {store.path}")
    latest: dict[str, dict] = {}
    for e in store.run_executions(run_id):
        latest[e["stage"]] = e  # ordered by id: the last attempt wins
    outputs: dict[str, dict] = {}  # stage -> output key -> Artifact
    sources = store.executions([int(e["cached_from"]) for e in latest.values()
                                if e["state"] == "cached" and e.get("cached_from")])
    stages = {}
    for name in run.get("stages", []):
        e = latest.get(name)
        if e is None:
            stages[name] = {"status": "pending" if run.get("status") == "running" else "skipped"}
            continue
        metrics = e.get("metrics")
        if e["state"] == "cached" and e.get("cached_from"):
            source = sources[int(e["cached_from"])]
            metrics = source.get("metrics")
            cached_from = {"execution_id": source["execution_id"],
                           "run_id": next(iter(e["outputs"].values())).properties.get("run_id")
                           if e["outputs"] else None}
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
    finished = run.get("finished")
    config = run.get("config", {})
    evaluation = stages.get("evaluate", {}).get("metrics") or {}
    metric = "neg_elbo" if "neg_elbo" in evaluation else "bce_excess"
    return {
        "run_id": run_id,
        "status": run.get("status"),
        "exit_code": run.get("exit_code"),
        "dataset": config.get("data", {}).get("dataset"),
        "variant": config.get("model", {}).get("variant"),
        "main_metric": {"name": metric, "value": evaluation.get(metric)},
        "blessing": _properties(outputs, "evaluate", "blessing", BLESSING_FIELDS),
        # `cached`: this run reused an earlier run's push (nothing new was pushed)
        "push": _properties(outputs, "push", "pushed_model", PUSH_FIELDS,
                            cached=stages.get("push", {}).get("status") == "cached"),
        "started": iso(run.get("started")),
        "finished": iso(finished),
        "duration_s": round(float(finished) - float(run["started"]), 1) if finished else None,
        "owner": {"pid": run.get("owner_pid"), "host": run.get("owner_host"),
                  "heartbeat": iso(run.get("heartbeat"))},
        "command": run.get("command"),
        "error": run.get("error"),
        "stages": stages,
        "preset": run.get("preset") or None,
        "config_changed": run.get("config_changed", {}),
        "config": config,
        "gc": run.get("gc"),
    }


BLESSING_FIELDS = ("blessed", "reason", "lineage", "metric", "candidate_value", "baseline_value",
                   "baseline_run_id", "thresholds")
PUSH_FIELDS = ("pushed", "reason", "version", "destination", "model_name", "forced")


def _properties(outputs: dict, stage: str, key: str, fields, **extra) -> dict | None:
    artifact = outputs.get(stage, {}).get(key)
    if artifact is None:
        return None
    return {**{f: artifact.properties.get(f) for f in fields}, **extra}


def path(root: str, run_id: str) -> str:
    return os.path.join(root, "runs", run_id, SUMMARY_FILE)


def write(store: MetadataStore, run_id: str) -> dict[str, Any]:
    view = render(store, run_id)
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
