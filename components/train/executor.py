"""train's executor: the fit (fit.py) in this process under a local strategy or, as the chief
of the multi-worker cluster TF_CONFIG names, in a fresh process (fit_process.py). It writes
the Model and ModelRun artifacts (their layout: model_io.py).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from components.train import distribute, fit
from components.train.fit_process import FitJob, fit_in_child

if TYPE_CHECKING:
    import logging

    from components.train.component import TrainParams
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext


def run(
    params: TrainParams,
    ctx: ExecutionContext,
    *,
    examples: Artifact,
    model: Artifact,
    model_run: Artifact,
) -> dict:
    job = FitJob(params, examples, model, model_run, work_dir=ctx.work_dir)
    cluster = distribute.multi_worker_cluster(params.distribute)  # TF_CONFIG, read once
    if cluster is None:
        return fit.train(job, distribute.local_strategy(params.distribute), ctx.log)
    return _fit_as_chief(job, cluster, ctx.log)


def _fit_as_chief(job: FitJob, cluster: distribute.Cluster, log: logging.Logger) -> dict:
    """The multi-worker fit, this process the chief: in a child process that makes MWMS
    first and writes into this launcher's staging directories."""
    distribute.require_chief(cluster)
    log.info(
        "train: multi-worker fit, %d workers (this process: %s, the chief)",
        cluster.workers,
        cluster.name,
    )
    # Not resumable: every worker would have to resume the same epoch.
    metrics = fit_in_child(dataclasses.replace(job, work_dir=""))
    return {**metrics, "distribute": "multi_worker", "workers": cluster.workers}
