"""Helpers shared by the bench scripts (not a benchmark itself).

Every measurement of our pipeline goes through its command line, and so through the one
launcher (driver, executor, publisher) that a user's run goes through:

    run_pipeline.py run --root R --run-id ID [--config P] [--set k=v ...] [--only S] [--force]

either in this process (`run_pipeline(...)`: `run_pipeline.main(argv)`, so untimed imports
are already warm) or as a subprocess (`subprocess=True`: interpreter start and imports
included, as a user would see them). The figures are read back from
<root>/runs/<id>/summary.json, which the launcher renders from ML Metadata: a stage's
`duration_s` and `metrics`.

Parameters come from the pipeline's real config only: `load_config` / `plan` build it
from the same preset and `--set` overrides that the command line is given
(defaults < preset < overrides), and `check_fingerprint` asserts that the run used
exactly the parameters the script planned (same stage fingerprint).

The scripts are run as `.venv/bin/python bench/<name>.py` from anywhere: this module puts
the project root on sys.path so `pipeline`, `components`, `models` and `run_pipeline` import.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import pathlib
import shlex
import statistics
import subprocess as subprocess_
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

RUN_PIPELINE = PROJECT_ROOT / "run_pipeline.py"
NON_TRAINING_STAGES = ("ingest", "validate", "transform", "novelty", "evaluate", "export")
ALL_STAGES = ("ingest", "validate", "transform", "train", "novelty", "evaluate", "export")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def quiet(log_level: str = "WARNING") -> None:
    """Call first, before any heavy import: what the command line does first
    (pipeline.console): TF/absl/Beam chatter off the console, the pipeline's own log
    lines at `log_level` and above on stderr; everything else goes to the run's
    pipeline.log. Without this, the first third-party `logging.info` before the first run
    would install Python's default stderr handler and print everything."""
    from pipeline import console

    console.quiet_third_party(log_level)


def best_median(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def cpu_seconds() -> float:
    """User + system CPU of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def du(path: str | os.PathLike) -> int:
    """Bytes in the files under `path`."""
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


# -- config ------------------------------------------------------------------------------


def toml_array(args: list[str]) -> str:
    """A list of strings as a TOML array (JSON's string syntax is valid TOML for these)."""
    return json.dumps(list(args))


def beam_override(beam_args: str) -> str:
    """`--beam-args "--a=1 --b=2"` as the config override beam.args=["--a=1","--b=2"]."""
    return "beam.args=" + toml_array(shlex.split(beam_args))


def components() -> list:
    """The pipeline's components in order, as run_pipeline.py defines them."""
    from pipeline import console

    with console.stderr_to_log():  # import-time notices, as the command line does
        from run_pipeline import create_pipeline

        return create_pipeline()


def load_config(preset: str | None = None, overrides: Iterable[str] = ()):
    """The pipeline's real config: defaults < preset < overrides ("section.key=value")."""
    from pipeline import runner

    return runner.load_config(components(), preset, list(overrides))


def plan(preset: str | None = None, overrides: Iterable[str] = ()):
    """Every stage's parameters and fingerprint for this config, exactly as `run` plans
    them (all config checks run here; a bad --set exits with the pipeline's message)."""
    from pipeline import runner
    from pipeline.errors import PipelineError

    try:
        return runner.plan(components(), load_config(preset, overrides))
    except PipelineError as e:
        sys.exit(f"config: {e}")


# -- running the pipeline ------------------------------------------------------------------


def new_run_id(prefix: str) -> str:
    """Unique per root (run ids are never reused)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:4]}"


def cli_argv(
    root: str,
    run_id: str,
    preset: str | None = None,
    overrides: Iterable[str] = (),
    only: str | None = None,
    force: bool = False,
    log_level: str | None = None,
) -> list[str]:
    """`run_pipeline.py run ...` arguments (without the program name)."""
    argv = ["run", "--root", str(root), "--run-id", run_id]
    if preset:
        argv += ["--config", preset]
    for item in overrides:
        argv += ["--set", item]
    if only:
        argv += ["--only", only]
    if force:
        argv.append("--force")
    if log_level:
        argv += ["--log-level", log_level]
    return argv


@dataclass
class RunResult:
    argv: list[str]  # run_pipeline.py's arguments
    rc: int
    wall_s: float  # the whole command, planning and metadata included
    cpu_s: float  # CPU of the whole command (this process + waited-for children)
    summary: dict | None  # <root>/runs/<id>/summary.json, None when the run never started
    output: str = ""  # what the command printed to stdout (its stage table)

    @property
    def command(self) -> str:
        return shlex.join(["run_pipeline.py", *self.argv])

    def stage(self, name: str) -> dict:
        return ((self.summary or {}).get("stages") or {}).get(name) or {}


def run_pipeline(
    root: str,
    run_id: str,
    *,
    preset: str | None = None,
    overrides: Iterable[str] = (),
    only: str | None = None,
    force: bool = False,
    log_level: str | None = None,
    subprocess: bool = False,
    log_path: str | None = None,
) -> RunResult:
    """Run the pipeline's command line on `root` and read the run's summary back.

    In-process (default): `run_pipeline.main(argv)`; its stage table is captured
    (RunResult.output), its log lines at `log_level` and above reach stderr, and all of
    them are in <root>/runs/<id>/pipeline.log. subprocess=True: `python run_pipeline.py
    run ...`, its stdout and stderr to `log_path` (default: the terminal)."""
    argv = cli_argv(root, run_id, preset, overrides, only, force, log_level)
    output = ""
    c0, t0 = cpu_seconds(), time.perf_counter()
    if subprocess:
        log = open(log_path, "w") if log_path else None
        try:
            rc = subprocess_.call(
                [sys.executable, str(RUN_PIPELINE), *argv], cwd=PROJECT_ROOT, stdout=log, stderr=log
            )
        finally:
            if log:
                log.close()
    else:
        import run_pipeline as cli

        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            rc = cli.main(argv)
        output = captured.getvalue()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    try:
        summary = read_summary(root, run_id)
    except FileNotFoundError:
        summary = None
    return RunResult(argv, rc, wall, cpu, summary, output)


def read_summary(root: str | os.PathLike, run_id: str) -> dict:
    path = pathlib.Path(root) / "runs" / run_id / "summary.json"
    with open(path) as f:
        return json.load(f)


def require_ran(result: RunResult, stage: str, plan_=None) -> dict:
    """The stage's summary entry; exits with the run's error unless the stage ran (was
    computed, not reused) and, given the plan, with the planned fingerprint."""
    st = result.stage(stage)
    if result.rc != 0 or st.get("status") != "ran":
        error = (result.summary or {}).get("error") or st.get("error") or {}
        sys.exit(
            f"{result.command}: exit {result.rc}, stage {stage} "
            f"{st.get('status', 'not run')}: {error.get('message', result.output.strip())}"
        )
    if plan_ is not None:
        check_fingerprint(st, stage, plan_)
    return st


def check_fingerprint(st: dict, stage: str, plan_) -> None:
    """The run used exactly the parameters this script planned (and shows or compares)."""
    if st.get("fingerprint") != plan_.fingerprints[stage]:
        sys.exit(
            f"stage {stage}: the run's fingerprint {st.get('fingerprint')} is not the "
            f"planned {plan_.fingerprints[stage]} (config differs from the script's)"
        )


def cached_outputs(root: str, stage: str, fingerprint: str) -> dict | None:
    """The committed outputs of the newest complete execution of `stage` with this
    fingerprint under `root` (what the launcher's cache would reuse), or None."""
    if not os.path.exists(os.path.join(root, "metadata.sqlite")):
        return None
    from pipeline import artifacts
    from pipeline.metadata import MetadataStore

    hit = MetadataStore(root).find_cached(
        stage, fingerprint, lambda a: artifacts.is_committed(a.uri)
    )
    return hit[1] if hit else None


def ensure_upstream(
    root: str,
    plan_,
    stage: str,
    *,
    preset: str | None,
    overrides: Iterable[str],
    prefix: str,
    log_level: str | None = None,
) -> dict[str, dict]:
    """Make every stage before `stage` committed for this config under `root`, so that
    `--only stage` can run: each one the cache does not already hold is run with
    `--only <it>` (its own upstream then comes from the cache). Returns {stage: outputs}."""
    names = [c.name for c in plan_.components]
    found = {}
    for name in names[: names.index(stage)]:
        outputs = cached_outputs(root, name, plan_.fingerprints[name])
        if outputs is None:
            result = run_pipeline(
                root,
                new_run_id(f"{prefix}-{name}"),
                preset=preset,
                overrides=overrides,
                only=name,
                log_level=log_level,
            )
            st = require_ran(result, name, plan_)
            print(
                f"  upstream {name:<9} ran in {st['duration_s']:6.1f}s  (run_pipeline.py run "
                f"--only {name}, run {result.summary['run_id']})",
                flush=True,
            )
            outputs = cached_outputs(root, name, plan_.fingerprints[name])
            assert outputs is not None, name
        else:
            print(f"  upstream {name:<9} cached under {root}", flush=True)
        found[name] = outputs
    return found
