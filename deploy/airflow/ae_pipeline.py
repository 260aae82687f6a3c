"""The pipeline as an Airflow DAG: a `start` task, then one task per stage of
run_pipeline.create_pipeline(), each running `run_pipeline.py stage NAME` in the project's
own virtualenv (Airflow keeps its own: docs/airflow.md). The stages and their order come
from `run_pipeline.py stages --json`, so the DAG follows the pipeline file.

Put this file (or a link to it) in Airflow's dags folder. Environment, read when the file
is parsed: AE_PIPELINE_PROJECT (the checkout; default: two folders up from this file),
AE_PIPELINE_PYTHON (default: its .venv), AE_PIPELINE_ROOT (the default root param),
AE_PIPELINE_SCHEDULE (default @daily), AE_PIPELINE_QUEUE_<KIND> and AE_PIPELINE_POOL_<KIND>
for the stage kinds cpu and accelerator (train).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable

from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

PROJECT = os.environ.get("AE_PIPELINE_PROJECT") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
)
PYTHON = os.environ.get("AE_PIPELINE_PYTHON") or os.path.join(PROJECT, ".venv", "bin", "python")
ROOT = os.environ.get("AE_PIPELINE_ROOT") or os.path.join(PROJECT, "output")

sys.path.insert(0, PROJECT)
# The exit codes' one home (standard library only, so it imports in Airflow's venv).
from pipeline.errors import EXIT_CONFIG, EXIT_DATA, EXIT_OK, EXIT_SKIPPED  # noqa: E402

# Airflow's meaning of each exit code: a skip, a failure not worth retrying (the config or
# the data must change first), or (any other code) a failure retried with backoff.
SKIP = (EXIT_SKIPPED,)
NO_RETRY = (EXIT_CONFIG, EXIT_DATA)

# argv of one CLI call -> the argv run for a task's try (tests wrap it to inject faults).
Command = Callable[[str, list[str], int], list[str]]


def run_id(dag_id: str, airflow_run_id: str) -> str:
    """The pipeline run id of an Airflow dag run: its id, prefixed by the DAG's, in the
    characters run ids allow (pipeline/cli.py, check_run_id)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dag_id}.{airflow_run_id}").strip("-._")
    return clean[:128]


def stage_graph(python: str = PYTHON, project: str = PROJECT) -> list[dict]:
    """[{name, upstream, kind, description}] in order, from the pipeline file itself."""
    out = subprocess.run(
        [python, os.path.join(project, "run_pipeline.py"), "stages", "--json"],
        cwd=project,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def _call(task: str, cli: list[str], python: str, project: str, command: Command, **context):
    """Run one CLI call for this task, its output into the task's log; map its exit code."""
    params, ti = context["params"], context["ti"]
    rid = run_id(context["dag"].dag_id, context["run_id"])
    argv = [*cli, "--run-id", rid, "--root", params["root"]]
    if cli[0] == "start":
        argv += ["--config", params["config"]] if params.get("config") else []
        for item in params.get("set") or []:
            argv += ["--set", item]
    argv = command(task, [python, os.path.join(project, "run_pipeline.py"), *argv], ti.try_number)
    print("+", " ".join(argv), flush=True)
    proc = subprocess.Popen(
        argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
    code = proc.wait()
    what = f"{task} of run {rid} exited {code}"
    if code == EXIT_OK:
        return rid
    if code in SKIP:
        raise AirflowSkipException(f"{what}: skipped (another run holds the root)")
    if code in NO_RETRY:
        raise AirflowFailException(f"{what}: the config or the data must change; not retried")
    raise AirflowException(f"{what}: retried with backoff")


def _as_is(task: str, argv: list[str], try_number: int) -> list[str]:
    return argv


def build_dag(
    dag_id: str = "ae_pipeline",
    *,
    python: str = PYTHON,
    project: str = PROJECT,
    root: str = ROOT,
    config: str = "",
    schedule: str | None = os.environ.get("AE_PIPELINE_SCHEDULE", "@daily"),
    retries: int = 2,
    retry_delay: datetime.timedelta = datetime.timedelta(minutes=5),
    command: Command = _as_is,
) -> DAG:
    """The DAG: `start`, then a task per stage wired as the pipeline file wires them."""
    stages = stage_graph(python, project)
    dag = DAG(
        dag_id,
        description="Autoencoder pipeline on MNIST / Fashion-MNIST, one task per stage",
        schedule=schedule,
        start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        catchup=False,
        max_active_runs=1,  # overlapping runs would wait on each other's stage locks
        params={
            "root": Param(root, type="string", description="the pipeline root"),
            "config": Param(config, type="string", description="preset or TOML file"),
            "set": Param([], type="array", description="KEY=VALUE overrides"),
        },
        default_args={
            "retries": retries,
            "retry_delay": retry_delay,
            "retry_exponential_backoff": True,
            "max_retry_delay": datetime.timedelta(hours=1),
        },
        tags=["ae-pipeline"],
    )
    common = {"python": python, "project": project, "command": command}
    with dag:
        start = PythonOperator(
            task_id="start",
            python_callable=_call,
            op_kwargs={"task": "start", "cli": ["start"], **common},
        )
        tasks = {}
        for s in stages:
            kind = s["kind"].upper()
            tasks[s["name"]] = PythonOperator(
                task_id=s["name"],
                doc=s["description"],
                python_callable=_call,
                op_kwargs={"task": s["name"], "cli": ["stage", s["name"]], **common},
                queue=os.environ.get(f"AE_PIPELINE_QUEUE_{kind}", "default"),
                pool=os.environ.get(f"AE_PIPELINE_POOL_{kind}", "default_pool"),
            )
            for up in s["upstream"] or [None]:
                (tasks[up] if up else start) >> tasks[s["name"]]
    return dag


dag = build_dag()
