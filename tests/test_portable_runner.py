"""The whole pipeline on Beam's portable job API with workers in separate processes -- the
job API and worker protocol Flink, Spark and Dataflow use -- gives the artifacts of the
in-process runner.

A job service (`python -m apache_beam.runners.portability.local_job_service_main`) and an
external worker pool (`python -m apache_beam.runners.worker.worker_pool_main`) run as their
own processes, started as the README's recipe starts them; the pool starts each SDK worker
as `python` from PATH, so PATH leads with this venv's bin. The run only gets their addresses
through `beam.args`. A `sitecustomize` on the pool's PYTHONPATH logs, from the SDK harness of
each worker it starts, the bundles that worker was given with its pid, parent pid and
interpreter: the proof that the data-parallel work ran there and not in this process.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest

import run_pipeline
from pipeline.errors import EXIT_OK

VENV_BIN = os.path.dirname(sys.executable)
WORKER_LOG_ENV = "AE_TEST_BEAM_WORKER_LOG"
RUN_ID = "r1"
# One Beam job per stage with data-parallel work (ingest, validate, transform, export),
# each served by one SDK worker the pool starts for it.
BEAM_JOBS = 4

SITECUSTOMIZE = f"""\
import logging, os, sys
_path = os.environ.get({WORKER_LOG_ENV!r})
if _path:
    _handler = logging.FileHandler(_path)
    _handler.setFormatter(logging.Formatter(
        "%(process)d " + str(os.getppid()) + " " + sys.executable + " %(message)s"))
    _logger = logging.getLogger("apache_beam.runners.worker.sdk_worker")
    _logger.setLevel(logging.DEBUG)  # its 'Got work <instruction id>' line is DEBUG
    _logger.addHandler(_handler)
    _logger.propagate = False
"""


# -- the services ----------------------------------------------------------------------


@dataclass
class BeamServices:
    job_endpoint: str
    worker_pool: str
    job_service: subprocess.Popen
    pool: subprocess.Popen
    job_service_log: str
    pool_log: str
    worker_log: str

    @property
    def beam_args(self) -> list[str]:
        return [
            "--runner=PortableRunner",
            f"--job_endpoint={self.job_endpoint}",
            "--environment_type=EXTERNAL",
            f"--environment_config={self.worker_pool}",
        ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group it leads (the pool's workers with it), SIGKILL if it lingers."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass


def _tail(path: str, n: int = 3000) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def _launch(module: str, port_flag: str, log: str, env: dict) -> tuple[subprocess.Popen, str]:
    """`python -m module port_flag PORT` on a free port, in a process group of its own."""
    port = _free_port()
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [os.path.join(VENV_BIN, "python"), "-m", module, port_flag, str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc, f"localhost:{port}"


def _answers(proc: subprocess.Popen, address: str, log: str, timeout_s: float = 120.0) -> bool:
    """Wait until the service answers gRPC on `address` (True) or its process exits (False:
    e.g. the port was taken between choosing and binding it)."""
    import grpc

    channel = grpc.insecure_channel(address)
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                return True
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"nothing answers on {address} after {timeout_s:.0f} s; "
                        f"the service's log:\n{_tail(log)}"
                    ) from None
        return False
    finally:
        channel.close()


@pytest.fixture(scope="module")
def beam_services(tmp_path_factory):
    """A job service and an external worker pool, each its own process on a free port; both
    (and any worker the pool started) stopped when the module's tests are done or fail."""
    d = tmp_path_factory.mktemp("beam_services")
    site = d / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    worker_log = str(d / "workers.log")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p),
        WORKER_LOG_ENV: worker_log,
    }
    services = {
        "job_service": ("apache_beam.runners.portability.local_job_service_main", "--port"),
        "worker_pool": ("apache_beam.runners.worker.worker_pool_main", "--service_port"),
    }
    logs = {name: str(d / f"{name}.log") for name in services}
    procs: list[subprocess.Popen] = []
    try:
        started = {}
        for name, (module, flag) in services.items():  # both start at once
            started[name] = _launch(module, flag, logs[name], env)
            procs.append(started[name][0])
        for name, (module, flag) in services.items():
            for _ in range(3):
                if _answers(*started[name], logs[name]):
                    break
                started[name] = _launch(module, flag, logs[name], env)
                procs.append(started[name][0])
            else:
                raise RuntimeError(
                    f"{module} exited with {started[name][0].returncode}; "
                    f"its log:\n{_tail(logs[name])}"
                )
        (job_service, job_endpoint), (pool, worker_pool) = (
            started["job_service"],
            started["worker_pool"],
        )
        yield BeamServices(
            job_endpoint,
            worker_pool,
            job_service,
            pool,
            logs["job_service"],
            logs["worker_pool"],
            worker_log,
        )
    finally:
        for proc in reversed(procs):
            _stop(proc)


# -- the two runs ----------------------------------------------------------------------


def _args(root, source, *extra):
    return [
        "run",
        "--root",
        str(root),
        "--run-id",
        RUN_ID,
        "--set",
        f"data.source=idx:{source}",
        "--set",
        "data.num_shards=2",
        # noisy copies drawn per example id: the same on any runner and worker count
        "--set",
        "noise.kind=mask",
        # the model is no part of this comparison: the smallest, quickest to export
        "--set",
        "model.variant=dense",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=64",
        "--set",
        "gate.max_bce_excess=1.0",
        *extra,
    ]


@dataclass
class Run:
    root: str
    seconds: float

    @property
    def artifacts(self) -> str:
        return os.path.join(self.root, "artifacts")

    def summary(self) -> dict:
        with open(os.path.join(self.root, "runs", RUN_ID, "summary.json")) as f:
            return json.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, idx_dir, beam_services):
    """The same run twice, on two roots: Beam's default in-process runner, then the
    PortableRunner against the job service and the external worker pool."""
    out = {}
    for name, extra in (
        ("in_process", ()),
        ("portable", ("--set", "beam.args=" + json.dumps(beam_services.beam_args))),
    ):
        root = str(tmp_path_factory.mktemp(name))
        started = time.monotonic()
        code = run_pipeline.main(_args(root, idx_dir, *extra))
        out[name] = Run(root, time.monotonic() - started)
        assert code == EXIT_OK, f"{name} run failed: {out[name].summary().get('error')}"
    print(
        f"\nwhole pipeline: in-process {out['in_process'].seconds:.1f} s, "
        f"portable with external workers {out['portable'].seconds:.1f} s"
    )
    return out


# -- comparing artifacts ---------------------------------------------------------------


def _files(base: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), base) for d, _, fs in os.walk(base) for f in fs}


def _no_event_names(files: set[str]) -> set[str]:
    """TensorBoard event files are named after the time and pid: their directories only."""
    return {f.rsplit("/", 1)[0] if "tfevents" in f else f for f in files}


def _same_examples(a: str, b: str) -> bool:
    """The same tf.Examples in the same order. Bytes differ: tfx_bsl's C++ encoder writes
    a tf.Example's feature map in an order that varies from one call to the next, in any
    process, so two encodings of one example differ byte-wise on every runner."""
    import tensorflow as tf

    def examples(path):
        return [
            tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(path, compression_type="GZIP")
        ]

    ea, eb = examples(a), examples(b)
    return len(ea) > 0 and ea == eb


def _same_proto(cls):
    def same(a: str, b: str) -> bool:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return cls.FromString(fa.read()) == cls.FromString(fb.read())

    return same


def _same_rows_by_id(a: str, b: str) -> bool:
    """The same rows once sorted by id: the row order of a Parquet shard is the order its
    bundles reached the writer, which the runner decides."""
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    return ta.num_rows > 0 and ta.sort_by("id").equals(tb.sort_by("id"))


def _same_weights(a: str, b: str) -> bool:
    import h5py

    def weights(path):
        out = {}
        with h5py.File(path, "r") as h:
            h.visititems(
                lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
            )
        return out

    wa, wb = weights(a), weights(b)
    return len(wa) > 0 and wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def _without_timings(d):
    """A metrics dict less wall times and speeds, and the TFLite sizes (see below)."""
    if isinstance(d, dict):
        return {
            k: _without_timings(v)
            for k, v in d.items()
            if not ("seconds" in k or k.endswith("_per_second") or re.match(r"tflite_.*_bytes$", k))
        }
    return d


def _same_json_without_timings(a: str, b: str) -> bool:
    with open(a) as fa, open(b) as fb:
        return _without_timings(json.load(fa)) == _without_timings(json.load(fb))


def _same_text_but_the_root(a: str, b: str) -> bool:
    """push names the serving directory under its own root."""

    def text(path):
        root = path[: path.index(os.sep + "artifacts" + os.sep)]
        with open(path) as f:
            return f.read().replace(root, "<root>")

    return text(a) == text(b)


def _same_artifact_record(a: str, b: str) -> bool:
    """_artifact.json: equal but for the execution's wall times (and push's root)."""

    def record(path):
        root = path[: path.index(os.sep + "artifacts" + os.sep)]
        with open(path) as f:
            data = json.loads(f.read().replace(root, "<root>"))
        for k in ("started", "duration_s"):
            (data.get("execution") or {}).pop(k, None)
        return _without_timings(data)

    return record(a) == record(b)


def _comparator(path: str):
    """How a file whose bytes differ is compared, or None when its bytes must be equal."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

    name = os.path.basename(path)
    if name.endswith(".tfrecord.gz"):
        return _same_examples
    if name == "FeatureStats.pb":
        return _same_proto(statistics_pb2.DatasetFeatureStatisticsList)
    if name == "SchemaDiff.pb":
        return _same_proto(anomalies_pb2.Anomalies)
    if name.endswith(".parquet"):
        return _same_rows_by_id
    if name == "model.weights.h5":  # Keras names layers from a process-wide counter
        return _same_weights
    if path.startswith("evaluate/") and name == "metrics.json":
        return _same_json_without_timings
    if name == "_artifact.json":
        return _same_artifact_record
    if path.startswith("push/"):
        return _same_text_but_the_root
    return None


# Not written by Beam and not byte-reproducible within one process on any runner: the
# second model built in a process gets other Keras layer names (a process-wide counter),
# which the SavedModel, its TFLite conversions and their sizes carry. What they compute is
# compared instead: export's Beam job loads the SavedModel in the workers to compute the
# embeddings and test scores, compared value for value above.
NOT_COMPARED_BYTEWISE = (
    "export/{run}/saved_model/model/",
    "export/{run}/saved_model/tflite/",
    "export/{run}/saved_model/_artifact.json",
    "train/{run}/model_run/tensorboard/",
)  # event files: wall times, pid


@pytest.mark.slow
def test_whole_pipeline_on_external_workers_gives_the_in_process_artifacts(runs, beam_services):
    ref, portable = runs["in_process"], runs["portable"]
    s_ref, s_port = ref.summary(), portable.summary()
    assert s_port["config"]["beam"]["args"] == beam_services.beam_args
    with open(beam_services.job_service_log) as f:
        log = f.read()
    # the portable run's Beam jobs went through the job service, and all of them finished
    assert log.count("Running job '") == log.count("with state DONE.") == BEAM_JOBS, log[-3000:]
    for stage, st in s_ref["stages"].items():
        other = s_port["stages"][stage]
        assert st["status"] == other["status"] == "ran", stage
        # beam.args is no part of a cache key: either runner's artifacts serve the other
        assert st["fingerprint"] == other["fingerprint"], stage
        assert _without_timings(st["metrics"]) == _without_timings(other["metrics"]), stage

    skip = tuple(p.format(run=RUN_ID) for p in NOT_COMPARED_BYTEWISE)
    files = _files(ref.artifacts)
    assert _no_event_names(files) == _no_event_names(_files(portable.artifacts))

    compared = {"bytes": 0}
    for rel in sorted(files):
        if rel.startswith(skip):
            continue
        a, b = os.path.join(ref.artifacts, rel), os.path.join(portable.artifacts, rel)
        with open(a, "rb") as fa, open(b, "rb") as fb:
            if fa.read() == fb.read():
                compared["bytes"] += 1
                continue
        same = _comparator(rel)
        assert same is not None, f"{rel} differs between the runners"
        assert same(a, b), f"{rel}: the content differs between the runners"
        compared[same.__name__] = compared.get(same.__name__, 0) + 1

    # what must be there was compared: 2 shards x 3 splits of ingest's and transform's
    # examples, TFDV statistics of both, the embeddings and the test scores
    shards = [f for f in files if f.endswith(".tfrecord.gz")]
    stats = [f for f in files if f.endswith("FeatureStats.pb")]
    parquet = [f for f in files if f.endswith(".parquet")]
    assert len(shards) == 12 and len(stats) == 6 and len(parquet) == 2, (shards, stats, parquet)
    assert compared["bytes"] > 30, compared
    print(f"\nartifact files compared: {compared}")


@pytest.mark.slow
def test_the_worker_pools_processes_ran_the_bundles(runs, beam_services):
    with open(beam_services.worker_log) as f:
        bundles = [line.split(" ", 3) for line in f if " Got work bundle_" in line]
    pids = {int(pid) for pid, _, _, _ in bundles}
    # every bundle ran in a worker the pool started, with the project's interpreter
    assert {int(ppid) for _, ppid, _, _ in bundles} == {beam_services.pool.pid}
    assert {exe for _, _, exe, _ in bundles} == {os.path.join(VENV_BIN, "python")}
    assert os.getpid() not in pids and beam_services.job_service.pid not in pids
    # one worker per Beam job of the portable run; the in-process run started none
    with open(beam_services.pool_log) as f:
        started = [line for line in f if line.startswith("Starting worker with command ['python'")]
    assert len(pids) == len(started) == BEAM_JOBS, (pids, started)
    assert len(bundles) >= 4 * BEAM_JOBS
