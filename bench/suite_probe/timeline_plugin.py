"""A pytest plugin (`-p timeline_plugin`, this folder on PYTHONPATH): one JSON line per
case start and end, with the xdist worker that ran it, so gaps and the tail show."""

import json
import os
import time

_OUT = os.environ.get("SUITE_PROBE_OUT", "/tmp/suite-probe")


def _write(event: str, nodeid: str) -> None:
    os.makedirs(_OUT, exist_ok=True)
    line = {
        "t": time.time(),
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "-"),
        "event": event,
        "id": nodeid,
    }
    with open(os.path.join(_OUT, "timeline.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")


def pytest_runtest_logstart(nodeid, location):
    _write("start", nodeid)


def pytest_runtest_logfinish(nodeid, location):
    _write("end", nodeid)
