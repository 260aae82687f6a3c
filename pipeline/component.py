"""The component contract, as TFX's component.py declares it: typed inputs and outputs,
a parameters class, and the executor. A component declares the artifact type of each
input (`Input`); the pipeline file binds it to an upstream component's output
(`wire(examples=transform.output("transformed_examples"))`), so no component names
another and inserting a stage is one edit in `create_pipeline()`.

An executor is the function `run` of the module the component names:

    def run(params: XParams, ctx: ExecutionContext, *, <input keys>, <output keys>) -> dict

whose keyword arguments are exactly the component's input and output keys (checked
when the executor is first loaded), each an Artifact (a `Resolved` input may be None).
It reads committed inputs, writes into the staging directories of its outputs (the
launcher commits them), and returns the metrics for the run summary. So any executor
runs alone on artifacts on disk, which is what the component tests do.

The executor is named by its module path and imported on first use, as TFX's
ExecutorClassSpec would import a class: a run whose stages all come from the cache never
imports TensorFlow, Keras or Beam (docs/operations.md, "Schedules").
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pipeline.views import View

if TYPE_CHECKING:
    from pipeline.config import Params


KINDS = ("cpu", "accelerator")


@dataclass(frozen=True)
class Input:
    """A declared input: the artifact type consumed, not yet bound to a producer."""

    type: str


@dataclass(frozen=True)
class Channel:
    """A bound input: an artifact type and the upstream component output that provides it."""

    type: str
    producer: str
    output: str


# How the launcher resolves a `Resolved` input (pipeline/launcher.py, `resolve`):
# TFX's LatestBlessedModelStrategy: the newest blessed model of the lineage the params
# name (`baseline_lineage()`), made by another model than the input `candidate`.
LATEST_BLESSED_MODEL = "latest_blessed_model"
# What this same component produced (its output `output`) from the data behind the newest
# blessed model whose lineage starts with the params' `reference_scope()`: the data is
# found by following the `candidate` input key upstream from that model.
BLESSED_MODEL_DATA = "blessed_model_data"


@dataclass(frozen=True)
class Resolved:
    """An optional input found in ML Metadata rather than produced by this run, as TFX's
    Resolver node finds the baseline model. None when there is none, or when the params'
    scope is None (resolve nothing). The launcher resolves it when the stage starts (TFX's
    driver), not when the run is planned: a run that overlaps another sees what that one
    blessed. With `in_fingerprint`, what it resolved is part of the stage's cache key."""

    type: str
    candidate: str
    strategy: str = LATEST_BLESSED_MODEL
    output: str = ""  # BLESSED_MODEL_DATA: the output key of this component to find
    in_fingerprint: bool = True

    def __post_init__(self):
        assert self.strategy in (LATEST_BLESSED_MODEL, BLESSED_MODEL_DATA), self.strategy
        assert bool(self.output) == (self.strategy == BLESSED_MODEL_DATA), self


@dataclass(frozen=True)
class Component:
    name: str
    inputs: Mapping[str, Input | Channel | Resolved]
    outputs: Mapping[str, str]  # key -> artifact type
    params: type[Params]  # a pipeline.config.Params subclass
    executor_module: str  # dotted path of the module whose `run` is the executor
    description: str
    # Outputs that are still published when the executor rejects its input (a DataError):
    # the statistics and anomalies that explain the rejection. The execution stays FAILED,
    # so the cache never reuses them.
    published_on_rejection: tuple[str, ...] = ()
    # What the run views show of this stage (pipeline/views.py): nothing by default.
    view: View = View()
    # Where the stage belongs when each stage gets a machine of its own (an Airflow queue
    # and pool per kind, deploy/airflow/): "cpu", or "accelerator" for a GPU worker.
    kind: str = "cpu"

    def __post_init__(self):
        assert not set(self.inputs) & set(self.outputs), (
            f"{self.name}: input and output keys overlap"
        )
        assert set(self.published_on_rejection) <= set(self.outputs), self.name
        assert self.kind in KINDS, f"{self.name}: kind {self.kind!r} is not one of {KINDS}"

    def output(self, key: str) -> Channel:
        """This component's output `key`, for a downstream component's `wire`."""
        if key not in self.outputs:
            raise KeyError(
                f"component {self.name} has no output {key!r} (it has {sorted(self.outputs)})"
            )
        return Channel(self.outputs[key], self.name, key)

    def wire(self, **channels: Channel) -> Component:
        """A copy with each declared `Input` bound to an upstream output of the same type."""
        bound = dict(self.inputs)
        for key, channel in channels.items():
            declared = self.inputs.get(key)
            if not isinstance(declared, (Input, Channel)):
                raise TypeError(
                    f"component {self.name} declares no input {key!r} to wire "
                    f"(its inputs: {sorted(self.unbound) or sorted(self.channels)})"
                )
            if channel.type != declared.type:
                raise TypeError(
                    f"component {self.name}: input {key!r} takes {declared.type}, "
                    f"not {channel.producer}.{channel.output} ({channel.type})"
                )
            bound[key] = channel
        return replace(self, inputs=bound)

    @property
    def unbound(self) -> tuple[str, ...]:
        """Declared inputs the pipeline file has not wired."""
        return tuple(k for k, i in self.inputs.items() if isinstance(i, Input))

    @property
    def executor(self) -> Callable[..., dict]:
        return _load_executor(
            self.executor_module, frozenset(self.inputs) | set(self.outputs), self.name
        )

    def call(self, params, ctx: ExecutionContext, inputs: dict, outputs: dict) -> dict:
        """Run the executor; a `Resolved` input that found nothing is passed as None."""
        missing = {k: None for k in self.resolved if k not in inputs}
        return self.executor(params, ctx, **inputs, **missing, **outputs) or {}

    @property
    def channels(self) -> dict[str, Channel]:
        """The inputs produced by upstream components of this pipeline."""
        return {k: c for k, c in self.inputs.items() if isinstance(c, Channel)}

    @property
    def resolved(self) -> dict[str, Resolved]:
        """The inputs the launcher finds in ML Metadata when the stage starts."""
        return {k: r for k, r in self.inputs.items() if isinstance(r, Resolved)}

    @property
    def upstream(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.producer for c in self.channels.values()))


@functools.cache
def _load_executor(module: str, keys: frozenset, component: str) -> Callable[..., dict]:
    run = importlib.import_module(module).run
    signature = inspect.signature(run)
    declared = {n for n, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY}
    if declared != keys:
        raise TypeError(
            f"component {component}: executor {module}.run takes "
            f"{sorted(declared)} but the component declares {sorted(keys)}"
        )
    return run


@dataclass
class ExecutionContext:
    """What an executor may need beyond its artifacts and parameters."""

    run_id: str = "test"
    root: str = ""  # the pipeline root: relative output locations (push.serving_dir) resolve here
    beam_args: tuple[str, ...] = ()  # Beam pipeline options; () = Beam's defaults (DirectRunner)
    # A scratch directory stable across attempts of the same stage fingerprint (it survives
    # a crash, so the trainer keeps its resumable backup there); "" = none.
    work_dir: str = ""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pipeline"))
