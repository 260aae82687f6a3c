"""The component contract, as TFX's component.py declares it: typed input and output
channels, a parameters class, and the executor, referenced directly.

An executor is a function

    def run(params: XParams, ctx: ExecutionContext, *, <input keys>, <output keys>) -> dict

whose keyword arguments are exactly the component's input and output keys (checked
when the Component is made), each an Artifact. It reads committed inputs, writes into
the staging directories of its outputs (the launcher commits them), and returns the
metrics for the run summary. So any executor runs alone on artifacts on disk, which is
what the component tests do.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping


@dataclass(frozen=True)
class Channel:
    """An input: an artifact type and the upstream component output that provides it."""

    type: str
    producer: str
    output: str


@dataclass(frozen=True)
class Component:
    name: str
    inputs: Mapping[str, Channel]
    outputs: Mapping[str, str]  # key -> artifact type
    params: type  # a pipeline.config.Params subclass
    executor: Callable[..., dict]
    description: str
    # Outputs that are still published when the executor rejects its input (a DataError):
    # the statistics and anomalies that explain the rejection. The execution stays FAILED,
    # so the cache never reuses them.
    published_on_rejection: tuple[str, ...] = ()

    def __post_init__(self):
        keys = set(self.inputs) | set(self.outputs)
        assert not set(self.inputs) & set(self.outputs), f"{self.name}: input and output keys overlap"
        assert set(self.published_on_rejection) <= set(self.outputs), self.name
        signature = inspect.signature(self.executor)
        declared = {n for n, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY}
        if declared != keys:
            raise TypeError(f"component {self.name}: executor {self.executor_module}.run takes "
                            f"{sorted(declared)} but the component declares {sorted(keys)}")

    @property
    def executor_module(self) -> str:
        return self.executor.__module__

    @property
    def upstream(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.producer for c in self.inputs.values()))


@dataclass
class ExecutionContext:
    """What an executor may need beyond its artifacts and parameters."""

    run_id: str = "test"
    beam_args: tuple[str, ...] = ("--runner=DirectRunner",)
    # A scratch directory stable across attempts of the same stage fingerprint (it survives
    # a crash, so the trainer keeps its resumable backup there); "" = none.
    work_dir: str = ""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pipeline"))
