"""Retention for a pipeline root: `run_pipeline.py gc --keep-last N --keep-days D`.

Kept:
- runs: the N newest by start time (counting runs that ran at least one stage) and the
  runs started within D days; with one flag, that rule alone. A live run makes gc refuse
  (exit 75) rather than delete anything under it;
- artifacts: everything attached (INPUT or OUTPUT event) to an execution of a kept run (a
  cache hit is its own execution, so what a kept run reuses is kept), and everything
  backing a released model, whatever its run (`released`).

Every other LIVE artifact under `<root>/artifacts/` is deleted: its directory is removed
and ML Metadata records it DELETED, so the cache never reuses it. Staging directories
and scratch (`tmp/<run_id>`) left by dead runs go too, and work directories whose work is
done (or older than D days).
Run records (contexts, summary.json, pipeline.log) stay: they are small and say what was
deleted (the run property `gc`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import time
from collections import Counter

from ml_metadata.proto import metadata_store_pb2 as pb

from pipeline import artifacts, locks, runner
from pipeline.artifacts import Artifact
from pipeline.errors import EXIT_SKIPPED, ConfigError, PipelineError
from pipeline.metadata import DB_FILE, MetadataStore
from pipeline.views import Views

DAY_S = 86400.0
# A released model's record -> the property that says the release happened.
RELEASE_FLAGS = {artifacts.BLESSING: "blessed", artifacts.PUSHED_MODEL: "pushed"}


class RootBusy(PipelineError):
    """A run is live on the root: gc does nothing rather than race it (try again later)."""

    exit_code = EXIT_SKIPPED
    kind = "skipped"


def collect(
    root: str, keep_last: int | None, keep_days: float | None, dry_run: bool, *, views: Views
) -> dict:
    """Delete what the policy does not keep (nothing under `dry_run`); returns what was (or
    would be) kept, deleted and freed. Raises ConfigError for a bad policy or root, RootBusy
    when a run is live. `views`: what the pages of the runs it touches show."""
    _check_policy(keep_last, keep_days)
    root = artifacts.normalize_root(root)
    if not os.path.exists(os.path.join(root, DB_FILE)):
        raise ConfigError(f"{root} is not a pipeline root (no {DB_FILE})")
    store = MetadataStore(root)
    # Runs take this lock to register: while gc holds it no run starts, so the live check
    # below stays true until gc is done.
    with locks.held(root, "runs"):
        runs = store.list_runs()
        live = sorted(r["run_id"] for r in runs if runner.is_live(root, r))
        if live:
            raise RootBusy(
                f"gc refused: run {', '.join(live)} still running on {root}; "
                "try again when it has finished"
            )
        now = time.time()
        result = {"dry_run": dry_run, **_plan(store, runs, keep_last, keep_days, now)}
        if not dry_run:
            _apply(store, result, now, views)
            # Dead runs still marked running are recorded as abandoned, as every run does;
            # after the deletions, not before, since the sweep also removes their staging
            # directories, which the plan (returned as is by --dry-run) already lists.
            runner.sweep_abandoned(store, views)
    return result


def _check_policy(keep_last: int | None, keep_days: float | None) -> None:
    if keep_last is None and keep_days is None:
        raise ConfigError("gc: give --keep-last and/or --keep-days")
    for flag, value in (("--keep-last", keep_last), ("--keep-days", keep_days)):
        if value is not None and not value >= 0:  # NaN fails too
            raise ConfigError(f"gc: {flag} {value}: expected a number >= 0")


# -- deciding -----------------------------------------------------------------------------


def _plan(store: MetadataStore, runs: list[dict], keep_last, keep_days, now: float) -> dict:
    executions = {r["run_id"]: store.run_executions(r["run_id"]) for r in runs}
    kept = _kept_runs(runs, executions, keep_last, keep_days, now)
    deleted, protected = _artifacts(store, executions, kept)
    staging = [_dir_entry(store.root, p) for p in _staging_dirs(store.root)]
    work = [
        _dir_entry(store.root, p) for p in _done_work_dirs(store.root, executions, keep_days, now)
    ]
    by_start = [r["run_id"] for r in _newest_first(runs)]
    return {
        "kept_runs": [r for r in by_start if r in kept],
        "collected_runs": [r for r in by_start if r not in kept],
        "deleted": deleted,
        "protected": protected,
        "staging_removed": staging,
        "work_removed": work,
        "freed_bytes": sum(e["bytes"] for e in deleted + staging + work),
    }


def _artifacts(store: MetadataStore, executions: dict, kept: set[str]) -> tuple[list, list]:
    """The LIVE artifacts outside the kept runs: those to delete, and those a release
    protects (with why)."""
    in_kept_run = {a.id for run_id in kept for e in executions[run_id] for a in _attached(e)}
    attached: dict[int | None, Artifact] = {}
    made_by: dict[int | None, str] = {}
    release: dict[int | None, str] = {}
    for run_id, rows in executions.items():
        for e in rows:
            attached.update({a.id: a for a in _attached(e)})
            if e["state"] != "cached":
                made_by.update({a.id: run_id for a in e["outputs"].values()})
            flag, backing = released(e)
            for a in backing:
                release.setdefault(a.id, f"backs the model {flag} by {e['stage']} in run {run_id}")
    stored: dict[int, pb.Artifact] = {
        a.id: a for a in store.store.get_artifacts() if a.state == pb.Artifact.LIVE
    }
    owned = os.path.join(store.root, "artifacts", "")
    deleted, protected = [], []
    for aid in sorted(set(stored).intersection(attached) - in_kept_run):
        a, uri = attached[aid], stored[aid].uri  # uri as stored: relative to the root
        if not a.uri.startswith(owned):  # gc removes only what the pipeline wrote there
            continue
        if aid in release:
            protected.append({"id": aid, "type": a.type, "uri": uri, "why": release[aid]})
        else:
            deleted.append(
                {
                    "id": aid,
                    "type": a.type,
                    "uri": uri,
                    "run_id": made_by.get(aid),
                    "bytes": _size(a.uri),
                }
            )
    return deleted, protected


def _newest_first(runs: list[dict]) -> list[dict]:
    return sorted(runs, key=lambda r: (float(r.get("started") or 0), r["run_id"]), reverse=True)


def _kept_runs(runs, executions, keep_last, keep_days, now) -> set[str]:
    kept = set()
    if keep_last is not None:
        # Only runs that ran a stage take a slot: a scheduler's skipped runs (exit 75) hold
        # nothing and must not push the real runs out.
        ran = [r for r in _newest_first(runs) if executions[r["run_id"]]]
        kept |= {r["run_id"] for r in ran[:keep_last]}
    if keep_days is not None:
        kept |= {
            r["run_id"] for r in runs if float(r.get("started") or 0) >= now - keep_days * DAY_S
        }
    return kept


def _attached(execution: dict) -> list[Artifact]:
    return [*execution["inputs"].values(), *execution["outputs"].values()]


def released(execution: dict) -> tuple[str | None, list[Artifact]]:
    """The rule for released models, whatever run they belong to: the execution that
    produced a passing blessing (ModelBlessing, blessed=true) or a push (PushedModel,
    pushed=true) keeps all its inputs and outputs -- model, model run, evaluation,
    blessing, SavedModel, push record -- so a released model stays servable and auditable;
    but not Examples, which ingest and transform can regenerate. A cache hit produced
    nothing: the execution it reused keeps the model. Returns (flag, artifacts kept)."""
    flags = [
        RELEASE_FLAGS[a.type]
        for a in execution["outputs"].values()
        if a.type in RELEASE_FLAGS and a.properties.get(RELEASE_FLAGS[a.type]) is True
    ]
    if not flags or execution["state"] == "cached":
        return None, []
    return flags[0], [a for a in _attached(execution) if a.type != artifacts.EXAMPLES]


def _staging_dirs(root: str) -> list[str]:
    # No run is live (gc refuses otherwise) and none can register while gc holds the runs
    # lock, so every staging directory, and every run's scratch (<root>/tmp/<run_id>:
    # Beam's and autograph's temporary files), was left by a run that died.
    return sorted(
        glob.glob(os.path.join(root, "artifacts", "*", "*", artifacts.TMP_PREFIX + "*"))
        + glob.glob(os.path.join(root, "tmp", "*"))
    )


def _done_work_dirs(root: str, executions: dict, keep_days, now) -> list[str]:
    """Work directories (they hold a killed training's resumable backup) that nothing can
    resume from any more: no one holds the stage's lock, and the stage completed with that
    fingerprint or the directory has not changed for --keep-days."""
    done = {
        (e["stage"], (e.get("fingerprint") or "")[:16])
        for rows in executions.values()
        for e in rows
        if e["state"] == "complete"
    }
    found = []
    for path in sorted(glob.glob(os.path.join(root, "work", "*", "*"))):
        stage, fp16 = path.split(os.sep)[-2:]
        lock = locks.FileLock(root, f"stage-{stage}-{fp16}")
        if not os.path.isdir(path) or lock.is_held_elsewhere():
            continue
        stale = keep_days is not None and _newest_mtime(path) < now - keep_days * DAY_S
        if (stage, fp16) in done or stale:
            found.append(path)
    return found


def _dir_entry(root: str, path: str) -> dict:
    return {"path": os.path.relpath(path, root), "bytes": _size(path)}


def _size(path: str) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(path) for f in files)


def _newest_mtime(path: str) -> float:
    return max(
        os.lstat(os.path.join(d, name)).st_mtime
        for d, _, files in os.walk(path)
        for name in (os.curdir, *files)
    )


# -- deleting -----------------------------------------------------------------------------


def _apply(store: MetadataStore, result: dict, now: float, views: Views) -> None:
    for d in result["deleted"]:
        _delete_artifact(store, d["id"], store.absolute(d["uri"]))
    for entry in result["staging_removed"] + result["work_removed"]:
        shutil.rmtree(os.path.join(store.root, entry["path"]))
    for run_id, n in Counter(d["run_id"] for d in result["deleted"] if d["run_id"]).items():
        before = ((store.get_run(run_id) or {}).get("gc") or {}).get("artifacts", 0)
        store.update_run(run_id, gc={"deleted_at": now, "artifacts": before + n})
        runner.publish(store, run_id, views)  # its summary and report say what was collected


def _delete_artifact(store: MetadataStore, artifact_id: int, path: str) -> None:
    # The marker goes first: the cache reuses only a directory that holds its _COMMITTED
    # marker, so from this instant nothing can reuse the artifact, even if the removal
    # below fails half-way or gc is killed. ML Metadata is told last, recording what is
    # already true on disk; a gc stopped before that leaves a LIVE but unusable artifact,
    # which the next gc deletes (a missing directory is no obstacle).
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(path, artifacts.COMMIT_MARKER))
    if os.path.exists(path):
        shutil.rmtree(path)
    [proto] = store.store.get_artifacts_by_id([artifact_id])
    proto.state = pb.Artifact.DELETED
    store._write(lambda: store.store.put_artifacts([proto]))


# -- reporting ----------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def render_text(result: dict) -> str:
    would = "would " if result["dry_run"] else ""
    kept, collected = result["kept_runs"], result["collected_runs"]
    lines = [
        f"kept {len(kept)} run(s): {', '.join(kept) or '-'}; "
        f"collected {len(collected)}: {', '.join(collected) or '-'}"
    ]
    for d in result["deleted"]:
        lines.append(
            f"  {would}delete {d['type']} {d['uri']} (run {d['run_id'] or '?'}, {_mib(d['bytes'])})"
        )
    for p in result["protected"]:
        lines.append(f"  keep {p['type']} {p['uri']}: {p['why']}")
    for kind, key in (("staging", "staging_removed"), ("work", "work_removed")):
        for e in result[key]:
            lines.append(f"  {would}remove {kind} {e['path']} ({_mib(e['bytes'])})")
    lines.append(f"{'would free' if result['dry_run'] else 'freed'} {_mib(result['freed_bytes'])}")
    return "\n".join(lines)
