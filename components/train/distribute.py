"""How train spreads its fit over devices and machines: the `train.distribute` setting.

    auto          MirroredStrategy when several local GPUs are visible, else TensorFlow's
                  default strategy; multi_worker when TF_CONFIG names several workers
    one_device    the default strategy: one device (the first GPU when visible, else CPU)
    mirrored      MirroredStrategy over the local GPUs (one CPU replica without a GPU)
    multi_worker  MultiWorkerMirroredStrategy over the workers TF_CONFIG names (exit 2
                  without a usable TF_CONFIG)

Multi-worker training (MultiWorkerMirroredStrategy, "MWMS"; docs/scale-out.md): the chief
runs the pipeline, every other worker `run_pipeline.py train-worker` (worker.py), and on
each the fit runs in a fresh process that makes MWMS first (fit_process.py).
`train.batch_size` stays the global batch, the data are sharded by element, so the steps
are those of the single-worker fit; such a fit is not resumable.

TF_CONFIG is read by `cluster` alone (TensorFlow's own resolver reads it again inside
MWMS); its callers pass the Cluster along.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from pipeline.errors import ConfigError

MODES = ("auto", "one_device", "mirrored", "multi_worker")
TF_CONFIG = "TF_CONFIG"


@dataclass(frozen=True)
class Cluster:
    """What TF_CONFIG says: how many workers train and which one this process is."""

    workers: int
    task_type: str
    task_index: int
    has_chief: bool

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (not self.has_chief and self.task_index == 0)

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"


def cluster(environ=None) -> Cluster | None:
    """The cluster TF_CONFIG describes; None when TF_CONFIG is unset or empty. A TF_CONFIG
    that is set but unusable is a ConfigError naming what was expected."""
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
    if not text:
        return None
    expected = (
        'expected JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
        '"task": {"type": "worker", "index": 0}} (an optional "chief" job of one)'
    )
    try:
        conf = json.loads(text)
        jobs = conf["cluster"]
        task_type, index = conf["task"]["type"], int(conf["task"]["index"])
        workers, chief = list(jobs.get("worker", [])), list(jobs.get("chief", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{TF_CONFIG}: {expected}, got {text[:200]!r}") from None
    if set(jobs) - {"worker", "chief"} or len(chief) > 1:
        raise ConfigError(
            f"{TF_CONFIG}: {expected}; other jobs ({sorted(set(jobs))}) are for "
            "parameter-server training, which train does not do"
        )
    size = {"worker": len(workers), "chief": len(chief)}.get(task_type, 0)
    if not 0 <= index < size:
        raise ConfigError(
            f"{TF_CONFIG}: {expected}; task {task_type} {index} is not in the "
            f"cluster ({len(chief)} chief, {len(workers)} workers)"
        )
    return Cluster(len(workers) + len(chief), task_type, index, bool(chief))


def multi_worker_cluster(mode: str, environ=None) -> Cluster | None:
    """The cluster when `mode` means a multi-worker fit (multi_worker, or auto with
    TF_CONFIG naming several workers), else None. ConfigError when multi_worker has no
    usable TF_CONFIG."""
    found = cluster(environ) if mode in ("auto", "multi_worker") else None
    if mode == "multi_worker" and (found is None or found.workers < 2):
        raise ConfigError(
            f"train.distribute: multi_worker needs the environment variable {TF_CONFIG} naming "
            "a cluster of at least two workers and this process's task, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
            f'"index": 0}}; got {"none" if found is None else f"{found.workers} worker"}'
        )
    return found if found is not None and found.workers >= 2 else None


def require_chief(found: Cluster) -> None:
    """ConfigError unless this process is the chief of `found`: only the chief runs the
    pipeline and commits."""
    if not found.is_chief:
        raise ConfigError(
            f"{TF_CONFIG} names this process {found.name}, not the chief: run "
            "`run_pipeline.py train-worker --root ROOT --run-id ID` on it (only the chief runs "
            "the pipeline and commits)"
        )


# -- the strategies -----------------------------------------------------------------------
# TensorFlow is imported in the functions below, not at the top: the train spec imports
# this module for its checks, and a cached run or `config` must not load TensorFlow.


def local_strategy(mode: str):
    """The strategy of a fit in this process alone: MirroredStrategy for `mirrored`, or for
    `auto` with several local GPUs; else TensorFlow's default strategy (one device)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def multi_worker_strategy():
    """MWMS over the cluster TF_CONFIG names, with the two reductions Keras 3 asks of it
    done as MirroredStrategy does them. Only in a fresh process, before anything else
    starts TensorFlow's runtime (fit_process.py)."""
    import tensorflow as tf

    # Keras 3 with the TF backend cannot fit under MWMS as shipped (keras-team/keras#20585,
    # tensorflow/tensorflow#72388): its trainer calls `strategy.reduce` on a nest of
    # per-replica values, which MWMS does not map over, and with `axis=0` on scalars.
    class _KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def one(v):
                scalar = all(
                    getattr(t, "shape", None) is not None and t.shape.rank == 0
                    for t in self.experimental_local_results(v)
                )
                return super(_KerasMultiWorkerStrategy, self).reduce(
                    reduce_op, v, None if scalar else axis
                )

            return tf.nest.map_structure(one, value)

    return _KerasMultiWorkerStrategy()


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def strategy_name(strategy) -> str:
    """How the log names `strategy`."""
    import tensorflow as tf

    if is_multi_worker(strategy):
        return "MultiWorkerMirroredStrategy"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "MirroredStrategy"
    return "one device (default strategy)"


def distribute_input(dataset, strategy):
    """Under MWMS, shard by element: every worker builds the same shuffled global batches
    and keeps its slice of each; otherwise the dataset as it is."""
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
