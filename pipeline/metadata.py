"""ML Metadata (the store TFX uses), SQLite under the pipeline root: the one record of
run state and lineage.

- A run is a context (type `pipeline_run`, child of the `pipeline` context) whose
  properties hold its config, status, exit code, error, owner (pid, host, start) and
  heartbeat.
- Each stage of a run is an execution (type = the stage name) with its fingerprint,
  state, duration, metrics and error; INPUT and OUTPUT events link it to artifacts. A
  cache hit is its own execution (state CACHED) whose outputs are the reused artifacts
  and whose `cached_from` names the execution that made them.
- Artifact URIs are stored relative to the root, so a root that was moved keeps its
  lineage and its cache.

Concurrent runs share the SQLite file. MLMD's own busy handler gives up after about ten
short retries ("Concurrent writes aborted"), so every write here is serialized by a
file lock and retried on top of that.

The file is checked once per process when it is opened (SQLite's quick_check, bounded
in time): a damaged store is an EnvironmentFailure naming it, never a traceback.
Inspection opens it read-only (no lock files, so a read-only root can be inspected).
Every run that ends takes a consistent copy with SQLite's online backup API into
`<root>/backups/` (the newest KEEP_BACKUPS kept); `recover` (pipeline/recovery.py)
restores from there.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Literal, overload

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from pipeline import locks
from pipeline.artifacts import (
    BLESSING,
    COMMIT_MARKER,
    Artifact,
    absolute_properties,
    absolute_uri,
    relative_properties,
    relative_uri,
)
from pipeline.errors import EnvironmentFailure

PIPELINE_NAME = "ae_pipeline"
RUN_CONTEXT = "pipeline_run"
PIPELINE_CONTEXT = "pipeline"
DB_FILE = "metadata.sqlite"
WRITE_RETRY_S = 120.0
BACKUP_DIR = "backups"
KEEP_BACKUPS = 5
# quick_check reads every page; past this it stops and the store is taken as it is.
INTEGRITY_BUDGET_S = 10.0
_checked: set[str] = set()  # stores already checked by this process

STATES = {
    "running": pb.Execution.RUNNING,
    "complete": pb.Execution.COMPLETE,
    "failed": pb.Execution.FAILED,
    "cached": pb.Execution.CACHED,
    "canceled": pb.Execution.CANCELED,  # interrupted (SIGINT / SIGTERM)
    "abandoned": pb.Execution.CANCELED,  # its owner died (SIGKILL, power loss)
}


def _set(props, name: str, value: Any) -> None:
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float, str)):
        props[name].string_value = json.dumps(value, sort_keys=True, default=str)
    elif isinstance(value, int):
        props[name].int_value = value
    elif isinstance(value, float):
        props[name].double_value = value
    else:
        props[name].string_value = value


def _get(value: pb.Value) -> Any:
    kind = value.WhichOneof("value")
    v = getattr(value, kind) if kind else None
    if isinstance(v, str) and (v[:1] in '[{"' or v in ("true", "false", "null")):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _props(proto) -> dict[str, Any]:
    return {k: _get(v) for k, v in proto.custom_properties.items()}


def integrity_problem(path: str, budget_s: float = INTEGRITY_BUDGET_S) -> str | None:
    """Why the SQLite file at `path` is not a usable ML Metadata store, or None. Read-only
    (no journal is created); a check that runs out of `budget_s` finds nothing."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        return str(e)
    deadline = time.monotonic() + budget_s
    con.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        rows = con.execute("PRAGMA quick_check").fetchall()
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.OperationalError as e:
        return None if "interrupted" in str(e) else str(e)
    except sqlite3.DatabaseError as e:
        return str(e)
    finally:
        con.close()
    if rows != [("ok",)]:
        return "; ".join(str(r[0]) for r in rows[:3])
    if tables and "Context" not in tables:
        return "an SQLite file, but not an ML Metadata store (no Context table)"
    return None


def committed_artifacts(root: str) -> list[str]:
    """Every committed artifact directory under the root (`artifacts/<stage>/<run>/<key>`)."""
    return sorted(
        os.path.dirname(p)
        for p in glob.glob(os.path.join(root, "artifacts", "*", "*", "*", COMMIT_MARKER))
    )


def check_store(root: str) -> None:
    """Raise EnvironmentFailure when the root's store is damaged, or missing while
    committed artifacts say it existed; checked once per process."""
    path = os.path.join(root, DB_FILE)
    if path in _checked:
        return
    if not os.path.exists(path) or os.path.getsize(path) == 0:  # an empty file holds nothing
        if committed_artifacts(root):
            raise EnvironmentFailure(
                f"{path}: the metadata store is missing but {root}/artifacts holds committed "
                f"artifacts; run `run_pipeline.py recover --root {root}` to restore it"
            )
        return
    problem = integrity_problem(path)
    if problem:
        raise EnvironmentFailure(
            f"{path}: the metadata store is damaged ({problem}); run "
            f"`run_pipeline.py recover --root {root}` to restore it"
        )
    _checked.add(path)


def backup_store(root: str, name: str, keep: int = KEEP_BACKUPS) -> str:
    """A consistent copy of the store as `<root>/backups/metadata-<name>.sqlite` (SQLite's
    online backup API, under the store's write lock), checked before it replaces
    anything; the newest `keep` copies are kept. Returns its path."""
    directory = os.path.join(root, BACKUP_DIR)
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, f"metadata-{name}.sqlite")
    tmp = os.path.join(directory, f".tmp-{name}-{os.getpid()}.sqlite")
    try:
        with locks.held(root, "metadata", poll_s=0.05):
            copy_sqlite(os.path.join(root, DB_FILE), tmp)
        problem = integrity_problem(tmp)
        if problem:
            raise EnvironmentFailure(f"{tmp}: the backup copy is not usable ({problem})")
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for old in backups(root)[keep:]:
        os.remove(old)
    return final


def backups(root: str) -> list[str]:
    """The store's backups, newest first."""
    found = glob.glob(os.path.join(root, BACKUP_DIR, "metadata-*.sqlite"))
    return sorted(found, key=os.path.getmtime, reverse=True)


def copy_sqlite(src: str, dst: str) -> None:
    """`src` into a new file `dst`, page by page with SQLite's backup API, fsynced."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=60)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    with open(dst, "rb") as f:
        os.fsync(f.fileno())


class MetadataStore:
    def __init__(self, root: str, readonly: bool = False, check: bool = True):
        """`readonly`: for inspection; needs no write access to the root (no lock files,
        no schema creation), and the file must exist. `check`: check_store first (only
        `recover`, which makes a new store beside lost artifacts, skips it)."""
        self.root = root
        self.path = os.path.join(root, DB_FILE)
        self.readonly = readonly
        if check:
            check_store(root)
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = self.path
        self._types: dict[tuple[str, str], int] = {}
        if readonly:
            config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READONLY
            self.store = metadata_store.MetadataStore(config)
            return
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise EnvironmentFailure(
                f"{root}: cannot create the pipeline root ({e.strerror})"
            ) from None
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        # Opening a new file creates the schema: a write like any other.
        self.store = self._write(lambda: metadata_store.MetadataStore(config))

    def _write(self, fn: Callable[[], Any]) -> Any:
        if self.readonly:
            raise EnvironmentFailure(f"{self.path}: opened read-only, cannot be written")
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                with locks.held(self.root, "metadata", poll_s=0.05):
                    return fn()
            except (mlmd_errors.AbortedError, mlmd_errors.InternalError) as e:
                if "locked" not in str(e) and "aborted" not in str(e).lower():
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # -- uris ---------------------------------------------------------------------
    def _relative(self, uri: str) -> str:
        return relative_uri(self.root, uri)

    def absolute(self, uri: str) -> str:
        return absolute_uri(self.root, uri)

    # -- types ---------------------------------------------------------------------
    def _type_id(self, kind: str, name: str) -> int:
        if self.readonly and (kind, name) not in self._types:
            get = {
                "artifact": self.store.get_artifact_type,
                "execution": self.store.get_execution_type,
                "context": self.store.get_context_type,
            }[kind]
            try:
                return get(name).id
            except mlmd_errors.NotFoundError:
                return -1  # never recorded: matches nothing
        if (kind, name) not in self._types:
            put = {
                "artifact": (self.store.put_artifact_type, pb.ArtifactType),
                "execution": (self.store.put_execution_type, pb.ExecutionType),
                "context": (self.store.put_context_type, pb.ContextType),
            }[kind]
            self._types[(kind, name)] = self._write(lambda: put[0](put[1](name=name)))
        return self._types[(kind, name)]

    # -- runs ------------------------------------------------------------------------
    def _run_context(self, run_id: str) -> pb.Context | None:
        return self.store.get_context_by_type_and_name(RUN_CONTEXT, run_id)

    def start_run(self, run_id: str, properties: dict[str, Any]) -> None:
        def put():
            if self._run_context(run_id) is not None:
                raise ValueError(f"run {run_id!r} already exists")
            pipeline = self.store.get_context_by_type_and_name(PIPELINE_CONTEXT, PIPELINE_NAME)
            if pipeline is None:
                pipeline = pb.Context(
                    type_id=self._type_id("context", PIPELINE_CONTEXT), name=PIPELINE_NAME
                )
                [pipeline.id] = self.store.put_contexts([pipeline])
            run = pb.Context(type_id=self._type_id("context", RUN_CONTEXT), name=run_id)
            for k, v in properties.items():
                _set(run.custom_properties, k, v)
            [run.id] = self.store.put_contexts([run])
            self.store.put_parent_contexts(
                [pb.ParentContext(child_id=run.id, parent_id=pipeline.id)]
            )

        self._type_id("context", PIPELINE_CONTEXT)
        self._type_id("context", RUN_CONTEXT)
        self._write(put)

    def update_run(self, run_id: str, **properties: Any) -> None:
        """Set properties of the run's record: a read-modify-write, so one process at a
        time (the stage processes of one run beat their heartbeats side by side)."""

        def put():
            run = self._run_context(run_id)
            for k, v in properties.items():
                _set(run.custom_properties, k, v)
            self.store.put_contexts([run])

        with locks.held(self.root, f"record-{run_id}", poll_s=0.02):
            self._write(put)

    def run_exists(self, run_id: str) -> bool:
        return self._run_context(run_id) is not None

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        ctx = self._run_context(run_id)
        return None if ctx is None else {"run_id": ctx.name, **_props(ctx)}

    def list_runs(self) -> list[dict[str, Any]]:
        try:
            contexts = self.store.get_contexts_by_type(RUN_CONTEXT)
        except mlmd_errors.NotFoundError:
            return []
        return [{"run_id": c.name, **_props(c)} for c in contexts]

    # -- executions --------------------------------------------------------------------
    def _contexts(self, run_id: str) -> list[pb.Context]:
        return [
            self.store.get_context_by_type_and_name(PIPELINE_CONTEXT, PIPELINE_NAME),
            self._run_context(run_id),
        ]

    def _artifact_event(self, key: str, a: Artifact, event_type) -> tuple[pb.Artifact, pb.Event]:
        if a.id is not None:  # already recorded: link it as stored (a DELETED one stays so)
            [proto] = self.store.get_artifacts_by_id([a.id])
        else:
            proto = pb.Artifact(
                type_id=self._type_id("artifact", a.type),
                uri=self._relative(a.uri),
                state=pb.Artifact.LIVE,
            )
            for k, v in relative_properties(self.root, a.properties).items():
                _set(proto.custom_properties, k, v)
        event = pb.Event(type=event_type)
        event.path.steps.add().key = key
        return proto, event

    def put_execution(
        self,
        run_id: str,
        stage: str,
        state: str,
        properties: dict[str, Any],
        inputs: dict[str, Artifact] | None = None,
        outputs: dict[str, Artifact] | None = None,
        execution_id: int | None = None,
    ) -> int:
        """Create (inputs are attached then) or update one stage execution. New output
        artifacts get their MLMD ids set."""
        execution = pb.Execution(
            type_id=self._type_id("execution", stage), last_known_state=STATES[state]
        )
        if execution_id is not None:
            execution = self.store.get_executions_by_id([execution_id])[0]
            execution.last_known_state = STATES[state]
        _set(execution.custom_properties, "state", state)
        for k, v in properties.items():
            _set(execution.custom_properties, k, v)
        outputs = outputs or {}
        pairs = [self._artifact_event(k, a, pb.Event.INPUT) for k, a in (inputs or {}).items()]
        pairs += [self._artifact_event(k, a, pb.Event.OUTPUT) for k, a in outputs.items()]
        exec_id, artifact_ids, _ = self._write(
            lambda: self.store.put_execution(
                execution, pairs, self._contexts(run_id), reuse_context_if_already_exist=True
            )
        )
        for a, aid in zip(outputs.values(), artifact_ids[len(pairs) - len(outputs) :]):
            a.id = aid
        return exec_id

    def _type_names(self, kind: str) -> dict[int, str]:
        """Type id -> name, one query (types appear as stages first record their kinds)."""
        get = {
            "artifact": self.store.get_artifact_types,
            "execution": self.store.get_execution_types,
        }[kind]
        return {t.id: t.name for t in get()}

    def _rows(self, executions: list[pb.Execution]) -> list[dict[str, Any]]:
        """Each execution with its properties and its input and output artifacts, in three
        queries whatever the count (a run view, the index and `runs` read many)."""
        if not executions:
            return []
        events = self.store.get_events_by_execution_ids([e.id for e in executions])
        protos = {
            a.id: a for a in self.store.get_artifacts_by_id(list({ev.artifact_id for ev in events}))
        }
        artifact_types, execution_types = (
            self._type_names("artifact"),
            self._type_names("execution"),
        )
        linked: dict[tuple[int, int], dict[str, Artifact]] = {}
        for ev in events:
            proto = protos[ev.artifact_id]
            linked.setdefault((ev.execution_id, ev.type), {})[ev.path.steps[0].key] = (
                self._artifact(proto, artifact_types)
            )
        return [
            {
                "execution_id": e.id,
                "stage": execution_types[e.type_id],
                **_props(e),
                "inputs": linked.get((e.id, pb.Event.INPUT), {}),
                "outputs": linked.get((e.id, pb.Event.OUTPUT), {}),
            }
            for e in executions
        ]

    def executions(self, execution_ids: list[int]) -> dict[int, dict[str, Any]]:
        rows = self._rows(self.store.get_executions_by_id(list(execution_ids)))
        return {r["execution_id"]: r for r in rows}

    def execution(self, execution_id: int) -> dict[str, Any]:
        return self.executions([execution_id])[execution_id]

    def run_executions(self, run_id: str) -> list[dict[str, Any]]:
        ctx = self._run_context(run_id)
        if ctx is None:
            return []
        return self._rows(sorted(self.store.get_executions_by_context(ctx.id), key=lambda e: e.id))

    @overload
    def artifacts_of(
        self, execution_id: int, event_type: Any = ..., live_only: Literal[False] = ...
    ) -> dict[str, Artifact]: ...

    @overload
    def artifacts_of(
        self, execution_id: int, event_type: Any = ..., *, live_only: bool
    ) -> dict[str, Artifact] | None: ...

    def artifacts_of(
        self, execution_id: int, event_type=pb.Event.OUTPUT, live_only: bool = False
    ) -> dict[str, Artifact] | None:
        """key -> artifact of one execution's INPUT or OUTPUT events; with `live_only`,
        None when any of them is no longer LIVE (deleted by `gc`)."""
        events = [
            e
            for e in self.store.get_events_by_execution_ids([execution_id])
            if e.type == event_type
        ]
        by_id = {a.id: a for a in self.store.get_artifacts_by_id([e.artifact_id for e in events])}
        if live_only and any(a.state != pb.Artifact.LIVE for a in by_id.values()):
            return None
        types = self._type_names("artifact")
        return {e.path.steps[0].key: self._artifact(by_id[e.artifact_id], types) for e in events}

    def _artifact(self, proto: pb.Artifact, types: dict[int, str]) -> Artifact:
        properties = absolute_properties(self.root, _props(proto))
        uri = self.absolute(proto.uri)
        return Artifact(type=types[proto.type_id], uri=uri, id=proto.id, properties=properties)

    # -- lineage ------------------------------------------------------------------------
    def artifact(self, artifact_id: int) -> tuple[Artifact, str] | None:
        """An artifact and its state (live, deleted, ...), by ML Metadata id."""
        found = self.store.get_artifacts_by_id([artifact_id])
        return self._with_state(found[0]) if found else None

    def artifact_by_uri(self, uri: str) -> tuple[Artifact, str] | None:
        found = self.store.get_artifacts_by_uri(self._relative(uri))
        return self._with_state(max(found, key=lambda a: a.id)) if found else None

    def _with_state(self, proto: pb.Artifact) -> tuple[Artifact, str]:
        artifact = self._artifact(proto, self._type_names("artifact"))
        return artifact, pb.Artifact.State.Name(proto.state).lower()

    def uses(self, artifact_id: int) -> list[tuple[str, str, dict[str, Any]]]:
        """Every (event: "input" or "output", run id, execution row) touching an artifact,
        oldest first: who made it, who reused it from the cache, who consumed it."""
        events = self.store.get_events_by_artifact_ids([artifact_id])
        rows = []
        for e in sorted(events, key=lambda e: (e.execution_id, e.type)):
            runs = [
                c.name
                for c in self.store.get_contexts_by_execution(e.execution_id)
                if c.type_id == self._type_id("context", RUN_CONTEXT)
            ]
            rows.append(
                (
                    "output" if e.type == pb.Event.OUTPUT else "input",
                    runs[0] if runs else "?",
                    self.execution(e.execution_id),
                )
            )
        return rows

    # -- cache ------------------------------------------------------------------------
    def find_cached(
        self, stage: str, fingerprint: str, usable: Callable[[Artifact], bool]
    ) -> tuple[int, dict[str, Artifact]] | None:
        """The newest COMPLETE execution of `stage` with this fingerprint whose outputs are
        all LIVE in ML Metadata and still `usable` (committed on disk): a deleted artifact
        is never reused."""
        try:
            executions = self.store.get_executions_by_type(stage)
        except mlmd_errors.NotFoundError:
            return None
        matches = [
            e
            for e in executions
            if e.last_known_state == pb.Execution.COMPLETE
            and _get(e.custom_properties["fingerprint"]) == fingerprint
        ]
        for execution in sorted(matches, key=lambda e: e.id, reverse=True):
            outputs = self.artifacts_of(execution.id, live_only=True)
            if outputs and all(usable(a) for a in outputs.values()):
                return execution.id, outputs
        return None

    def _live(self, artifact: Artifact) -> bool:
        assert artifact.id is not None  # read from the store, so registered
        [proto] = self.store.get_artifacts_by_id([artifact.id])
        return proto.state == pb.Artifact.LIVE

    # -- resolution -------------------------------------------------------------------
    def latest_blessed(
        self,
        model_type: str,
        model_key: str,
        lineage: str,
        exclude: str | None,
        usable: Callable[[Artifact], bool],
    ) -> Artifact | None:
        """The model behind the newest blessing (a ModelBlessing whose `blessed` is true)
        of this lineage, found as the `model_key` input of the execution that wrote the
        blessing; models whose fingerprint is `exclude` (the candidate itself) and models
        no longer usable are passed over (TFX: LatestBlessedModelStrategy)."""
        try:
            blessings = self.store.get_artifacts_by_type(BLESSING)
        except mlmd_errors.NotFoundError:
            return None
        for blessing in sorted(blessings, key=lambda a: a.id, reverse=True):
            props = _props(blessing)
            if (
                blessing.state != pb.Artifact.LIVE
                or props.get("blessed") is not True
                or props.get("lineage") != lineage
            ):
                continue
            events = self.store.get_events_by_artifact_ids([blessing.id])
            for execution_id in sorted(
                {e.execution_id for e in events if e.type == pb.Event.OUTPUT}
            ):
                model = self.artifacts_of(execution_id, pb.Event.INPUT).get(model_key)
                if (
                    model is not None
                    and model.type == model_type
                    and model.properties.get("fingerprint") != exclude
                    and self._live(model)
                    and usable(model)
                ):
                    return model
        return None

    def blessed_model_data(
        self, scope: str, via: str, stage: str, output: str, usable: Callable[[Artifact], bool]
    ) -> Artifact | None:
        """What `stage` wrote as `output` (in a COMPLETE or CACHED execution) from the data
        behind the newest blessing whose lineage starts with `scope`. The data is found by
        walking upstream from the blessing: the producing execution's `via` input, then
        that artifact's producer's `via` input, and so on, until an artifact `stage`
        consumed as `via` (launcher: BLESSED_MODEL_DATA)."""
        try:
            blessings = self.store.get_artifacts_by_type(BLESSING)
        except mlmd_errors.NotFoundError:
            return None
        done = (pb.Execution.COMPLETE, pb.Execution.CACHED)
        stage_type = self._type_id("execution", stage)
        for blessing in sorted(blessings, key=lambda a: a.id, reverse=True):
            props = _props(blessing)
            if (
                blessing.state != pb.Artifact.LIVE
                or props.get("blessed") is not True
                or not str(props.get("lineage", "")).startswith(scope)
            ):
                continue
            artifact_id = blessing.id
            for _ in range(8):  # a few stages upstream at most
                events = self.store.get_events_by_artifact_ids([artifact_id])
                consumers = self.store.get_executions_by_id(
                    [
                        e.execution_id
                        for e in events
                        if e.type == pb.Event.INPUT and e.path.steps[0].key == via
                    ]
                )
                for execution in sorted(consumers, key=lambda e: e.id, reverse=True):
                    if execution.type_id == stage_type and execution.last_known_state in done:
                        found = self.artifacts_of(execution.id).get(output)
                        if found is not None and self._live(found) and usable(found):
                            return found
                producers = sorted(e.execution_id for e in events if e.type == pb.Event.OUTPUT)
                upstream = (
                    self.artifacts_of(producers[0], pb.Event.INPUT).get(via) if producers else None
                )
                if upstream is None:
                    break
                artifact_id = upstream.id
        return None
