"""push: copy a blessed SavedModel to `<serving_dir>/<model_name>/<version>/`.

TensorFlow Serving loads the highest integer version under its model base path and
ignores other names, so the copy is made under a `.tmp-` name and renamed into place
(one atomic step on a local filesystem): Serving never sees half a model. Versions only
grow: the next one is above every version directory present and above the highest ever
pushed (`.last_version`, so deleting the newest directory never reissues its number).
A lock file in the model directory orders pushes from overlapping runs, even of other
pipeline roots that share the serving directory.

A blessing is acted on only while the lineage's blessed model is the one it was decided
against (`current_baseline`, resolved when push starts): if a run that overlapped this
one blessed another model meanwhile, this one is not pushed, and the next run compares
with that model. A rollback is deleting the newest version directory: the push record
stays reusable while the model directory's `.last_version` exists, so the schedule does
not push the same model back.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from typing import TYPE_CHECKING

from pipeline.artifacts import EXTERNAL_PATHS, Artifact

if TYPE_CHECKING:
    from components.push.component import PushParams
    from pipeline.component import ExecutionContext

PUSH_JSON = "push.json"
LAST_VERSION = ".last_version"
LOCK = ".push.lock"


def run(
    params: PushParams,
    ctx: ExecutionContext,
    *,
    model: Artifact,
    saved_model: Artifact,
    blessing: Artifact,
    current_baseline: Artifact | None,
    pushed_model: Artifact,
) -> dict:
    blessed = blessing.properties.get("blessed") is True
    stale = _superseded(blessing, current_baseline) if blessed else ""
    record = {
        "pushed": False,
        "version": None,
        "destination": None,
        "model_name": params.name,
        "blessed": blessed,
        "forced": False,
        "reason": _reason(blessing, blessed, stale, params.force),
    }
    if (blessed and not stale) or params.force:
        record.update(
            _push_model(params, ctx, saved_model, pushed_model), forced=not blessed or bool(stale)
        )
    else:
        ctx.log.info("push: not pushed (%s)", "superseded" if stale else "not blessed")
    with open(os.path.join(pushed_model.uri, PUSH_JSON), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    pushed_model.properties.update(record)
    return {k: record[k] for k in ("pushed", "version", "reason", "model_name")}


def _reason(blessing: Artifact, blessed: bool, stale: str, force: bool) -> str:
    """Why the model is pushed or not, in a line."""
    why = blessing.properties.get("reason", "no reason recorded")
    if blessed and not stale:
        return f"blessed: {why}"
    not_pushed = f"superseded: {stale}" if stale else f"not blessed: {why}"
    return f"forced (--force-push) although {not_pushed}" if force else not_pushed


def _push_model(
    params: PushParams, ctx: ExecutionContext, saved_model: Artifact, pushed_model: Artifact
) -> dict:
    """Copy the SavedModel into a new version directory; the record's fields for it."""
    base = os.path.join(ctx.root, params.serving_dir)  # an absolute serving_dir wins
    model_dir = os.path.join(base, params.name)
    version, destination = _push(
        os.path.join(saved_model.uri, saved_model.properties["path"]), model_dir
    )
    # Reused from the cache while the model directory is there: deleting a version by
    # hand (a rollback) is respected; a wiped serving directory is pushed to again.
    pushed_model.properties[EXTERNAL_PATHS] = [os.path.join(model_dir, LAST_VERSION)]
    ctx.log.info("push: %s version %d -> %s", params.name, version, destination)
    return {"pushed": True, "version": version, "destination": destination}


def _superseded(blessing: Artifact, current_baseline: Artifact | None) -> str:
    """Why the blessing no longer holds ('' if it does): it was decided against another
    model than the lineage's blessed model now, which a run that overlapped this one
    blessed meanwhile."""
    decided_against = blessing.properties.get("baseline_artifact_id")
    now = None if current_baseline is None else current_baseline.id
    if decided_against == now:
        return ""
    if current_baseline is None:  # the baseline is gone (deleted by hand) and none replaced it
        return (
            f"blessed against {_model(decided_against, blessing.properties)}, which is no "
            "longer a usable blessed model; the next run decides against the ceilings"
        )
    return (
        f"blessed against {_model(decided_against, blessing.properties)}, but "
        f"run {current_baseline.properties.get('run_id')} has blessed another model of this "
        "lineage since; the next run compares with that one"
    )


def _model(artifact_id, props) -> str:
    if artifact_id is None:
        return "the ceilings alone (first of its lineage)"
    return f"run {props.get('baseline_run_id')}'s model (artifact {artifact_id})"


def _push(source: str, model_dir: str) -> tuple[int, str]:
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, LOCK), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        version = _next_version(model_dir)
        staging = os.path.join(model_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
        try:
            shutil.copytree(source, staging)
            destination = os.path.join(model_dir, str(version))
            os.rename(staging, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _write_atomically(os.path.join(model_dir, LAST_VERSION), f"{version}\n")
    return version, destination


def _next_version(model_dir: str) -> int:
    present = [int(n) for n in os.listdir(model_dir) if n.isdigit()]
    try:
        with open(os.path.join(model_dir, LAST_VERSION)) as f:
            present.append(int(f.read().strip() or 0))
    except FileNotFoundError:
        pass
    return max([*present, 0]) + 1


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
