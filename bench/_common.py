"""Helpers shared by the bench scripts (not a benchmark itself).

The scripts are run as `.venv/bin/python bench/<name>.py` from anywhere: this puts the
project root on sys.path so `pipeline`, `components` and `models` import.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

RUN_PIPELINE = PROJECT_ROOT / "run_pipeline.py"
NON_TRAINING_STAGES = ("ingest", "validate", "transform", "evaluate", "export")
ALL_STAGES = ("ingest", "validate", "transform", "train", "evaluate", "export")


def quiet_tf() -> None:
    """Keep TensorFlow's C++ and absl chatter out of the benchmark output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def best_median(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def read_summary(root: str | os.PathLike, run_id: str) -> dict:
    path = pathlib.Path(root) / "runs" / run_id / "summary.json"
    with open(path) as f:
        return json.load(f)


def toml_array(args: list[str]) -> str:
    """A list of strings as a TOML array (JSON's string syntax is valid TOML for these)."""
    return json.dumps(list(args))
