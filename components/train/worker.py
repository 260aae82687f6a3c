"""`run_pipeline.py train-worker`: a non-chief worker of a multi-worker fit.

It joins the train stage of the chief's run --run-id (same --config/--set, its own
TF_CONFIG) and commits nothing: ML Metadata is only read, the fit runs as the chief's does
(components/train/distribute.py) but writes into a scratch directory that is deleted.
Kept apart from distribute.py so the train stage's code fingerprint does not cover the
command line and the runner.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

from components.train.distribute import TF_CONFIG, multi_worker_cluster, run_fit_process
from pipeline.errors import ConfigError, PipelineError, StageError


def train_worker(create_pipeline, argv: list[str]) -> int:
    """A non-chief worker: join the chief's fit of run --run-id; commit nothing."""
    import argparse

    from pipeline import console, runner
    from pipeline.errors import EXIT_INTERRUPTED, EXIT_OK

    p = argparse.ArgumentParser(
        prog="run_pipeline.py train-worker",
        description="Take part, as a non-chief worker named by TF_CONFIG, in the "
                    "multi-worker fit of the chief's run --run-id (same --config/--set as "
                    "the chief). Writes nothing under --root: ML Metadata is only read, the "
                    "fit writes into a scratch directory that is deleted.")
    p.add_argument("--root", required=True, help="the chief's pipeline root (shared storage)")
    p.add_argument("--run-id", required=True, help="the chief's run id (give it to both)")
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--wait-s", type=float, default=3600.0,
                   help="how long to wait for the chief's train stage to start")
    p.add_argument("--log-level", default="INFO")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    console.quiet_third_party(args.log_level)
    log = logging.getLogger("pipeline.train")
    try:
        with console.stderr_to_log():
            components = {c.name: c for c in create_pipeline()}
        config = runner.load_config(list(components.values()), args.config, args.set)
        params = components["train"].params.from_config(config)
        found = multi_worker_cluster(params.distribute)
        if found is None:
            raise ConfigError(f"train-worker: train.distribute={params.distribute} with "
                              f"{TF_CONFIG} {os.environ.get(TF_CONFIG, 'unset')!r} is not a "
                              "multi-worker fit; expected a TF_CONFIG of at least two workers")
        if found.is_chief:
            raise ConfigError(f"train-worker: {TF_CONFIG} names this process the chief "
                              f"({found.name}); run `run_pipeline.py run` on the chief")
        root = os.path.abspath(args.root) if "://" not in args.root else args.root
        examples = _wait_for_chief(root, args.run_id, params, args.wait_s, log)
        if examples is None:
            return EXIT_OK
        log.info("train: joining run %s's multi-worker fit as %s of %d workers", args.run_id,
                 found.name, found.workers)
        scratch = tempfile.mkdtemp(prefix="train-worker-")
        try:
            from pipeline.artifacts import MODEL, MODEL_RUN, Artifact

            outputs = {k: Artifact(t, os.path.join(scratch, k))
                       for k, t in (("model", MODEL), ("model_run", MODEL_RUN))}
            for a in outputs.values():
                os.makedirs(a.uri)
            metrics = run_fit_process(params, examples, outputs["model"], outputs["model_run"],
                                 args.run_id, log)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("train: %s done, final loss %s (nothing committed; the chief commits)",
                 found.name, metrics.get("final_loss"))
        return EXIT_OK
    except PipelineError as e:
        log.error("%s (exit %d)", e, e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _wait_for_chief(root: str, run_id: str, params, wait_s: float, log):
    """The Examples artifact of the chief's running train execution of `run_id`; None when
    the chief's run has no fit to join (train came from the cache). Read only."""
    from pipeline.metadata import DB_FILE, MetadataStore

    deadline = time.monotonic() + wait_s
    log.info("train: waiting for run %s's train stage under %s", run_id, root)
    store = None
    while time.monotonic() < deadline:
        if store is None and os.path.exists(os.path.join(root, DB_FILE)):
            store = MetadataStore(root)
        run = store.get_run(run_id) if store else None
        trains = [e for e in store.run_executions(run_id) if e["stage"] == "train"] if run else []
        if trains:
            train = trains[-1]
            if train["state"] == "cached":
                log.info("train: run %s reused a cached model: no fit to join", run_id)
                return None
            if train["state"] == "running":
                chief_params = train.get("params")
                mine = json.loads(json.dumps(params.cache_key(), sort_keys=True, default=str))
                if chief_params != mine:
                    differ = sorted(k for k in mine if (chief_params or {}).get(k) != mine[k])
                    raise ConfigError(f"train-worker: the chief's train parameters differ from "
                                      f"this worker's in {differ}; give both the same "
                                      "--config and --set")
                return train["inputs"]["examples"]
            raise StageError(f"run {run_id}'s train stage is {train['state']}: no fit to join")
        if run and run.get("status") not in (None, "running"):
            raise StageError(f"run {run_id} ended ({run.get('status')}) without a train stage "
                             "to join")
        time.sleep(0.5)
    raise StageError(f"run {run_id}'s train stage did not start under {root} within "
                     f"{wait_s:.0f}s (--wait-s)")
