"""Command line: `run_pipeline.py run | runs | show`.

Exit codes (stable, for schedulers; pipeline/errors.py): 0 success, 2 invalid config or
usage, 3 data rejected (missing, corrupt or anomalous input), 4 a stage failed, 75 skipped
(--skip-if-running found another live run), 130 interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import shlex
import signal
import sys
import uuid
from typing import Callable

from pipeline import console
from pipeline.errors import (EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, EXIT_STAGE, ConfigError,
                             PipelineError)

log = logging.getLogger("pipeline")
DEFAULT_ROOT = "output"


def _parser(stage_names: list[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_pipeline.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the pipeline (stages whose fingerprint matches a "
                                   "committed execution are reused)")
    r.add_argument("--config", help="preset name (configs/<name>.toml) or a TOML file")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    r.add_argument("--root", default=DEFAULT_ROOT, help="pipeline root (artifacts, runs, metadata)")
    r.add_argument("--run-id", help="default: UTC timestamp plus a short random suffix")
    r.add_argument("--only", metavar="STAGE",
                   help="run just this stage; its inputs must be committed by an earlier run")
    r.add_argument("--force", action="store_true",
                   help="ignore the cache and any resumable state: re-run every stage from scratch")
    r.add_argument("--skip-if-running", action="store_true",
                   help="exit 75 without running when another run on this root is alive")
    r.add_argument("--force-push", action="store_true",
                   help="push the model even if the gate did not bless it (push.force=true)")
    r.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR",
                                                           "debug", "info", "warning", "error"],
                   help="console level; debug also shows tracebacks (pipeline.log always has them)")
    c = sub.add_parser("config", help="every config key: value, default, owner, meaning")
    c.add_argument("--config", help="preset name or TOML file to show the values of")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    for name, help_ in (("runs", "list the runs under the root, newest first"),
                        ("show", "one run: status, stages, metrics, artifacts, errors")):
        s = sub.add_parser(name, help=help_)
        if name == "show":
            s.add_argument("run_id")
        s.add_argument("--root", default=DEFAULT_ROOT)
        s.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def main(create_pipeline: Callable[[], list], argv: list[str] | None = None) -> int:
    """create_pipeline: returns the components in order (run_pipeline.py defines it)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: 0 for --help, 2 for usage errors
        return int(e.code or 0)
    console.quiet_third_party(getattr(args, "log_level", "INFO"))
    if args.command == "run":
        return _run(create_pipeline, args, argv)
    if args.command == "config":
        return _config(create_pipeline, args)
    return _inspect(args)


def _new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{uuid.uuid4().hex[:6]}"


def _plan(create_pipeline, args):
    """Everything checkable before anything is created: config, stage, run id, and the
    external data (its identity is part of the ingest fingerprint)."""
    from pipeline import runner

    with console.stderr_to_log():
        components = create_pipeline()
    names = [c.name for c in components]
    if args.only and args.only not in names:
        raise ConfigError(f"--only {args.only!r}: expected one of {', '.join(names)}")
    run_id = args.run_id or _new_run_id()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", run_id):
        raise ConfigError(f"--run-id {run_id!r}: use letters, digits, '.', '_', '-'")
    root = os.path.abspath(args.root) if "://" not in args.root else args.root
    if os.path.exists(os.path.join(root, "runs", run_id)):
        raise ConfigError(f"--run-id {run_id!r}: a run with this id already exists under "
                          f"{root}; run ids are never reused")
    overrides = [*args.set, *(["push.force=true"] if args.force_push else [])]
    config = runner.load_config(components, args.config, overrides)
    return runner.plan(components, config, root), root, run_id


def _run(create_pipeline, args, argv) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        plan, root, run_id = _plan(create_pipeline, args)
    except PipelineError as e:
        log.error("%s (exit %d)", e, e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    run_dir = os.path.join(root, "runs", run_id)
    os.makedirs(run_dir)
    console.log_to_file(os.path.join(run_dir, "pipeline.log"))

    from pipeline import runner

    log.info("run %s: config %s%s, root %s", run_id, args.config or "(defaults)",
             "".join(f" --set {s}" for s in args.set), root)
    log.debug("code from %s, python %s", console.PROJECT_ROOT, sys.executable)
    try:
        result = runner.run(plan, root, run_id, only=args.only, force=args.force,
                            skip_if_running=args.skip_if_running,
                            command=shlex.join(["run_pipeline.py", *argv]))
    except BaseException as e:  # noqa: BLE001 - every failure ends in one line and a code
        from pipeline.metadata import MetadataStore

        log.debug("traceback:\n", exc_info=True)
        error = (MetadataStore(root).get_run(run_id) or {}).get("error")
        if error is None:
            from pipeline.launcher import describe

            error = describe(e)
        where = f" in stage {error['stage']}" if error.get("stage") else ""
        outcome = {"interrupted": "interrupted", "skipped": "skipped"}.get(error["kind"], "FAILED")
        log.error("run %s %s (exit %d)%s: %s", run_id, outcome, error["exit_code"], where,
                  error["message"].splitlines()[0])
        if len(error["message"].splitlines()) > 1:
            log.error("%s", "\n".join(error["message"].splitlines()[1:]))
        log.info("summary: %s, log: %s", os.path.join(run_dir, "summary.json"),
                 os.path.join(run_dir, "pipeline.log"))
        return int(error["exit_code"] or EXIT_STAGE)
    _print_stages(result)
    log.info("summary: %s", os.path.join(run_dir, "summary.json"))
    return EXIT_OK


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# -- inspection --------------------------------------------------------------------------

def _config(create_pipeline, args) -> int:
    """The keys are derived from the components' parameters classes (one default each)."""
    from pipeline import config as cfg
    from pipeline import runner

    with console.stderr_to_log():
        components = create_pipeline()
    classes = runner.param_classes(components)
    try:
        config = runner.load_config(components, args.config, args.set)
        for cls in classes:
            cls.from_config(config)
    except PipelineError as e:
        log.error("%s (exit %d)", e, e.exit_code)
        return e.exit_code
    rows = [{"key": k.name, "value": config[k.name], "default": k.default, "owner": k.owner,
             "meaning": k.doc} for k in cfg.schema(classes).values()]
    if args.json:
        print(json.dumps(rows, indent=2, default=list))
        return EXIT_OK
    for r in rows:
        mark = "*" if r["value"] != r["default"] else " "
        print(f"{mark} {r['key']:<32} {json.dumps(r['value'], default=list):<28} "
              f"({r['owner']}) {r['meaning']}")
    return EXIT_OK


HEADLINE = ("bce", "bce_excess", "neg_elbo", "psnr", "probe_accuracy", "best_val_loss",
            "images_per_second", "num_examples", "embeddings")


def _headline(metrics: dict) -> str:
    return " ".join(f"{k}={metrics[k]}" for k in HEADLINE if k in (metrics or {}))


def _print_stages(s: dict) -> None:
    print(f"run {s['run_id']}: {s['status']}")
    for name, st in s["stages"].items():
        print(f"  {name:<10} {st['status']:<11} {st.get('duration_s') or 0:>8.1f}s  "
              f"{_headline(st.get('metrics'))}")


def _inspect(args) -> int:
    from pipeline import runner, summary
    from pipeline.metadata import MetadataStore

    root = os.path.abspath(args.root) if "://" not in args.root else args.root
    if not os.path.exists(os.path.join(root, "metadata.sqlite")):
        print(f"no runs under {root}", file=sys.stderr)
        return EXIT_CONFIG if args.command == "show" else EXIT_OK
    store = MetadataStore(root)
    runner.sweep_abandoned(store)
    if args.command == "show":
        if not store.run_exists(args.run_id):
            print(f"no run {args.run_id!r} under {root}", file=sys.stderr)
            return EXIT_CONFIG
        view = summary.render(store, args.run_id)
        print(json.dumps(view, indent=2, default=str) if args.json else _show_text(view))
        return EXIT_OK
    views = sorted((summary.render(store, r["run_id"]) for r in store.list_runs()),
                   key=lambda v: v["started"] or "", reverse=True)
    if args.json:
        print(json.dumps([{k: v[k] for k in ("run_id", "status", "exit_code", "started",
                                              "finished", "duration_s", "error")}
                          | {"stages": {n: st["status"] for n, st in v["stages"].items()}}
                          for v in views], indent=2, default=str))
        return EXIT_OK
    print(f"{'run id':<26} {'status':<11} {'exit':>4}  {'started':<25} {'took':>7}  stages")
    for v in views:
        took = f"{v['duration_s']:.0f}s" if v["duration_s"] is not None else "-"
        stages = " ".join(f"{n}:{st['status']}" for n, st in v["stages"].items())
        exit_code = "-" if v["exit_code"] is None else v["exit_code"]
        print(f"{v['run_id']:<26} {v['status']:<11} {exit_code:>4}  {v['started'] or '-':<25} "
              f"{took:>7}  {stages}")
    return EXIT_OK


def _show_text(v: dict) -> str:
    lines = [f"run {v['run_id']}: {v['status']} (exit {v['exit_code']})",
             f"  started {v['started']}, finished {v['finished'] or '-'}, "
             f"owner pid {v['owner']['pid']} on {v['owner']['host']}, "
             f"last heartbeat {v['owner']['heartbeat']}",
             f"  command: {v.get('command') or '-'}",
             f"  config: preset {v.get('preset') or '(defaults)'}; changed from the defaults: "
             + (", ".join(f"{k}={val}" for k, val in v["config_changed"].items()) or "nothing")]
    if v.get("error"):
        lines.append(f"  error: [{v['error'].get('kind')}] {v['error'].get('message')}")
    for name, st in v["stages"].items():
        cached = (f" from run {st['cached_from']['run_id']}" if st.get("cached_from") else "")
        lines.append(f"  {name:<10} {st['status']}{cached} in {st.get('duration_s') or 0:.1f}s")
        if st.get("metrics"):
            lines.append(f"      metrics: {_headline(st['metrics']) or json.dumps(st['metrics'])}")
        for k, uri in (st.get("artifacts") or {}).items():
            lines.append(f"      {k}: {uri}")
        if st.get("error"):
            lines.append(f"      error: {st['error']['message']}")
    return "\n".join(lines)
