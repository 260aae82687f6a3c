"""The `start` and `stage` commands: a run recorded by one process, its stages executed by
others (pipeline/stage_process.py). Same exit codes, one-line errors and run log as `run`;
a stage process appends to the run's pipeline.log.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal

from pipeline import artifacts, console
from pipeline.cli import (
    check_run_id,
    ensure_writable,
    interrupt,
    plan_run,
    print_stages,
)
from pipeline.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    EnvironmentFailure,
    PipelineError,
    describe,
)
from pipeline.metadata import DB_FILE
from pipeline.views import Views

log = logging.getLogger("pipeline")
# How a failed stage command is reported; a refusal (exit 2) ran nothing.
_OUTCOME = {"interrupted": "interrupted", "skipped": "skipped", "invalid_config": "refused"}


def main(create_pipeline, args, argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, interrupt)
    try:
        if args.command == "start":
            return _start(create_pipeline, args, argv)
        return _stage(create_pipeline, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _start(create_pipeline, args, argv: list[str]) -> int:
    from pipeline import stage_process

    try:
        plan, root, run_id = plan_run(create_pipeline, args, new_run=False)
        _log_to_run(root, run_id, create=True)
        result = stage_process.start(
            plan,
            root,
            run_id,
            force=args.force,
            command=shlex.join(["run_pipeline.py", *argv]),
        )
    except PipelineError as e:
        log.error("%s (exit %d)", e, e.exit_code)
        return e.exit_code
    print_stages(result, Views.of(plan.components))
    if all(st["status"] == "pending" for st in result["stages"].values()):
        first = plan.components[0].name
        log.info("next: run_pipeline.py stage %s --run-id %s --root %s", first, run_id, root)
    return EXIT_OK


def _stage(create_pipeline, args) -> int:
    from pipeline import stage_process

    with console.stderr_to_log():
        components = create_pipeline()
    views = Views.of(components)
    root, run_id, stage = artifacts.normalize_root(args.root), args.run_id, args.stage
    try:
        names = [c.name for c in components]
        if stage not in names:
            raise ConfigError(f"stage {stage!r}: expected one of {', '.join(names)}")
        check_run_id(run_id)
        if "://" not in root:
            if not os.path.exists(os.path.join(root, DB_FILE)):
                raise ConfigError(f"no run {run_id!r} under {root} (no {DB_FILE})")
            ensure_writable(root)
        _log_to_run(root, run_id, create=False)
    except PipelineError as e:
        log.error("%s (exit %d)", e, e.exit_code)
        return e.exit_code
    log.info("run %s: stage %s, root %s", run_id, stage, root)
    try:
        result = stage_process.run_stage(components, root, run_id, stage)
    except BaseException as e:  # noqa: BLE001 - every failure ends in one line and a code
        log.debug("traceback:\n", exc_info=True)
        error = describe(e, where=root)
        outcome = _OUTCOME.get(error["kind"], "FAILED")
        log.log(
            logging.WARNING if error["kind"] == "skipped" else logging.ERROR,
            "run %s, stage %s %s (exit %d): %s",
            run_id,
            stage,
            outcome,
            error["exit_code"],
            error["message"].splitlines()[0],
        )
        return int(error["exit_code"])
    print_stages(result, views)
    if result["status"] != "running":
        log.info(
            "summary: %s, report: %s",
            os.path.join(root, "runs", run_id, "summary.json"),
            os.path.join(root, "runs", run_id, "report.html"),
        )
    return EXIT_OK


def _log_to_run(root: str, run_id: str, create: bool) -> None:
    """The run's pipeline.log (appended to by each of its stage processes)."""
    run_dir = os.path.join(root, "runs", run_id)
    try:
        if create:
            os.makedirs(run_dir, exist_ok=True)
        elif not os.path.isdir(run_dir):
            raise ConfigError(f"no run {run_id!r} under {root} (see `runs --root {root}`)")
        console.log_to_file(os.path.join(run_dir, "pipeline.log"))
    except OSError as e:
        raise EnvironmentFailure(f"{run_dir}: cannot write the run's log ({e.strerror})") from None
