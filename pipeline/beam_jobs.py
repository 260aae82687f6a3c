"""The executors' data-parallel Beam pipelines, run with the run's Beam options
(`beam.args`, declared and checked in pipeline/runner.py).

A DoFn's exception reaches the driver wrapped by the runner (in-process it keeps
its type with an augmented message; from worker processes or a remote runner it
arrives as a RuntimeError carrying the remote traceback). Our typed errors are
recovered from either form so the exit code still says "bad data" and not "crash".
"""

from __future__ import annotations

import contextlib
import re

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import errors

_TYPED = {
    cls.__name__: cls
    for cls in (errors.DataAnomalyError, errors.DataError, errors.ConfigError, errors.StageError)
}
_PATTERN = re.compile(r"(?:pipeline\.errors\.)?(" + "|".join(_TYPED) + r"): (.+)")


def typed_error(exc: BaseException) -> errors.PipelineError | None:
    if isinstance(exc, errors.PipelineError):
        return exc
    match = _PATTERN.search(str(exc))
    if match:
        message = re.sub(r" \[while running '[^']*'\]$", "", match.group(2).strip())
        return _TYPED[match.group(1)](message)
    return None


@contextlib.contextmanager
def pipeline(beam_args):
    """`with beam_jobs.pipeline(ctx.beam_args) as p:` -- like beam.Pipeline, typed errors kept."""
    try:
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
            yield p
    except errors.PipelineError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised, typed when it is one of ours
        typed = typed_error(e)
        if typed is None:
            raise
        raise typed from e
