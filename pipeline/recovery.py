"""`recover`: get the root's ML Metadata store back after a damaged or lost file.

1. A store that passes SQLite's check is kept as it is.
2. A damaged one is moved aside (`metadata.sqlite.damaged-<UTC time>`, never deleted) and
   the newest backup that passes the check (`<root>/backups/`, one per ended run) is
   restored with SQLite's backup API.
3. Either way, every committed artifact on disk that the store does not know is recorded
   again from its `_artifact.json` (type, properties, and the execution that made it: its
   stage, fingerprint, metrics and inputs), under its run, so the cache and the lineage
   come back. Runs the store lacks are recorded with status `recovered`; their config is
   taken from the run's last `summary.json` where one is left.

What cannot come back: cache hits (`cached` executions made no artifact), failed or
interrupted stages of runs after the newest backup, and artifacts `gc` already deleted.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from typing import Any

from pipeline import artifacts, locks
from pipeline.artifacts import Artifact
from pipeline.metadata import (
    DB_FILE,
    MetadataStore,
    backups,
    committed_artifacts,
    copy_sqlite,
    integrity_problem,
)


def recover(root: str) -> dict[str, Any]:
    """Check, restore and rebuild (module docstring); returns what was done."""
    path = os.path.join(root, DB_FILE)
    result: dict[str, Any] = {
        "store": path,
        "damaged": None,
        "moved_aside": None,
        "restored_from": None,
        "unusable_backups": [],
        "rebuilt_runs": [],
        "rebuilt_artifacts": 0,
    }
    with locks.held(root, "runs"):  # no run starts while the store is replaced
        problem = (integrity_problem(path) if os.path.exists(path) else "missing") or (
            "empty" if os.path.getsize(path) == 0 and committed_artifacts(root) else None
        )
        if problem:
            result["damaged"] = problem
            if os.path.exists(path):
                result["moved_aside"] = _move_aside(path)
            for candidate in backups(root):
                bad = integrity_problem(candidate)
                if bad:
                    result["unusable_backups"].append({"path": candidate, "problem": bad})
                    continue
                tmp = f"{path}.tmp-{os.getpid()}"
                copy_sqlite(candidate, tmp)
                os.replace(tmp, path)
                result["restored_from"] = candidate
                break
        store = MetadataStore(root, check=False)
        runs, count = rebuild(store)
    result.update(rebuilt_runs=runs, rebuilt_artifacts=count)
    return result


def _move_aside(path: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = f"{path}.damaged-{stamp}"
    os.replace(path, aside)
    for suffix in ("-journal", "-wal", "-shm"):  # SQLite's side files belong to the old file
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
    return aside


def rebuild(store: MetadataStore) -> tuple[list[str], int]:
    """Record every committed artifact the store does not know, with the execution that
    made it; returns (runs created, artifacts recorded)."""
    found = []
    for uri in committed_artifacts(store.root):
        if store.artifact_by_uri(uri) is not None:
            continue
        props = artifacts.read_record(uri, store.root)
        record = props.pop(artifacts.EXECUTION_RECORD, None) or {}
        stage, run_id, key = uri.split(os.sep)[-3:]
        found.append(
            (
                os.path.getmtime(os.path.join(uri, artifacts.COMMIT_MARKER)),
                props.get("run_id", run_id),
                props.get("producer", stage),
                key,
                uri,
                props,
                record,
            )
        )
    found.sort()
    executions: dict[tuple[str, str], list] = {}
    for item in found:
        executions.setdefault((item[1], item[2]), []).append(item)
    new_runs: list[str] = []
    for (run_id, stage), items in executions.items():
        if not store.run_exists(run_id):
            store.start_run(run_id, _run_properties(store.root, run_id, found))
            new_runs.append(run_id)
        record = items[0][6]
        outputs = {
            key: Artifact(type=props.pop("type", "?"), uri=uri, properties=props)
            for _, _, _, key, uri, props, _ in items
        }
        inputs = {}
        for key, rel in (record.get("inputs") or {}).items():
            known = store.artifact_by_uri(store.absolute(rel))
            if known is not None:
                inputs[key] = known[0]
        fingerprint = (
            record.get("fingerprint")
            or str(next(iter(outputs.values())).properties.get("fingerprint", "")).rsplit(":", 1)[0]
        )
        store.put_execution(
            run_id,
            stage,
            "complete",
            {
                "fingerprint": fingerprint,
                "started": record.get("started") or items[0][0],
                "duration_s": record.get("duration_s"),
                "metrics": record.get("metrics"),
                "recovered": True,
            },
            inputs=inputs,
            outputs=outputs,
        )
    return new_runs, len(found)


def _run_properties(root: str, run_id: str, found: list) -> dict[str, Any]:
    """What is known of a run the store lost: its stages and times from its artifacts,
    its config from the summary.json it left (a view, read back only here)."""
    mine = [f for f in found if f[1] == run_id]
    stages = list(dict.fromkeys(f[2] for f in mine))
    started = min((f[6] or {}).get("started") or f[0] for f in mine)
    props: dict[str, Any] = {
        "status": "recovered",
        "started": started,
        "finished": mine[-1][0],
        "heartbeat": mine[-1][0],
        "stages": stages,
        "exit_code": None,
        "recovered_at": time.time(),
    }
    try:
        with open(os.path.join(root, "runs", run_id, "summary.json")) as f:
            summary = json.load(f)
        props.update({k: summary[k] for k in ("config", "preset", "command") if k in summary})
        props["stages"] = [s for s in summary.get("stages", {}) if s in stages] or stages
    except (OSError, ValueError):
        pass
    return props


def render_text(result: dict[str, Any]) -> str:
    state = {None: "passes the check", "missing": "missing"}.get(
        result["damaged"], f"damaged ({result['damaged']})"
    )
    lines = [f"store {result['store']}: {state}"]
    if result["moved_aside"]:
        lines.append(f"  moved aside to {result['moved_aside']}")
    for b in result["unusable_backups"]:
        lines.append(f"  backup {b['path']} not usable ({b['problem']})")
    if result["damaged"]:
        lines.append(
            f"  restored from {result['restored_from']}"
            if result["restored_from"]
            else "  no usable backup: rebuilt from the artifacts' _artifact.json"
        )
    lines.append(
        f"  {result['rebuilt_artifacts']} artifact(s) recorded again from disk"
        + (
            f", runs {', '.join(result['rebuilt_runs'])} recorded as recovered"
            if result["rebuilt_runs"]
            else ""
        )
    )
    return "\n".join(lines)
