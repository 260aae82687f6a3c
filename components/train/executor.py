"""train: fit a model-zoo autoencoder on the normalized examples.

Outputs
  model      model.weights.h5 (best epoch by val_loss), model.json (how to rebuild it)
  model_run  history.csv (Keras CSVLogger), history.json, tensorboard/

Held-out classes (data.holdout_labels, novelty detection): left out of the train and
validation batches (examples_io.dataset); the count left out is logged and reported, and
model.json and the model's properties record which classes the model never saw.

Resumable: with ctx.work_dir set (stable per stage fingerprint), the backup (weights +
optimizer state + epoch) lives in <work_dir>/backup, and the best checkpoint and the CSV
history in <work_dir>/train_state, so re-running a crashed or interrupted stage continues
where it stopped and still reports the best epoch over the whole run. Every write of them
is atomic and an unusable backup is set aside (components/train/checkpoints.py). Both are
deleted after a successful fit.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import posixpath
import shutil
import tempfile
import time

import keras
import tensorflow as tf
from tensorflow.io import gfile

from typing import TYPE_CHECKING

from components import examples_io
from components import features as F
from components.train import checkpoints, distribute, model_io
from components.train.options import OPTIMIZERS
from pipeline.errors import StageError

if TYPE_CHECKING:
    from components.train.component import TrainParams
    from pipeline.artifacts import Artifact
    from pipeline.component import ExecutionContext

HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
TENSORBOARD_DIR = "tensorboard"
BACKUP_DIR = "backup"
STATE_DIR = "train_state"
BEST_WEIGHTS = "best.weights.h5"


def device_name() -> tuple[str, list]:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)", gpus
    try:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    except Exception:  # details are best-effort
        name = "GPU"
    return (name if len(gpus) == 1 else f"{len(gpus)} x {name}"), gpus


_OPTIMIZER_CLASSES = {
    "adam": keras.optimizers.Adam,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": lambda rate: keras.optimizers.SGD(rate, momentum=0.9),
}
assert tuple(_OPTIMIZER_CLASSES) == OPTIMIZERS, "components/train/options.py lists the names"


def make_optimizer(name: str, learning_rate: float, schedule: str, total_steps: int):
    """The optimizer; with schedule "cosine" the rate decays to 1% of `learning_rate` over
    `total_steps` (a function of the optimizer's step count, so a resumed run continues
    on the same curve)."""
    if schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(total_steps, 1), alpha=0.01)
    return _OPTIMIZER_CLASSES[name](learning_rate)


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
        keys = sorted((k for k, v in logs.items() if isinstance(v, (int, float))),
                      key=lambda k: (k.startswith("val_"), k != "loss" and k != "val_loss", k))
        shown = " ".join(f"{k}={logs[k]:.4f}" for k in keys)
        self.log.info("train: epoch %d/%d %s  %.1fs  %.0f images/s", epoch + 1, self.epochs,
                      shown, self.epoch_seconds[-1],
                      self.train_images / max(train_s, 1e-9))


@contextlib.contextmanager
def precision_policy(mixed: bool, gpus: list, log):
    """mixed_float16 for the block when asked for and a GPU is visible (else a warning and
    float32); the global policy is restored afterwards."""
    previous = keras.mixed_precision.global_policy().name
    if mixed and not gpus:
        log.warning("train: train.mixed_precision=true needs a GPU; none visible, "
                    "training in float32")
        mixed = False
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield "mixed_float16" if mixed else previous
    finally:
        keras.mixed_precision.set_global_policy(previous)


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
            parsed["epoch"] = int(parsed["epoch"])
            by_epoch[parsed["epoch"]] = parsed
    return [by_epoch[e] for e in sorted(by_epoch)]


def _write_history(rows: list[dict], csv_path: str, json_path: str) -> None:
    keys = ["epoch"] + sorted({k for r in rows for k in r} - {"epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    with gfile.GFile(csv_path, "w") as f:
        f.write(buf.getvalue())
    with gfile.GFile(json_path, "w") as f:
        json.dump({k: [r.get(k) for r in rows] for k in keys}, f, indent=1)


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def model_info(params: TrainParams) -> dict:
    """What models.build needs (model_io.build_model), from the parameters."""
    return {"variant": params.variant, "latent_dim": params.latent_dim, "beta": params.beta,
            "activity_l1": params.activity_l1, "decoder": params.decoder}


def run(params: TrainParams, ctx: ExecutionContext, *, examples: Artifact, model: Artifact,
        model_run: Artifact) -> dict:
    if distribute.multi_worker_cluster(params.distribute) and not distribute.in_worker_process():
        # The fit runs in a fresh process that makes MultiWorkerMirroredStrategy first.
        return distribute.fit_in_worker_process(params, ctx, examples=examples, model=model,
                                                model_run=model_run)
    log = ctx.log
    input_feature = F.NOISY_IMAGE if params.denoising else F.IMAGE

    if params.denoising and (examples.properties.get("noisy") is False or not examples_io.has_feature(
            examples, "train", F.NOISY_IMAGE)):
        raise StageError(
            f"denoising training needs feature {F.NOISY_IMAGE!r}, but the examples at "
            f"{examples.uri} have none (noisy={examples.properties.get('noisy')}); "
            "set noise.kind to gaussian, salt_pepper or mask")

    keras.utils.set_random_seed(params.seed)
    device, gpus = device_name()
    log.info("train: %s on %s, %d epochs, batch %d, %s lr=%g (%s), input %s", params.variant,
             device, params.epochs, params.batch_size, params.optimizer, params.learning_rate,
             params.lr_schedule, input_feature)

    t_load = time.perf_counter()
    held_out = held_out_counts(params, examples, log)
    # In memory when the parsed splits fit train.memory_budget_mb, else streamed from the
    # shards (interleaved reads, a bounded shuffle buffer, parse after batching, prefetch).
    cache_plan = examples_io.plan_cache(examples, ("train", "validation"),
                                        (input_feature, F.IMAGE), params.memory_budget_mb)
    log.info("train: input pipeline %s", cache_plan.reason)
    train_ds = examples_io.dataset(examples, "train", params.batch_size, input_feature,
                                   shuffle=True, seed=params.seed,
                                   shuffle_buffer=params.shuffle_buffer, cache=cache_plan.cache,
                                   exclude_labels=params.holdout_labels)
    val_ds = examples_io.dataset(examples, "validation", params.batch_size, input_feature,
                                 cache=cache_plan.cache, exclude_labels=params.holdout_labels)
    counts = ({s: c["kept"] for s, c in held_out.items()} if held_out
              else examples.properties.get("counts") or {})
    n_train = int(counts.get("train") or train_ds.reduce(0, lambda n, b: n + tf.shape(b[0])[0]))
    log.info("train: %s %d train / %s validation examples in %.1fs",
             "loaded into memory" if cache_plan.cache else "streaming", n_train,
             counts.get("validation", "?"), time.perf_counter() - t_load)

    # Resumable state (see module docstring); without a work_dir, a throw-away local dir.
    state_dir = posixpath.join(ctx.work_dir, STATE_DIR) if ctx.work_dir else tempfile.mkdtemp(
        prefix="train-state-")
    try:
        metrics = _fit(params, input_feature, train_ds, val_ds, n_train, state_dir, device,
                       gpus, model, model_run, ctx)
    finally:
        if not ctx.work_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
    if held_out:
        metrics.update({f"{split}_examples_held_out": c["left_out"]
                        for split, c in held_out.items()})
    metrics.update(input_pipeline="in_memory" if cache_plan.cache else "streaming",
                   memory_budget_mb=params.memory_budget_mb)
    if cache_plan.needed_bytes is not None:
        metrics["input_mib_parsed"] = round(cache_plan.needed_bytes / 2**20, 1)
    return metrics


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
        examples_io.require_examples_left(total - left_out, total, examples, split,
                                          params.holdout_labels)
        out[split] = {"kept": total - left_out, "left_out": left_out}
        log.info("train: %s split: left out %d of %d examples (held-out classes %s), "
                 "fitting on %d", split, left_out, total, list(params.holdout_labels),
                 total - left_out)
    return out


def _fit(params, input_feature, train_ds, val_ds, n_train, state_dir, device, gpus,
         model_artifact, run_artifact, ctx) -> dict:
    log = ctx.log
    model_uri, run_uri = model_artifact.uri, run_artifact.uri
    # Atomic writes need a local rename; an object store's "rename" is a copy anyway.
    atomic = "://" not in state_dir
    backup = None
    if ctx.work_dir:
        backup = (checkpoints.AtomicBackupAndRestore(
            posixpath.join(ctx.work_dir, BACKUP_DIR),
            posixpath.join(ctx.work_dir, checkpoints.UNUSABLE_DIR), log) if atomic
            else keras.callbacks.BackupAndRestore(posixpath.join(ctx.work_dir, BACKUP_DIR)))
    csv_state = posixpath.join(state_dir, HISTORY_CSV)
    best_state = posixpath.join(state_dir, BEST_WEIGHTS)

    strategy = distribute.strategy(params.distribute, gpus, log)
    train_ds, val_ds = (distribute.distribute_input(d, strategy) for d in (train_ds, val_ds))
    steps_per_execution = params.steps_per_execution
    if steps_per_execution > 1 and isinstance(strategy,
                                              tf.distribute.MultiWorkerMirroredStrategy):
        # Keras' in-graph loop over several steps fails under MWMS (InvalidArgumentError in
        # tests/test_multi_worker.py's two-worker fit), so workers run one step per call.
        log.info("train: train.steps_per_execution=%d runs as 1 under "
                 "MultiWorkerMirroredStrategy", steps_per_execution)
        steps_per_execution = 1
    with precision_policy(params.mixed_precision, gpus, log) as policy:
        with strategy.scope():
            model = model_io.build_model(model_info(params))
            model.compile_for_training(
                make_optimizer(params.optimizer, params.learning_rate, params.lr_schedule,
                               params.epochs * math.ceil(n_train / params.batch_size)),
                jit_compile=params.jit_compile, steps_per_execution=steps_per_execution)
        # The backup is restored before fit, so that the history and the best checkpoint
        # of an attempt whose backup is gone or unusable are not mixed into this one.
        if isinstance(backup, checkpoints.AtomicBackupAndRestore):
            with strategy.scope():
                resuming = backup.restore(model) is not None
        else:  # Keras' own restores in on_train_begin
            resuming = backup is not None and gfile.exists(
                posixpath.join(backup.backup_dir, "training_metadata.json"))
        if not resuming and gfile.exists(state_dir) and ctx.work_dir:
            gfile.rmtree(state_dir)  # leftovers of an attempt whose backup is gone or unusable
        gfile.makedirs(state_dir)
        previous_rows = _read_history(csv_state) if resuming else []
        prior_best = min((r["val_loss"] for r in previous_rows if _finite(r.get("val_loss"))),
                         default=None)
        if resuming:
            log.info("train: resuming from the backup in %s after %d logged epoch(s)",
                     backup.backup_dir, len(previous_rows))
        n_params = int(model.count_params())
        log.info("train: %s, latent_dim %d, %d parameters, precision %s, xla %s, "
                 "%d steps per execution", type(model).__name__, model.latent_dim, n_params,
                 policy, params.jit_compile, steps_per_execution)

        epoch_logger = EpochLogger(log, params.epochs, n_train)
        callbacks = [
            keras.callbacks.TerminateOnNaN(),
            (checkpoints.AtomicModelCheckpoint if atomic else keras.callbacks.ModelCheckpoint)(
                best_state, monitor="val_loss", mode="min",
                                              save_best_only=True, save_weights_only=True,
                                              initial_value_threshold=prior_best),
            keras.callbacks.CSVLogger(csv_state, append=True),
            keras.callbacks.TensorBoard(log_dir=posixpath.join(run_uri, TENSORBOARD_DIR)),
            epoch_logger,
        ]
        if params.early_stopping_patience > 0:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", mode="min", patience=params.early_stopping_patience,
                restore_best_weights=True))
        if backup:
            callbacks.append(backup)

        t0 = time.perf_counter()
        try:
            history = model.fit(train_ds, validation_data=val_ds, epochs=params.epochs,
                                callbacks=callbacks, shuffle=False, verbose=0)
        except tf.errors.ResourceExhaustedError as e:
            raise StageError(f"training ran out of memory (train.batch_size {params.batch_size}): "
                             f"{e.message.splitlines()[0]}") from None
        train_seconds = time.perf_counter() - t0

        losses = history.history.get("loss", [])
        if any(not _finite(v) for v in losses) or any(
                not _finite(v) for v in history.history.get("val_loss", [])):
            raise StageError(
                f"training diverged: non-finite loss at epoch {len(losses)} "
                f"(loss history {losses}); try a lower train.learning_rate "
                f"(now {params.learning_rate})")

        rows = _read_history(csv_state)
        if not rows:
            raise StageError(f"training ran no epochs (history {csv_state} is empty)")
        if not gfile.exists(best_state):
            raise StageError(f"no checkpoint was written to {best_state} (val_loss never finite?)")
        best = min((r for r in rows if _finite(r.get("val_loss"))), key=lambda r: r["val_loss"])

        # The artifact holds the best epoch's weights (what the checkpoint kept).
        gfile.copy(best_state, posixpath.join(model_uri, model_io.WEIGHTS_FILE), overwrite=True)
        info = {
            **model_info(params), "latent_dim": int(model.latent_dim),
            "denoising": params.denoising,
            "input_feature": input_feature, "is_variational": bool(model.is_variational),
            "params": n_params, "keras_version": keras.__version__,
            "holdout_labels": list(params.holdout_labels),
        }
        model_io.write_model_json(model_uri, info)

    _write_history(rows, posixpath.join(run_uri, HISTORY_CSV),
                   posixpath.join(run_uri, HISTORY_JSON))
    if ctx.work_dir:
        gfile.rmtree(state_dir)  # the backup itself is removed by BackupAndRestore

    # Steady state: the first epoch of this process pays for tracing/compilation.
    steady = epoch_logger.train_seconds[1:] or epoch_logger.train_seconds
    images_per_second = n_train * len(steady) / max(sum(steady), 1e-9)
    metrics = {
        "variant": params.variant,
        "latent_dim": int(model.latent_dim),
        "epochs_run": len(rows),
        "best_epoch": int(best["epoch"]) + 1,  # 1-based, as the log shows epochs
        "best_val_loss": round(float(best["val_loss"]), 6),
        "final_loss": round(float(rows[-1]["loss"]), 6),
        "train_seconds": round(train_seconds, 2),
        "epoch_seconds_mean": round(sum(epoch_logger.epoch_seconds)
                                    / max(len(epoch_logger.epoch_seconds), 1), 3),
        "images_per_second": round(images_per_second, 1),
        "train_examples": n_train,
        "device": device,
        "precision": policy,
        "params": n_params,
        "resumed": resuming,
        **({"warnings": [f"unusable training backup moved aside to {p}"
                         for p in getattr(backup, "set_aside", ())]} if getattr(backup, "set_aside", None)
           else {}),
        "holdout_labels": list(params.holdout_labels),
    }
    model_artifact.properties.update({k: info[k] for k in (
        "variant", "latent_dim", "is_variational", "denoising", "input_feature",
        "holdout_labels")})
    model_artifact.properties.update(best_epoch=metrics["best_epoch"],
                                     best_val_loss=metrics["best_val_loss"])
    run_artifact.properties.update(epochs_run=metrics["epochs_run"], device=device)
    log.info("train: done, %d epochs in %.1fs; best epoch %d val_loss %.4f; %.0f images/s "
             "(steady state)", len(rows), train_seconds, metrics["best_epoch"],
             metrics["best_val_loss"], images_per_second)
    return metrics
