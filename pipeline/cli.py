"""Command line: `run_pipeline.py run|runs|show`.

Exit codes (stable, for schedulers): 0 success, 2 invalid config or usage,
3 data rejected (corrupt input or validation anomalies), 4 stage failure,
130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import uuid

from pipeline.errors import (EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, EXIT_STAGE, ConfigError,
                             PipelineError)

log = logging.getLogger("pipeline")
STAGE_CHOICES = ("ingest", "validate", "transform", "train", "evaluate", "export")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_pipeline.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the pipeline (cached stages are reused)")
    r.add_argument("--config", help="preset name (configs/<name>.toml) or a TOML file")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    r.add_argument("--root", default="output", help="pipeline root (artifacts, runs, metadata)")
    r.add_argument("--run-id", help="default: UTC timestamp plus a short random suffix")
    r.add_argument("--only", choices=STAGE_CHOICES,
                   help="run just this stage; its inputs must be committed by an earlier run")
    r.add_argument("--force", action="store_true", help="ignore the cache, re-run every stage")
    r.add_argument("--log-level", default="INFO")
    ls = sub.add_parser("runs", help="list runs under the root with their status")
    ls.add_argument("--root", default="output")
    sh = sub.add_parser("show", help="print a run's summary and lineage")
    sh.add_argument("run_id")
    sh.add_argument("--root", default="output")
    return p


def _setup_logging(level: str, log_file: str | None = None) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    logging.getLogger("pipeline").setLevel(level.upper())
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    # absl (TF, Beam) logs through the root logger; keep only its warnings.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: 0 for --help, 2 for usage errors
        return int(e.code or 0)
    if args.command == "run":
        return _run(args)
    if args.command == "runs":
        return _runs(args)
    return _show(args)


def _run(args) -> int:
    from pipeline.config import load_config

    try:
        config = load_config(args.config, args.set)
        run_id = args.run_id or (datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
                                 + "-" + uuid.uuid4().hex[:6])
        if not run_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"--run-id {run_id!r}: use letters, digits, '-', '_', '.'")
        run_dir = os.path.join(args.root, "runs", run_id)
        if os.path.exists(run_dir):
            raise ConfigError(f"--run-id {run_id!r}: a run with this id already exists under "
                              f"{args.root}; run ids are never reused")
    except ConfigError as e:
        _setup_logging(args.log_level)
        log.error("invalid config: %s", e)
        return EXIT_CONFIG
    os.makedirs(run_dir)
    _setup_logging(args.log_level, os.path.join(run_dir, "pipeline.log"))

    from pipeline import runner, summary

    log.info("run %s: config %s, root %s", run_id, args.config or "(defaults)", args.root)
    try:
        result = runner.run(config, args.root, run_id, only=args.only, force=args.force)
    except KeyboardInterrupt:
        summary.fail(run_dir, PipelineError("interrupted"), exit_code=EXIT_INTERRUPTED)
        log.error("run %s interrupted", run_id)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the stage record says what failed
        result = summary.fail(run_dir, e if isinstance(e, PipelineError) else None)
        err = result.get("error") or {"message": f"{type(e).__name__}: {e}"}
        log.error("run %s FAILED (exit %s) in stage %s: %s", run_id, result["exit_code"],
                  err.get("stage", "?"), err["message"])
        log.error("summary: %s", os.path.join(run_dir, "summary.json"))
        return int(result["exit_code"] or EXIT_STAGE)
    _print_summary(result)
    log.info("summary: %s", os.path.join(run_dir, "summary.json"))
    return EXIT_OK


def _print_summary(s: dict) -> None:
    print(f"run {s['run_id']}: {s['status']}")
    for name, st in s["stages"].items():
        keys = ("bce", "bce_excess", "psnr", "neg_elbo", "probe_accuracy", "images_per_second",
                "best_val_loss", "num_examples", "embeddings")
        shown = {k: st["metrics"][k] for k in keys if k in st.get("metrics", {})}
        print(f"  {name:<10} {st['status']:<7} {st['duration_s']:>8.1f}s  "
              + " ".join(f"{k}={v}" for k, v in shown.items()))


def _runs(args) -> int:
    runs_dir = os.path.join(args.root, "runs")
    if not os.path.isdir(runs_dir):
        print(f"no runs under {args.root}")
        return EXIT_OK
    from pipeline import summary

    for run_id in sorted(os.listdir(runs_dir)):
        try:
            s = summary.load(args.root, run_id)
        except (FileNotFoundError, ValueError):
            print(f"{run_id}  (no summary)")
            continue
        stages = " ".join(f"{n}:{st['status']}" for n, st in s["stages"].items())
        print(f"{run_id}  {s['status']:<9} exit={s['exit_code']}  {stages}")
    return EXIT_OK


def _show(args) -> int:
    from pipeline import summary
    from pipeline.metadata import MetadataStore

    try:
        s = summary.load(args.root, args.run_id)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return EXIT_CONFIG
    s.pop("config", None)
    for st in s["stages"].values():
        (st.get("error") or {}).pop("traceback", None)
    store = MetadataStore(os.path.join(args.root, "metadata.sqlite"))
    s["lineage"] = store.run_executions(args.run_id)
    print(json.dumps(s, indent=2, default=str))
    return EXIT_OK
