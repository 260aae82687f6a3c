"""Lineage in ML Metadata (the store TFX uses), SQLite under the pipeline root.

Runs are contexts (type `pipeline_run`, all under one `pipeline` context); each stage
is an execution with its fingerprint; artifacts are linked to executions by INPUT
and OUTPUT events. A cache hit is recorded as its own execution (state CACHED) whose
outputs are the reused artifacts, so "what did run N produce" is one query.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from pipeline.artifacts import Artifact

PIPELINE_NAME = "ae_pipeline"
RUN_CONTEXT = "pipeline_run"
PIPELINE_CONTEXT = "pipeline"

STATES = {
    "running": pb.Execution.RUNNING,
    "complete": pb.Execution.COMPLETE,
    "failed": pb.Execution.FAILED,
    "cached": pb.Execution.CACHED,
}


def _set(props, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        props[key].string_value = json.dumps(value, sort_keys=True, default=str)
    elif isinstance(value, int):
        props[key].int_value = value
    elif isinstance(value, float):
        props[key].double_value = value
    else:
        props[key].string_value = value


def _get(value: pb.Value) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class MetadataStore:
    def __init__(self, sqlite_path: str):
        os.makedirs(os.path.dirname(os.path.abspath(sqlite_path)), exist_ok=True)
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = sqlite_path
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self._types: dict[tuple[str, str], int] = {}

    # -- types -----------------------------------------------------------------
    def _type_id(self, kind: str, name: str) -> int:
        key = (kind, name)
        if key not in self._types:
            if kind == "artifact":
                t = pb.ArtifactType(name=name)
                self._types[key] = self.store.put_artifact_type(t)
            elif kind == "execution":
                t = pb.ExecutionType(name=name)
                self._types[key] = self.store.put_execution_type(t)
            else:
                t = pb.ContextType(name=name)
                self._types[key] = self.store.put_context_type(t)
        return self._types[key]

    # -- contexts ----------------------------------------------------------------
    def _context(self, type_name: str, name: str) -> pb.Context:
        existing = self.store.get_context_by_type_and_name(type_name, name)
        if existing is not None:
            return existing
        ctx = pb.Context(type_id=self._type_id("context", type_name), name=name)
        [ctx.id] = self.store.put_contexts([ctx])
        return ctx

    def run_exists(self, run_id: str) -> bool:
        return self.store.get_context_by_type_and_name(RUN_CONTEXT, run_id) is not None

    def run_contexts(self, run_id: str) -> list[pb.Context]:
        return [self.store.get_context_by_type_and_name(PIPELINE_CONTEXT, PIPELINE_NAME),
                self.store.get_context_by_type_and_name(RUN_CONTEXT, run_id)]

    def start_run(self, run_id: str, config: dict) -> list[pb.Context]:
        pipeline = self._context(PIPELINE_CONTEXT, PIPELINE_NAME)
        run = self._context(RUN_CONTEXT, run_id)
        _set(run.custom_properties, "config", config)
        self.store.put_contexts([run])
        self.store.put_parent_contexts(
            [pb.ParentContext(child_id=run.id, parent_id=pipeline.id)])
        return [pipeline, run]

    # -- executions ----------------------------------------------------------------
    def record_execution(self, contexts: list[pb.Context], stage: str, state: str,
                         fingerprint: str, inputs: dict[str, Artifact],
                         outputs: dict[str, Artifact], properties: dict | None = None,
                         execution_id: int | None = None) -> int:
        """Create or update one stage execution with its input/output events."""
        execution = pb.Execution(type_id=self._type_id("execution", stage))
        if execution_id is not None:
            execution.id = execution_id
        execution.last_known_state = STATES[state]
        _set(execution.custom_properties, "fingerprint", fingerprint)
        _set(execution.custom_properties, "state", state)
        for k, v in (properties or {}).items():
            _set(execution.custom_properties, k, v)
        pairs = []
        if execution_id is None:  # events are attached once, when the execution starts
            pairs += [self._pair(name, a, pb.Event.INPUT) for name, a in inputs.items()]
        pairs += [self._pair(name, a, pb.Event.OUTPUT) for name, a in outputs.items()]
        exec_id, artifact_ids, _ = self.store.put_execution(
            execution, pairs, contexts, reuse_context_if_already_exist=True)
        out_ids = artifact_ids[-len(outputs):] if outputs else []
        for a, aid in zip(outputs.values(), out_ids):
            a.id = aid
        return exec_id

    def _pair(self, name: str, a: Artifact, event_type) -> tuple[pb.Artifact, pb.Event]:
        proto = pb.Artifact(type_id=self._type_id("artifact", a.type), uri=a.uri,
                            state=pb.Artifact.LIVE)
        if a.id is not None:
            proto.id = a.id
        for k, v in a.properties.items():
            _set(proto.custom_properties, k, v)
        event = pb.Event(type=event_type)
        event.path.steps.add().key = name
        return proto, event

    # -- cache -------------------------------------------------------------------
    def find_cached(self, stage: str, fingerprint: str) -> dict[str, Artifact] | None:
        """Outputs of the newest COMPLETE execution of `stage` with this fingerprint."""
        try:
            executions = self.store.get_executions_by_type(stage)
        except Exception:  # type not registered yet
            return None
        matches = [e for e in executions
                   if e.last_known_state == pb.Execution.COMPLETE
                   and _get(e.custom_properties["fingerprint"]) == fingerprint]
        for execution in sorted(matches, key=lambda e: e.id, reverse=True):
            outputs = self.outputs_of(execution.id)
            if outputs:
                return outputs
        return None

    def outputs_of(self, execution_id: int) -> dict[str, Artifact]:
        events = [e for e in self.store.get_events_by_execution_ids([execution_id])
                  if e.type == pb.Event.OUTPUT]
        by_id = {a.id: a for a in self.store.get_artifacts_by_id([e.artifact_id for e in events])}
        types = {t.id: t.name for t in self.store.get_artifact_types()}
        result = {}
        for e in events:
            proto = by_id[e.artifact_id]
            result[e.path.steps[0].key] = Artifact(
                type=types[proto.type_id], uri=proto.uri, id=proto.id,
                properties={k: _decode(_get(v)) for k, v in proto.custom_properties.items()})
        return result

    # -- inspection ----------------------------------------------------------------
    def runs(self) -> list[str]:
        return [c.name for c in self.store.get_contexts_by_type(RUN_CONTEXT)]

    def run_executions(self, run_id: str) -> list[dict]:
        ctx = self.store.get_context_by_type_and_name(RUN_CONTEXT, run_id)
        if ctx is None:
            return []
        types = {t.id: t.name for t in self.store.get_execution_types()}
        rows = []
        for e in sorted(self.store.get_executions_by_context(ctx.id), key=lambda e: e.id):
            rows.append({
                "execution_id": e.id,
                "stage": types[e.type_id],
                "state": _get(e.custom_properties["state"]),
                "fingerprint": _get(e.custom_properties["fingerprint"]),
                "outputs": {k: a.uri for k, a in self.outputs_of(e.id).items()},
            })
        return rows


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{\"" or value in ("true", "false", "null"):
        try:
            return json.loads(value)
        except (TypeError, ValueError):
            return value
    return value
