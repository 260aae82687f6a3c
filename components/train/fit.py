"""train's fit, in this process, under the tf.distribute strategy it is handed (distribute.py):
a model-zoo autoencoder on the normalized examples, the best epoch by val_loss kept.

Outputs (model_io.py names the files): the Model artifact's weights and model.json, the
ModelRun artifact's history.csv, history.json and TensorBoard events.

Held-out classes (data.holdout_labels, novelty detection) are left out of the train and
validation batches (examples_io.dataset); the count left out is logged and reported, and
model.json and the model's properties record which classes the model never saw.

Resumable: with a work_dir (stable per stage fingerprint), the backup (weights, optimizer
state, epoch) lives in <work_dir>/backup and the best checkpoint and the CSV history in
<work_dir>/train_state, so a crashed or interrupted stage run again continues where it
stopped and still reports the best epoch over the whole run. Every write of them is atomic
and an unusable backup is set aside (checkpoints.py). Both are deleted after a success.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import posixpath
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import tensorflow as tf
from tensorflow.io import gfile

from components import examples_io
from components import features as F
from components.train import checkpoints, distribute, model_io
from pipeline.artifacts import Artifact
from pipeline.errors import StageError

if TYPE_CHECKING:
    from components.train.component import TrainParams
    from components.train.fit_process import FitJob

BACKUP_DIR = "backup"  # under the work_dir: Keras' backup (weights, optimizer, epoch)
STATE_DIR = "train_state"  # under the work_dir: the CSV history and the best checkpoint
BEST_WEIGHTS = "best.weights.h5"

# What train.optimizer accepts (component.OPTIMIZERS; tests/test_train.py builds each).
_OPTIMIZER_CLASSES = {
    "adam": keras.optimizers.Adam,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": lambda rate: keras.optimizers.SGD(rate, momentum=0.9),
}


def make_optimizer(name: str, learning_rate: float, schedule: str, total_steps: int):
    """The optimizer; with schedule "cosine" the rate decays to 1% of `learning_rate` over
    `total_steps` (a function of the optimizer's step count, so a resumed run continues
    on the same curve)."""
    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(total_steps, 1), alpha=0.01
        )
    return _OPTIMIZER_CLASSES[name](learning_rate)


def device_name() -> tuple[str, list]:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)", gpus
    try:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    except Exception:  # details are best-effort
        name = "GPU"
    return (name if len(gpus) == 1 else f"{len(gpus)} x {name}"), gpus


def model_info(params: TrainParams) -> dict:
    """What models.build needs (model_io.build_model), from the parameters."""
    return {
        "variant": params.variant,
        "latent_dim": params.latent_dim,
        "beta": params.beta,
        "activity_l1": params.activity_l1,
        "decoder": params.decoder,
    }


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch (Keras' progress bar is off) and the timings for the metrics.

    The training phase of an epoch is timed up to the start of its validation pass, so
    images/s measures the fit alone.
    """

    def __init__(self, log, epochs: int, train_images: int):
        super().__init__()
        self.log, self.epochs, self.train_images = log, epochs, train_images
        self.train_seconds: list[float] = []  # training phase only, per epoch run
        self.epoch_seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._t_val = None

    def on_test_begin(self, logs=None):
        if getattr(self, "_t0", None) is not None and self._t_val is None:
            self._t_val = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        end = time.perf_counter()
        train_s = (self._t_val or end) - self._t0
        self.train_seconds.append(train_s)
        self.epoch_seconds.append(end - self._t0)
        self._t0 = None
        keys = sorted(
            (k for k, v in logs.items() if isinstance(v, (int, float))),
            key=lambda k: (k.startswith("val_"), k != "loss" and k != "val_loss", k),
        )
        shown = " ".join(f"{k}={logs[k]:.4f}" for k in keys)
        self.log.info(
            "train: epoch %d/%d %s  %.1fs  %.0f images/s",
            epoch + 1,
            self.epochs,
            shown,
            self.epoch_seconds[-1],
            self.train_images / max(train_s, 1e-9),
        )


@contextlib.contextmanager
def precision_policy(mixed: bool, gpus: list, log):
    """mixed_float16 for the block when asked for and a GPU is visible (else a warning and
    float32); the global policy is restored afterwards."""
    previous = keras.mixed_precision.global_policy().name
    if mixed and not gpus:
        log.warning(
            "train: train.mixed_precision=true needs a GPU; none visible, training in float32"
        )
        mixed = False
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield "mixed_float16" if mixed else previous
    finally:
        keras.mixed_precision.set_global_policy(previous)


# -- the fit, phase by phase ----------------------------------------------------------------


def train(job: FitJob, strategy, log) -> dict:
    """Check and read the examples, fit under `strategy`, write the Model and ModelRun
    artifacts (their properties too); returns the stage's metrics."""
    params = job.params
    feature = input_feature(params, job.examples)
    keras.utils.set_random_seed(params.seed)
    device, gpus = device_name()
    log.info(
        "train: %s on %s, %d epochs, batch %d, %s lr=%g (%s), input %s",
        params.variant,
        device,
        params.epochs,
        params.batch_size,
        params.optimizer,
        params.learning_rate,
        params.lr_schedule,
        feature,
    )
    data = load_inputs(params, job.examples, feature, log)
    with _resumable_state(job.work_dir, log) as state:
        fitted = _fit(job, data, strategy, gpus, state, log)
        model_io.write_history(job.model_run.uri, fitted.rows)
    metrics = _metrics(params, data, fitted, device)
    _record_properties(job, fitted.info, metrics, device)
    log.info(
        "train: done, %d epochs in %.1fs; best epoch %d val_loss %.4f; %.0f images/s "
        "(steady state)",
        metrics["epochs_run"],
        fitted.train_seconds,
        metrics["best_epoch"],
        metrics["best_val_loss"],
        metrics["images_per_second"],
    )
    return metrics


def input_feature(params: TrainParams, examples: Artifact) -> str:
    """The feature the fit reads: noisy_image for a denoising fit, which the examples must
    hold (else a StageError), image otherwise."""
    if not params.denoising:
        return F.IMAGE
    if examples.properties.get("noisy") is False or not examples_io.has_feature(
        examples, "train", F.NOISY_IMAGE
    ):
        raise StageError(
            f"denoising training needs feature {F.NOISY_IMAGE!r}, but the examples at "
            f"{examples.uri} have none (noisy={examples.properties.get('noisy')}); "
            "set noise.kind to gaussian, salt_pepper or mask"
        )
    return F.NOISY_IMAGE


@dataclass(frozen=True)
class Inputs:
    """The fit's batches, and how they were read."""

    feature: str  # the input feature; the target is always the clean image
    train: tf.data.Dataset
    validation: tf.data.Dataset
    n_train: int
    cache_plan: examples_io.CachePlan
    held_out: dict[str, dict]  # per split, examples kept and left out (held_out_counts)

    def metrics(self, memory_budget_mb: int) -> dict:
        out: dict = {
            f"{split}_examples_held_out": c["left_out"] for split, c in self.held_out.items()
        }
        out.update(
            input_pipeline="in_memory" if self.cache_plan.cache else "streaming",
            memory_budget_mb=memory_budget_mb,
        )
        if self.cache_plan.needed_bytes is not None:
            out["input_mib_parsed"] = round(self.cache_plan.needed_bytes / 2**20, 1)
        return out


def load_inputs(params: TrainParams, examples: Artifact, feature: str, log) -> Inputs:
    """The train and validation batches: in memory when the parsed splits fit
    train.memory_budget_mb, else streamed from the shards (interleaved reads, a bounded
    shuffle buffer, parse after batching, prefetch)."""
    t_load = time.perf_counter()
    held_out = held_out_counts(params, examples, log)
    plan = examples_io.plan_cache(
        examples, ("train", "validation"), (feature, F.IMAGE), params.memory_budget_mb
    )
    log.info("train: input pipeline %s", plan.reason)
    train_ds = examples_io.dataset(
        examples,
        "train",
        params.batch_size,
        feature,
        shuffle=True,
        seed=params.seed,
        shuffle_buffer=params.shuffle_buffer,
        cache=plan.cache,
        exclude_labels=params.holdout_labels,
    )
    val_ds = examples_io.dataset(
        examples,
        "validation",
        params.batch_size,
        feature,
        cache=plan.cache,
        exclude_labels=params.holdout_labels,
    )
    counts = (
        {s: c["kept"] for s, c in held_out.items()}
        if held_out
        else examples.properties.get("counts") or {}
    )
    n_train = int(counts.get("train") or train_ds.reduce(0, lambda n, b: n + tf.shape(b[0])[0]))
    log.info(
        "train: %s %d train / %s validation examples in %.1fs",
        "loaded into memory" if plan.cache else "streaming",
        n_train,
        counts.get("validation", "?"),
        time.perf_counter() - t_load,
    )
    return Inputs(feature, train_ds, val_ds, n_train, plan, held_out)


def held_out_counts(params: TrainParams, examples: Artifact, log) -> dict[str, dict]:
    """With data.holdout_labels: per fitted split, how many examples are kept and left out
    (logged; a split with nothing left is a DataError). Without: {} (nothing is read)."""
    if not params.holdout_labels:
        return {}
    out = {}
    for split in ("train", "validation"):
        per_class = examples_io.label_counts(examples, split)
        left_out = int(per_class[list(params.holdout_labels)].sum())
        total = int(per_class.sum())
        examples_io.require_examples_left(
            total - left_out, total, examples, split, params.holdout_labels
        )
        out[split] = {"kept": total - left_out, "left_out": left_out}
        log.info(
            "train: %s split: left out %d of %d examples (held-out classes %s), fitting on %d",
            split,
            left_out,
            total,
            list(params.holdout_labels),
            total - left_out,
        )
    return out


@dataclass(frozen=True)
class _State:
    """Where a fit keeps what survives a crash (module docstring)."""

    dir: str
    backup: keras.callbacks.BackupAndRestore | None  # None: the fit is not resumable

    @property
    def atomic(self) -> bool:
        # Atomic writes need a local rename; an object store's "rename" is a copy anyway.
        return "://" not in self.dir

    @property
    def history_csv(self) -> str:
        return posixpath.join(self.dir, model_io.HISTORY_CSV)

    @property
    def best_weights(self) -> str:
        return posixpath.join(self.dir, BEST_WEIGHTS)

    def restore(self, model, strategy) -> bool:
        """Restore the backup into `model`, before fit, so that the history and the best
        checkpoint of an attempt whose backup is gone or unusable are not mixed into this
        one (they are removed); whether the fit resumes."""
        if isinstance(self.backup, checkpoints.AtomicBackupAndRestore):
            with strategy.scope():
                resumed = self.backup.restore(model) is not None
        else:  # Keras' own restores in on_train_begin
            resumed = self.backup is not None and gfile.exists(
                posixpath.join(self.backup.backup_dir, checkpoints.METADATA)
            )
        if not resumed and self.backup is not None and gfile.exists(self.dir):
            gfile.rmtree(self.dir)
        gfile.makedirs(self.dir)
        return resumed


@contextlib.contextmanager
def _resumable_state(work_dir: str, log):
    """Under `work_dir`: kept when the fit fails (the next attempt resumes from it),
    removed after a success. Without one: a throw-away local directory."""
    if not work_dir:
        scratch = tempfile.mkdtemp(prefix="train-state-")
        try:
            yield _State(scratch, backup=None)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    state_dir, backup_dir = (posixpath.join(work_dir, d) for d in (STATE_DIR, BACKUP_DIR))
    if "://" in work_dir:  # an object store: no atomic rename (_State.atomic), Keras' own
        backup = keras.callbacks.BackupAndRestore(backup_dir)
    else:
        backup = checkpoints.AtomicBackupAndRestore(
            backup_dir, posixpath.join(work_dir, checkpoints.UNUSABLE_DIR), log
        )
    yield _State(state_dir, backup)
    gfile.rmtree(state_dir)  # after a success; BackupAndRestore removes the backup itself


@dataclass(frozen=True)
class _Fitted:
    """What a fit leaves for the metrics and the artifacts' properties."""

    info: dict  # model.json
    rows: list[dict]  # the history, one row per epoch over every attempt
    best: dict  # the best epoch's row
    train_seconds: float
    epochs: EpochLogger  # per-epoch timings
    resumed: bool
    policy: str
    set_aside: tuple[str, ...]  # unusable backups moved aside


def _fit(job: FitJob, data: Inputs, strategy, gpus: list, state: _State, log) -> _Fitted:
    """Build and compile under `strategy`, resume from the backup, fit, and copy the best
    epoch's weights into the Model artifact."""
    params = job.params
    log.info(
        "train: train.distribute=%s: %s, %d replica(s) in sync",
        params.distribute,
        distribute.strategy_name(strategy),
        strategy.num_replicas_in_sync,
    )
    train_ds, val_ds = (
        distribute.distribute_input(d, strategy) for d in (data.train, data.validation)
    )
    steps = _steps_per_execution(params, strategy, log)
    with precision_policy(params.mixed_precision, gpus, log) as policy:
        with strategy.scope():
            model = model_io.build_model(model_info(params))
            model.compile_for_training(
                make_optimizer(
                    params.optimizer,
                    params.learning_rate,
                    params.lr_schedule,
                    params.epochs * math.ceil(data.n_train / params.batch_size),
                ),
                jit_compile=params.jit_compile,
                steps_per_execution=steps,
            )
        resumed = state.restore(model, strategy)
        previous_rows = _read_history(state.history_csv) if resumed else []
        if resumed:
            log.info(
                "train: resuming from the backup in %s after %d logged epoch(s)",
                posixpath.join(job.work_dir, BACKUP_DIR),
                len(previous_rows),
            )
        log.info(
            "train: %s, latent_dim %d, %d parameters, precision %s, xla %s, %d steps per execution",
            type(model).__name__,
            model.latent_dim,
            int(model.count_params()),
            policy,
            params.jit_compile,
            steps,
        )
        epochs = EpochLogger(log, params.epochs, data.n_train)
        callbacks = _callbacks(params, state, previous_rows, job.model_run.uri, epochs)
        train_seconds = _keras_fit(model, (train_ds, val_ds), params, callbacks)
        rows, best = _best_epoch(state)
        info = _write_model(job, data.feature, model, state.best_weights)
    return _Fitted(
        info,
        rows,
        best,
        train_seconds,
        epochs,
        resumed,
        policy,
        tuple(getattr(state.backup, "set_aside", ())),
    )


def _steps_per_execution(params: TrainParams, strategy, log) -> int:
    if params.steps_per_execution > 1 and distribute.is_multi_worker(strategy):
        # Keras' in-graph loop over several steps fails under MWMS (InvalidArgumentError in
        # tests/test_multi_worker.py's two-worker fit), so workers run one step per call.
        log.info(
            "train: train.steps_per_execution=%d runs as 1 under MultiWorkerMirroredStrategy",
            params.steps_per_execution,
        )
        return 1
    return params.steps_per_execution


def _callbacks(
    params: TrainParams, state: _State, previous_rows: list[dict], run_uri: str, epochs: EpochLogger
) -> list:
    prior_best = min(
        (r["val_loss"] for r in previous_rows if _finite(r.get("val_loss"))), default=None
    )
    checkpoint = (
        checkpoints.AtomicModelCheckpoint if state.atomic else keras.callbacks.ModelCheckpoint
    )
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        checkpoint(
            state.best_weights,
            monitor="val_loss",
            mode="min",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=prior_best,
        ),
        keras.callbacks.CSVLogger(state.history_csv, append=True),
        keras.callbacks.TensorBoard(log_dir=posixpath.join(run_uri, model_io.TENSORBOARD_DIR)),
        epochs,
    ]
    if params.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                mode="min",
                patience=params.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    if state.backup:
        callbacks.append(state.backup)
    return callbacks


def _keras_fit(model, datasets: tuple, params: TrainParams, callbacks: list) -> float:
    """model.fit on (train, validation); its seconds. Out of memory or a non-finite loss
    is a StageError saying what to change."""
    train_ds, val_ds = datasets
    t0 = time.perf_counter()
    try:
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=params.epochs,
            callbacks=callbacks,
            shuffle=False,
            verbose=0,
        ).history
    except tf.errors.ResourceExhaustedError as e:
        raise StageError(
            f"training ran out of memory (train.batch_size {params.batch_size}): "
            f"{e.message.splitlines()[0]}"
        ) from None
    seconds = time.perf_counter() - t0
    losses = history.get("loss", [])
    if not all(_finite(v) for v in losses + list(history.get("val_loss", []))):
        raise StageError(
            f"training diverged: non-finite loss at epoch {len(losses)} "
            f"(loss history {losses}); try a lower train.learning_rate "
            f"(now {params.learning_rate})"
        )
    return seconds


def _best_epoch(state: _State) -> tuple[list[dict], dict]:
    """The history over every attempt, and its row of the lowest finite val_loss."""
    rows = _read_history(state.history_csv)
    if not rows:
        raise StageError(f"training ran no epochs (history {state.history_csv} is empty)")
    if not gfile.exists(state.best_weights):
        raise StageError(
            f"no checkpoint was written to {state.best_weights} (val_loss never finite?)"
        )
    return rows, min((r for r in rows if _finite(r.get("val_loss"))), key=lambda r: r["val_loss"])


def _write_model(job: FitJob, feature: str, model, best_weights: str) -> dict:
    """The Model artifact: the best epoch's weights (what the checkpoint kept) and
    model.json; returns the latter."""
    params = job.params
    gfile.copy(best_weights, posixpath.join(job.model.uri, model_io.WEIGHTS_FILE), overwrite=True)
    info = {
        **model_info(params),
        "latent_dim": int(model.latent_dim),
        "denoising": params.denoising,
        "input_feature": feature,
        "is_variational": bool(model.is_variational),
        "params": int(model.count_params()),
        "keras_version": keras.__version__,
        "holdout_labels": list(params.holdout_labels),
    }
    model_io.write_model_json(job.model.uri, info)
    return info


def _metrics(params: TrainParams, data: Inputs, fitted: _Fitted, device: str) -> dict:
    rows, best, epochs = fitted.rows, fitted.best, fitted.epochs
    # Steady state: the first epoch of this process pays for tracing/compilation.
    steady = epochs.train_seconds[1:] or epochs.train_seconds
    return {
        "variant": params.variant,
        "latent_dim": fitted.info["latent_dim"],
        "epochs_run": len(rows),
        "best_epoch": int(best["epoch"]) + 1,  # 1-based, as the log shows epochs
        "best_val_loss": round(float(best["val_loss"]), 6),
        "final_loss": round(float(rows[-1]["loss"]), 6),
        "train_seconds": round(fitted.train_seconds, 2),
        "epoch_seconds_mean": round(
            sum(epochs.epoch_seconds) / max(len(epochs.epoch_seconds), 1), 3
        ),
        "images_per_second": round(data.n_train * len(steady) / max(sum(steady), 1e-9), 1),
        "train_examples": data.n_train,
        "device": device,
        "precision": fitted.policy,
        "params": fitted.info["params"],
        "resumed": fitted.resumed,
        **(
            {"warnings": [f"unusable training backup moved aside to {p}" for p in fitted.set_aside]}
            if fitted.set_aside
            else {}
        ),
        "holdout_labels": list(params.holdout_labels),
        **data.metrics(params.memory_budget_mb),
    }


def _record_properties(job: FitJob, info: dict, metrics: dict, device: str) -> None:
    job.model.properties.update(
        {
            k: info[k]
            for k in (
                "variant",
                "latent_dim",
                "is_variational",
                "denoising",
                "input_feature",
                "holdout_labels",
            )
        }
    )
    job.model.properties.update(
        best_epoch=metrics["best_epoch"], best_val_loss=metrics["best_val_loss"]
    )
    job.model_run.properties.update(epochs_run=metrics["epochs_run"], device=device)


# -- the history ----------------------------------------------------------------------------


def _read_history(path: str) -> list[dict]:
    """CSVLogger rows as dicts of floats, one per epoch (the last row wins for an epoch
    logged twice, e.g. just before a crash and again after the resume)."""
    if not gfile.exists(path):
        return []
    with gfile.GFile(path) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    by_epoch: dict[int, dict] = {}
    for row in rows:
        try:
            parsed = {k: float(v) for k, v in row.items() if k and v not in (None, "")}
        except ValueError:
            continue
        if "epoch" in parsed:
            epoch = int(parsed["epoch"])
            by_epoch[epoch] = {**parsed, "epoch": epoch}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))
