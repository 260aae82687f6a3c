"""`run_pipeline.py train-worker`: a non-chief worker of a multi-worker fit.

It joins the train stage of the chief's run --run-id (same --config/--set, its own
TF_CONFIG) and commits nothing: ML Metadata is only read, the fit runs in a fresh process as
the chief's does (fit_process.py) but writes into a scratch directory that is deleted.
A command, not stage code: the train executor never imports it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time

from components.train import distribute
from components.train.fit_process import FitJob, fit_in_child
from pipeline import artifacts, console, runner
from pipeline.artifacts import MODEL, MODEL_RUN, Artifact
from pipeline.errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError, PipelineError, StageError
from pipeline.metadata import DB_FILE, MetadataStore

log = logging.getLogger("pipeline.train")


def train_worker(create_pipeline, argv: list[str]) -> int:
    """A non-chief worker: join the chief's fit of run --run-id; commit nothing."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    console.quiet_third_party(args.log_level)
    try:
        params = _params(create_pipeline, args)
        cluster = _worker_cluster(params.distribute)  # TF_CONFIG, read once
        examples = _wait_for_chief(
            artifacts.normalize_root(args.root), args.run_id, params, args.wait_s
        )
        if examples is None:
            return EXIT_OK
        log.info(
            "train: joining run %s's multi-worker fit as %s of %d workers",
            args.run_id,
            cluster.name,
            cluster.workers,
        )
        metrics = _fit_in_scratch(params, examples)
        log.info(
            "train: %s done, final loss %s (nothing committed; the chief commits)",
            cluster.name,
            metrics.get("final_loss"),
        )
        return EXIT_OK
    except PipelineError as e:
        log.error("%s (exit %d)", e, e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_pipeline.py train-worker",
        description="Take part, as a non-chief worker named by TF_CONFIG, in the "
        "multi-worker fit of the chief's run --run-id (same --config/--set as "
        "the chief). Writes nothing under --root: ML Metadata is only read, the "
        "fit writes into a scratch directory that is deleted.",
    )
    p.add_argument("--root", required=True, help="the chief's pipeline root (shared storage)")
    p.add_argument("--run-id", required=True, help="the chief's run id (give it to both)")
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--wait-s",
        type=float,
        default=3600.0,
        help="how long to wait for the chief's train stage to start",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def _params(create_pipeline, args: argparse.Namespace):
    """The train parameters of --config/--set, as the chief's run loads them."""
    with console.stderr_to_log():
        components = {c.name: c for c in create_pipeline()}
    config = runner.load_config(list(components.values()), args.config, args.set)
    return components["train"].params.from_config(config)


def _worker_cluster(mode: str) -> distribute.Cluster:
    """The cluster, this process one of its non-chief workers (else a ConfigError)."""
    found = distribute.multi_worker_cluster(mode)
    if found is None:
        raise ConfigError(
            f"train-worker: train.distribute={mode} with {distribute.TF_CONFIG} "
            f"{os.environ.get(distribute.TF_CONFIG, 'unset')!r} is not a "
            "multi-worker fit; expected a TF_CONFIG of at least two workers"
        )
    if found.is_chief:
        raise ConfigError(
            f"train-worker: {distribute.TF_CONFIG} names this process the chief "
            f"({found.name}); run `run_pipeline.py run` on the chief"
        )
    return found


def _fit_in_scratch(params, examples: Artifact) -> dict:
    """This worker's part of the fit, its outputs in a scratch directory then deleted."""
    scratch = tempfile.mkdtemp(prefix="train-worker-")
    try:
        model, model_run = (
            Artifact(t, os.path.join(scratch, k))
            for k, t in (("model", MODEL), ("model_run", MODEL_RUN))
        )
        for a in (model, model_run):
            os.makedirs(a.uri)
        return fit_in_child(FitJob(params, examples, model, model_run))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_for_chief(root: str, run_id: str, params, wait_s: float) -> Artifact | None:
    """The Examples artifact of the chief's running train execution of `run_id`; None when
    the chief's run has no fit to join (train came from the cache). Read only."""
    deadline = time.monotonic() + wait_s
    log.info("train: waiting for run %s's train stage under %s", run_id, root)
    store = None
    while time.monotonic() < deadline:
        if store is None and os.path.exists(os.path.join(root, DB_FILE)):
            store = MetadataStore(root)
        run = store.get_run(run_id) if store else None
        trains = (
            [e for e in store.run_executions(run_id) if e["stage"] == "train"]
            if store and run
            else []
        )
        if trains:
            return _joinable(trains[-1], run_id, params)
        if run and run.get("status") not in (None, "running"):
            raise StageError(
                f"run {run_id} ended ({run.get('status')}) without a train stage to join"
            )
        time.sleep(0.5)
    raise StageError(
        f"run {run_id}'s train stage did not start under {root} within {wait_s:.0f}s (--wait-s)"
    )


def _joinable(train: dict, run_id: str, params) -> Artifact | None:
    """The Examples of the chief's train execution `train` when it is running with this
    worker's parameters; None when it came from the cache."""
    if train["state"] == "cached":
        log.info("train: run %s reused a cached model: no fit to join", run_id)
        return None
    if train["state"] != "running":
        raise StageError(f"run {run_id}'s train stage is {train['state']}: no fit to join")
    chief_params = train.get("params")
    mine = json.loads(json.dumps(params.cache_key(), sort_keys=True, default=str))
    if chief_params != mine:
        differ = sorted(k for k in mine if (chief_params or {}).get(k) != mine[k])
        raise ConfigError(
            f"train-worker: the chief's train parameters differ from this "
            f"worker's in {differ}; give both the same --config and --set"
        )
    return train["inputs"]["examples"]
