"""The component contract, TFX-style: a spec (inputs, outputs, parameters) kept apart
from the executor that does the work.

A component's `component.py` declares a ComponentSpec; its `executor.py` holds

    def run(inputs: dict[str, Artifact], outputs: dict[str, Artifact],
            params: dict, ctx: ExecutionContext) -> dict   # metrics for the summary

Executors read committed input directories and write into the (temporary) output
directories they are handed; the runner commits those atomically. So any executor
can run alone on artifacts on disk, which is what the component tests do.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from pipeline.artifacts import Artifact
from pipeline.config import Config


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    # input name -> (artifact type, upstream "stage.output")
    inputs: dict[str, tuple[str, str]]
    # output name -> artifact type
    outputs: dict[str, str]
    # "package.module:function" of the executor; imported lazily so that spec
    # modules stay cheap (no TensorFlow import to build the graph).
    executor: str
    # config -> the JSON-able parameters this stage depends on (hashed for caching)
    params: Callable[[Config], dict[str, Any]]
    description: str = ""
    # "module:function" mapping params -> a JSON-able identity of data read from
    # outside the artifact store (ingest's source files), hashed into the cache key.
    external_fingerprint: str | None = None

    def executor_fn(self) -> Callable[..., dict]:
        module, _, fn = self.executor.partition(":")
        return getattr(importlib.import_module(module), fn)

    def external_identity(self, params: dict):
        if not self.external_fingerprint:
            return None
        module, _, fn = self.external_fingerprint.partition(":")
        return getattr(importlib.import_module(module), fn)(params)

    @property
    def executor_module(self) -> str:
        return self.executor.partition(":")[0]


@dataclass
class ExecutionContext:
    """What an executor may need beyond its artifacts."""

    run_id: str = "test"
    beam_args: list[str] = field(default_factory=lambda: ["--runner=DirectRunner"])
    # Stable scratch directory for this stage and fingerprint (survives a crash;
    # the trainer keeps its resumable backup here).
    work_dir: str = ""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pipeline"))


def run_executor(spec: ComponentSpec, inputs: dict[str, Artifact], outputs: dict[str, Artifact],
                 params: dict, ctx: ExecutionContext | None = None) -> dict:
    """Run one component's executor directly (what tests and the runner call)."""
    return spec.executor_fn()(inputs, outputs, params, ctx or ExecutionContext()) or {}
