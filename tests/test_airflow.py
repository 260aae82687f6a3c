"""The DAG in real Airflow (its own virtualenv, `make airflow`), with `airflow dags test`
on SQLite, no scheduler or webserver:
- end to end, the train task's first try killed with SIGKILL mid-stage and retried: every
  task succeeds, and the run's summary.json and report equal a one-process run's metrics;
- the shipped DAG file on data that is not there: `start` fails without a retry and no
  stage runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

import run_pipeline
from pipeline.errors import EXIT_OK
from pipeline.metadata import MetadataStore
from tests.helpers import COMPONENTS, blessed_small_run, user_env

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AIRFLOW = os.environ.get(
    "AE_PIPELINE_AIRFLOW", os.path.join(PROJECT, ".venv-airflow", "bin", "airflow")
)
SHIPPED_DAG = os.path.join(PROJECT, "deploy", "airflow", "ae_pipeline.py")
TEST_DAG = os.path.join(PROJECT, "tests", "airflow", "retry_dag.py")
STAGES = list(COMPONENTS)

pytestmark = pytest.mark.slow


def _settings(source) -> list[str]:
    return blessed_small_run(source)


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    """An Airflow home with a migrated SQLite database; stage processes use this Python."""
    if not os.access(AIRFLOW, os.X_OK):
        pytest.fail(f"{AIRFLOW} not found: `make airflow` installs Airflow in its own venv")
    home = tmp_path_factory.mktemp("airflow-home")
    env = user_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AE_PIPELINE_PYTHON=sys.executable,
        AE_PIPELINE_KILL_STAGE="train",
    )
    # Airflow parses DAG files inside its dags folder only: links to the shipped DAG and
    # to the test's build of it.
    (home / "dags").mkdir()
    for dag_file in (SHIPPED_DAG, TEST_DAG):
        (home / "dags" / os.path.basename(dag_file)).symlink_to(dag_file)
    _airflow(env, "db", "migrate")
    return env


def _airflow(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [AIRFLOW, *args], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=900
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _task_instances(env, dag_id: str) -> dict[str, tuple[str, int]]:
    """task id -> (state, try number), as Airflow's database holds them."""
    db = sqlite3.connect(os.path.join(env["AIRFLOW_HOME"], "airflow.db"))
    try:
        rows = db.execute(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ?", (dag_id,)
        ).fetchall()
    finally:
        db.close()
    return {task: (state, tries) for task, state, tries in rows}


def _dag_run_id(env, dag_id: str) -> str:
    runs = json.loads(_airflow(env, "dags", "list-runs", dag_id, "-o", "json").stdout)
    assert len(runs) == 1, runs
    return runs[0]["run_id"]


def test_the_dag_runs_end_to_end_and_a_killed_task_is_retried(
    airflow_env, idx_dir, small_root, tmp_path
):
    root = tmp_path / "root"
    conf = {"root": str(root), "set": _settings(idx_dir)}
    proc = _airflow(
        airflow_env, "dags", "test", "ae_pipeline_test", "2026-12-01", "-c", json.dumps(conf)
    )
    assert "kill_on_start: train killed" in proc.stdout + proc.stderr

    tasks = _task_instances(airflow_env, "ae_pipeline_test")
    assert {t: s for t, (s, _) in tasks.items()} == {t: "success" for t in ["start", *STAGES]}
    assert tasks["train"][1] == 2 and tasks["ingest"][1] == 1  # train was retried once

    # The pipeline's run id is Airflow's, prefixed by the DAG's and sanitized.
    [run] = MetadataStore(str(root), readonly=True).list_runs()
    run_id = run["run_id"]
    airflow_run = _dag_run_id(airflow_env, "ae_pipeline_test")
    assert run_id.startswith("ae_pipeline_test.manual__") and airflow_run.startswith("manual__")
    view = json.loads((root / "runs" / run_id / "summary.json").read_text())
    assert view["status"] == "succeeded" and view["mode"] == "stages"
    assert all(view["stages"][s]["status"] == "ran" for s in STAGES), view["stages"]
    executions = MetadataStore(str(root), readonly=True).run_executions(run_id)
    assert [e["state"] for e in executions if e["stage"] == "train"] == ["abandoned", "complete"]
    # The same config in one process (r1 of the session's small_root).
    reference = json.loads((small_root / "runs" / "r1" / "summary.json").read_text())
    for stage in STAGES:
        got, want = view["stages"][stage]["metrics"], reference["stages"][stage]["metrics"]
        assert got.keys() == want.keys(), stage
        for k, v in want.items():
            # Not model figures: wall-clock ones (images_per_second, train_seconds, ...), and
            # TFLite file sizes, which carry Keras' layer names (numbered per process).
            if "second" in k or k.endswith("_bytes"):
                continue
            assert got[k] == (pytest.approx(v, rel=1e-6) if isinstance(v, float) else v), k
    report = (root / "runs" / run_id / "report.html").read_text()
    assert run_id in report and all(s in report for s in STAGES)
    show = run_pipeline.main(["show", run_id, "--root", str(root)])
    assert show == EXIT_OK


def test_the_shipped_dag_fails_without_retry_on_data_that_is_not_there(airflow_env, tmp_path):
    conf = {"root": str(tmp_path / "root"), "set": _settings(tmp_path / "missing")}
    proc = _airflow(
        airflow_env,
        "dags",
        "test",
        "ae_pipeline",
        "2026-12-01",
        "-c",
        json.dumps(conf),
        check=False,
    )
    assert "exited 3: the config or the data must change; not retried" in (
        proc.stdout + proc.stderr
    )
    tasks = _task_instances(airflow_env, "ae_pipeline")
    assert tasks["start"] == ("failed", 1)  # retries=2 in the DAG, yet not retried
    assert {tasks[s][0] for s in STAGES} == {"upstream_failed"}
