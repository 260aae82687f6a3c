"""The shipped DAG (deploy/airflow/ae_pipeline.py) built for the Airflow test: no schedule,
a one-second retry delay, and the first try of the stage named by AE_PIPELINE_KILL_STAGE
killed with SIGKILL once it has started (tests/airflow/kill_on_start.py), so that
Airflow's retry meets a stage process that died mid-stage."""

import datetime
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))  # through a link in dags/
spec = importlib.util.spec_from_file_location(
    "ae_pipeline_dag", os.path.join(HERE, "..", "..", "deploy", "airflow", "ae_pipeline.py")
)
assert spec is not None and spec.loader is not None
ae_pipeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ae_pipeline)

KILL = os.environ.get("AE_PIPELINE_KILL_STAGE", "")


def kill_first_try(task: str, argv: list[str], try_number: int) -> list[str]:
    if task == KILL and try_number == 1:
        return [sys.executable, os.path.join(HERE, "kill_on_start.py"), task, *argv]
    return argv


dag = ae_pipeline.build_dag(
    "ae_pipeline_test",
    schedule=None,
    retries=1,
    retry_delay=datetime.timedelta(seconds=1),
    command=kill_first_try,
)
