"""Command line: `run_pipeline.py run | start | stage | stages | runs | show | lineage | diff |
gc | recover | config`.

`run` executes a whole run in one process; `start` records a run whose stages are then
executed one process each by `stage STAGE --run-id ID` (a scheduler's task per stage:
deploy/airflow/); `stages` prints the stage graph such a scheduler builds its tasks from.

Exit codes (stable, for schedulers; pipeline/errors.py): 0 success, 2 invalid config or
usage, 3 data rejected (missing, corrupt or anomalous input), 4 a stage failed, 74 the
machine or the root failed (no space, read-only, permission, a damaged metadata store),
75 skipped (--skip-if-running found another live run), 130 interrupted (SIGINT or SIGTERM).

`runs`, `show`, `lineage`, `diff` and `config` only read: they work on a read-only root.
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
from collections.abc import Callable

from pipeline import artifacts, console
from pipeline.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SKIPPED,
    EXIT_STAGE,
    ConfigError,
    EnvironmentFailure,
    PipelineError,
    describe,
)
from pipeline.views import Views

log = logging.getLogger("pipeline")
DEFAULT_ROOT = "output"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_stage_processes(sub)
    _add_config(sub)
    _add_inspection(sub)
    return p


def _add_run(sub) -> None:
    r = sub.add_parser(
        "run",
        help="run the pipeline (stages whose fingerprint matches a committed execution are reused)",
    )
    r.add_argument("--config", help="preset name (configs/<name>.toml) or a TOML file")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=3 (repeatable)",
    )
    r.add_argument("--root", default=DEFAULT_ROOT, help="pipeline root (artifacts, runs, metadata)")
    r.add_argument("--run-id", help="default: UTC timestamp plus a short random suffix")
    r.add_argument(
        "--only",
        metavar="STAGE",
        help="run just this stage; its inputs must be committed by an earlier run",
    )
    r.add_argument(
        "--force",
        action="store_true",
        help="ignore the cache and any resumable state: re-run every stage from scratch",
    )
    r.add_argument(
        "--skip-if-running",
        action="store_true",
        help="exit 75 without running when another run on this root is alive",
    )
    r.add_argument(
        "--force-push",
        action="store_true",
        help="push the model even if the gate did not bless it (push.force=true)",
    )
    _log_level(r)


def _add_stage_processes(sub) -> None:
    """start, stage, stages: a run whose stages are executed by processes of their own."""
    s = sub.add_parser(
        "start",
        help="record a run whose stages are then executed one process each by `stage`",
    )
    s.add_argument("--config", help="preset name (configs/<name>.toml) or a TOML file")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--root", default=DEFAULT_ROOT)
    s.add_argument("--run-id", required=True, help="the run's id (a retried start is a no-op)")
    s.add_argument("--force", action="store_true", help="its stages ignore the cache")
    s.add_argument("--force-push", action="store_true", help="push.force=true")
    _log_level(s)
    s = sub.add_parser(
        "stage",
        help="execute one stage of a run made by `start`, on the outputs its upstream "
        "stages committed in that run",
    )
    s.add_argument("stage", metavar="STAGE")
    s.add_argument("--run-id", required=True)
    s.add_argument("--root", default=DEFAULT_ROOT)
    _log_level(s)
    s = sub.add_parser(
        "stages", help="the stages in order: what each takes inputs from, where it belongs"
    )
    s.add_argument("--json", action="store_true", help="machine-readable output")


def _add_config(sub) -> None:
    c = sub.add_parser("config", help="every config key: value, default, owner, meaning")
    c.add_argument("--config", help="preset name or TOML file to show the values of")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument(
        "--closures",
        action="store_true",
        help="print each stage's code closure (the modules hashed into its "
        "fingerprint) instead of the keys",
    )


def _add_inspection(sub) -> None:
    """The commands that read a root: runs, show, lineage, diff, gc, recover."""
    s = sub.add_parser("runs", help="the runs under the root, newest first")
    s.add_argument("--status", help="only runs with this status (succeeded, failed, ...)")
    s.add_argument("--dataset", help="only runs on this dataset")
    s.add_argument("--variant", help="only runs of this model variant")
    s.add_argument("--blessed", action="store_true", help="only runs whose model was blessed")
    s.add_argument("--limit", type=int, help="at most this many rows")
    s = sub.add_parser("show", help="one run: config, stages, metrics, artifacts, blessing, push")
    s.add_argument("run_id")
    s = sub.add_parser(
        "lineage",
        help="what made an artifact, from what (back to the source "
        "files), and which runs reused it",
    )
    s.add_argument("target", metavar="PATH|ARTIFACT_ID")
    s = sub.add_parser("diff", help="two runs side by side: config and metrics")
    s.add_argument("run_a")
    s.add_argument("run_b")
    s = sub.add_parser("gc", help="delete artifacts of runs outside the retention policy")
    s.add_argument("--keep-last", type=int, metavar="N", help="keep the N newest runs")
    s.add_argument("--keep-days", type=float, metavar="D", help="keep runs of the last D days")
    s.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    sub.add_parser(
        "recover",
        help="check the metadata store; if it is damaged or missing, "
        "restore the newest good backup, then record again every "
        "committed artifact it lacks (from their _artifact.json)",
    )
    for name in ("runs", "show", "lineage", "diff", "gc", "recover"):
        sub.choices[name].add_argument("--root", default=DEFAULT_ROOT)
        sub.choices[name].add_argument(
            "--json", action="store_true", help="machine-readable output"
        )
        _log_level(sub.choices[name])


def _log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"],
        help="console level; debug also shows tracebacks (the run's pipeline.log always has them)",
    )


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
    if args.command in ("start", "stage"):
        from pipeline import stage_cli

        return stage_cli.main(create_pipeline, args, argv)
    if args.command == "stages":
        return _stages(create_pipeline, args.json)
    if args.command == "config":
        return _config(create_pipeline, args)
    try:
        return _inspect(args, create_pipeline)
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        sys.stderr.close()
        return EXIT_OK


def _new_run_id() -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{uuid.uuid4().hex[:6]}"


def plan_run(create_pipeline, args, new_run: bool = True):
    """Everything checkable before anything is created: config, stage, run id, and the
    external data (its identity is part of the ingest fingerprint). `new_run`: refuse a
    run id that exists (`start` decides itself: a retried start is a no-op)."""
    from pipeline import runner

    with console.stderr_to_log():
        components = create_pipeline()
    names = [c.name for c in components]
    only = getattr(args, "only", None)
    if only and only not in names:
        raise ConfigError(f"--only {only!r}: expected one of {', '.join(names)}")
    run_id = args.run_id or _new_run_id()
    check_run_id(run_id)
    root = artifacts.normalize_root(args.root)
    if new_run and os.path.exists(os.path.join(root, "runs", run_id)):
        raise ConfigError(
            f"--run-id {run_id!r}: a run with this id already exists under "
            f"{root}; run ids are never reused"
        )
    overrides = [*args.set, *(["push.force=true"] if args.force_push else [])]
    config = runner.load_config(components, args.config, overrides)
    plan = runner.plan(components, config, root)
    if "://" not in root:  # last: a bad config creates nothing, not even the root
        ensure_writable(root)
    return plan, root, run_id


def check_run_id(run_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", run_id):
        raise ConfigError(f"--run-id {run_id!r}: use letters, digits, '.', '_', '-'")


def _run(create_pipeline, args, argv) -> int:
    signal.signal(signal.SIGTERM, interrupt)
    try:
        plan, root, run_id = plan_run(create_pipeline, args)
    except PipelineError as e:
        log.error("%s (exit %d)", e, e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    run_dir = os.path.join(root, "runs", run_id)
    try:
        os.makedirs(run_dir)
        console.log_to_file(os.path.join(run_dir, "pipeline.log"))
    except OSError as e:
        failure = EnvironmentFailure(f"{run_dir}: cannot create the run's directory ({e.strerror})")
        log.error("%s (exit %d)", failure, failure.exit_code)
        return failure.exit_code

    from pipeline import runner

    log.info(
        "run %s: config %s%s, root %s",
        run_id,
        args.config or "(defaults)",
        "".join(f" --set {s}" for s in args.set),
        root,
    )
    log.debug("code from %s, python %s", console.PROJECT_ROOT, sys.executable)
    try:
        result = runner.run(
            plan,
            root,
            run_id,
            only=args.only,
            force=args.force,
            skip_if_running=args.skip_if_running,
            command=shlex.join(["run_pipeline.py", *argv]),
        )
    except BaseException as e:  # noqa: BLE001 - every failure ends in one line and a code
        log.debug("traceback:\n", exc_info=True)
        return report_failure(root, run_id, e)
    print_stages(result, Views.of(plan.components))
    log.info(
        "summary: %s, report: %s",
        os.path.join(run_dir, "summary.json"),
        os.path.join(run_dir, "report.html"),
    )
    return EXIT_OK


def report_failure(root: str, run_id: str, exc: BaseException) -> int:
    """One line (and any detail lines) saying how the run ended, where to look; its code."""
    run_dir = os.path.join(root, "runs", run_id)
    error = _recorded_error(root, run_id) or describe(exc, where=root)
    where = f" in stage {error['stage']}" if error.get("stage") else ""
    outcome = {"interrupted": "interrupted", "skipped": "skipped"}.get(error["kind"], "FAILED")
    # A skip is expected under a schedule: a warning, so `--log-level error` hides it.
    level = logging.WARNING if error["kind"] == "skipped" else logging.ERROR
    log.log(
        level,
        "run %s %s (exit %d)%s: %s",
        run_id,
        outcome,
        error["exit_code"],
        where,
        error["message"].splitlines()[0],
    )
    if len(error["message"].splitlines()) > 1:
        log.error("%s", "\n".join(error["message"].splitlines()[1:]))
    log.info(
        "summary: %s, report: %s, log: %s",
        os.path.join(run_dir, "summary.json"),
        os.path.join(run_dir, "report.html"),
        os.path.join(run_dir, "pipeline.log"),
    )
    return int(error["exit_code"] or EXIT_STAGE)


def _recorded_error(root: str, run_id: str) -> dict | None:
    """The run's error as ML Metadata recorded it; None where the store cannot say (it is
    the store, or the disk under it, that failed)."""
    from pipeline.metadata import MetadataStore

    try:
        return (MetadataStore(root, readonly=True).get_run(run_id) or {}).get("error")
    except Exception:  # noqa: BLE001 - the caller describes the exception itself
        log.debug("could not read run %s's error back", run_id, exc_info=True)
        return None


def ensure_writable(root: str) -> None:
    """EnvironmentFailure unless files can be created under `root` (a read-only mount, a
    full disk with no room for a file, no permission). Creates the root if needed."""
    probe = os.path.join(root, f".write-probe-{os.getpid()}")
    try:
        os.makedirs(root, exist_ok=True)
        with open(probe, "w") as f:
            f.write("probe")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise EnvironmentFailure(
            f"{root}: the pipeline root is not writable ({e.strerror}); "
            "`runs`, `show`, `lineage` and `diff` still read it"
        ) from None
    finally:
        if os.path.exists(probe):
            os.remove(probe)


def interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# -- inspection --------------------------------------------------------------------------


def _config(create_pipeline, args) -> int:
    """The keys are derived from the components' parameters classes (one default each)."""
    from pipeline import config as cfg
    from pipeline import runner

    with console.stderr_to_log():
        components = create_pipeline()
    if args.closures:
        return _closures(components, args.json)
    classes = runner.param_classes(components)
    try:
        config = runner.load_config(components, args.config, args.set)
        for cls in classes:
            cls.from_config(config)
    except PipelineError as e:
        log.error("%s (exit %d)", e, e.exit_code)
        return e.exit_code
    rows = [
        {
            "key": k.name,
            "value": config[k.name],
            "default": k.default,
            "owner": k.owner,
            "meaning": k.doc,
        }
        for k in cfg.schema(classes).values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2, default=list))
        return EXIT_OK
    for r in rows:
        mark = "*" if r["value"] != r["default"] else " "
        print(
            f"{mark} {r['key']:<32} {json.dumps(r['value'], default=list):<28} "
            f"({r['owner']}) {r['meaning']}"
        )
    return EXIT_OK


def _closures(components, as_json: bool) -> int:
    """What each stage's code fingerprint covers: its executor module and the project
    modules it imports, with the hash of each one's normalized syntax."""
    from pipeline.fingerprint import code_closure

    closures = {c.name: dict(code_closure(c.executor_module)) for c in components}
    if as_json:
        print(json.dumps(closures, indent=2))
        return EXIT_OK
    for stage, modules in closures.items():
        print(f"{stage}: {', '.join(modules)}")
    return EXIT_OK


def _stages(create_pipeline, as_json: bool) -> int:
    """The stage graph from create_pipeline(): what a scheduler makes its tasks of."""
    with console.stderr_to_log():
        components = create_pipeline()
    rows = [
        {"name": c.name, "upstream": list(c.upstream), "kind": c.kind, "description": c.description}
        for c in components
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        after = f" after {', '.join(r['upstream'])}" if r["upstream"] else ""
        print(f"{r['name']:<10} {r['kind']:<12} {r['description']}{after}")
    return EXIT_OK


def print_stages(s: dict, views: Views) -> None:
    from pipeline.inspection import headline, outcome_lines

    print(f"run {s['run_id']}: {s['status']}")
    for name, st in s["stages"].items():
        print(
            f"  {name:<10} {st['status']:<11} {st.get('duration_s') or 0:>8.1f}s  "
            f"{headline(st.get('metrics'), views.view(name).headline)}"
        )
    for line in outcome_lines(s, views):
        print(line)


def _inspect(args, create_pipeline) -> int:
    from pipeline import runner
    from pipeline.metadata import MetadataStore

    root = artifacts.normalize_root(args.root)
    with console.stderr_to_log():
        views = Views.of(create_pipeline())  # what the components declare the views show
    try:
        if args.command in ("gc", "recover"):  # they write: refused on a read-only root
            ensure_writable(root)
        if args.command == "recover":
            return _recover(args, root)
        if not os.path.exists(os.path.join(root, "metadata.sqlite")):
            from pipeline.metadata import check_store

            check_store(root)  # missing beside committed artifacts: a lost store
            if args.command == "runs":
                print("[]" if args.json else f"no runs under {root}")
                return EXIT_OK
            log.error("no pipeline root at %s (no metadata.sqlite) (exit %d)", root, EXIT_CONFIG)
            return EXIT_CONFIG
        if args.command == "gc":
            return _gc(args, root, views)
        if os.access(root, os.W_OK):  # a read-only root is shown as it was recorded
            runner.sweep_abandoned(MetadataStore(root), views)
        store = MetadataStore(root, readonly=True)
        return _read(args, root, store, views)
    except EnvironmentFailure as e:
        log.error("%s (exit %d)", e, e.exit_code)
        return e.exit_code


def _read(args, root: str, store, views: Views) -> int:
    """runs, show, lineage, diff: views of the store, opened read-only."""
    from pipeline import inspection, summary

    def view(run_id: str) -> dict | None:
        if not store.run_exists(run_id):
            log.error(
                "no run %r under %s (see `runs --root %s`) (exit %d)",
                run_id,
                root,
                args.root,
                EXIT_CONFIG,
            )
            return None
        return summary.render(store, run_id, views)

    def emit(data, text: str) -> int:
        print(json.dumps(data, indent=2, default=str) if args.json else text)
        return EXIT_OK

    if args.command == "show":
        v = view(args.run_id)
        return EXIT_CONFIG if v is None else emit(v, inspection.show_text(v, root, views))
    if args.command == "diff":
        a, b = view(args.run_a), view(args.run_b)
        if a is None or b is None:
            return EXIT_CONFIG
        d = inspection.diff(a, b, views)
        return emit(d, inspection.diff_text(d))
    if args.command == "lineage":
        found = inspection.find_artifact(store, args.target)
        if found is None:
            log.error(
                "lineage: %s is not an artifact id or a path inside an artifact of %s (exit %d)",
                args.target,
                root,
                EXIT_CONFIG,
            )
            return EXIT_CONFIG
        node = inspection.lineage(store, *found)
        return emit(node, inspection.lineage_text(node))
    rendered = sorted(
        (summary.render(store, r["run_id"], views) for r in store.list_runs()),
        key=lambda v: v["started"] or "",
        reverse=True,
    )
    rows = inspection.filter_rows(
        [inspection.run_row(v, views) for v in rendered],
        args.status,
        args.dataset,
        args.variant,
        limit=args.limit,
        blessed=args.blessed or None,
    )
    return emit(rows, inspection.runs_text(rows, views))


def _recover(args, root: str) -> int:
    from pipeline import recovery

    result = recovery.recover(root)
    print(json.dumps(result, indent=2, default=str) if args.json else recovery.render_text(result))
    return EXIT_OK


def _gc(args, root: str, views: Views) -> int:
    from pipeline import gc

    try:
        result = gc.collect(root, args.keep_last, args.keep_days, args.dry_run, views=views)
    except PipelineError as e:  # refusing beside a live run is expected: a warning, as a skip
        log.log(
            logging.WARNING if e.exit_code == EXIT_SKIPPED else logging.ERROR,
            "%s (exit %d)",
            e,
            e.exit_code,
        )
        return e.exit_code
    print(json.dumps(result, indent=2, default=str) if args.json else gc.render_text(result))
    return EXIT_OK
