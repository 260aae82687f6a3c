"""train: an autoencoder variant from the model zoo (models/), fed by tf.data from the
normalized TFRecords; best-by-validation checkpoint, early stopping, resumable. Owns the
[model] and [train] config keys."""

from __future__ import annotations

import math
from dataclasses import dataclass

import models
from components import features as F
from components.train import distribute as distribution
from pipeline import artifacts
from pipeline.component import Component, Input
from pipeline.config import Params, key, require
from pipeline.errors import ConfigError
from pipeline.views import View

# The names train.optimizer and train.lr_schedule accept; fit.py builds them.
OPTIMIZERS = ("adam", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine")

EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
MODEL_RUN_KEY = "model_run"


@dataclass(frozen=True, kw_only=True)
class TrainParams(Params):
    # The default model: `best` (models/residual.py) reaches conv_pool's 30-epoch quality
    # within its first epoch (bench/README.md, "Time to quality"); conv_pool, the seed
    # reference, stays as its preset (configs/conv_pool.toml).
    variant: str = key("model.variant", "best", f"one of {', '.join(models.VARIANTS)}")
    latent_dim: int = key("model.latent_dim", 0, "code size; 0 = the variant's default")
    beta: float = key("model.beta", 1.0, "KL weight of the VAEs (beta-VAE when != 1)")
    activity_l1: float = key(
        "model.activity_l1", models.SPARSE_L1, "L1 penalty on the code (sparse)"
    )
    decoder: str = key(
        "model.decoder", "transpose", "conv_small: transposed convs or upsample + conv"
    )
    # Training defaults: the best preset's recipe (Adam 3e-3, cosine decay, batch 64) over 5
    # epochs instead of 30, so that `make run` trains in a few minutes on 2 cores.
    epochs: int = key("train.epochs", 5, "maximum epochs")
    batch_size: int = key("train.batch_size", 64, "examples per step")
    optimizer: str = key("train.optimizer", "adam", f"one of {', '.join(OPTIMIZERS)}")
    learning_rate: float = key("train.learning_rate", 3e-3, "initial learning rate")
    lr_schedule: str = key(
        "train.lr_schedule", "cosine", "constant, or cosine: decays to 1% over the planned epochs"
    )
    seed: int = key("train.seed", 42, "the run seed (weights, shuffling, noise, subsamples)")
    early_stopping_patience: int = key(
        "train.early_stopping_patience", 10, "epochs without val_loss improvement; 0 = off"
    )
    shuffle_buffer: int = key(
        "train.shuffle_buffer",
        60000,
        "examples shuffled together (>= the split size: a full shuffle)",
    )
    memory_budget_mb: int = key(
        "train.memory_budget_mb",
        1024,
        "host memory for the parsed train + validation images; data that fit (counts x "
        "bytes per example) are held in memory, larger data stream from the TFRecord shards "
        "(bounded shuffle buffer); 0 = always stream",
    )
    mixed_precision: bool = key(
        "train.mixed_precision", False, "GPU only: float16 compute, float32 weights"
    )
    # Measured on CPU (bench/README.md, "Training speed"): XLA takes 1.6x the CPU per image for
    # conv_pool, so it stays off; several steps per call save the per-batch Python round trip.
    jit_compile: bool = key(
        "train.jit_compile", False, "XLA; off by default: slower on CPU, try true on a GPU"
    )
    steps_per_execution: int = key(
        "train.steps_per_execution",
        32,
        "train steps per compiled call (an in-graph loop): Keras callbacks see every Nth "
        "batch, epochs as before; 1 = Keras' default, one Python round trip per batch "
        "(multi-worker fits always run 1)",
    )
    distribute: str = key(
        "train.distribute",
        "auto",
        f"one of {', '.join(distribution.MODES)}: auto = mirrored over several local GPUs, "
        "else one device, and multi_worker when TF_CONFIG names several workers "
        "(components/train/distribute.py); train.batch_size stays the global batch",
    )
    holdout_labels: tuple[int, ...] = key(
        "data.holdout_labels",
        (),
        "classes left out of train and validation (test keeps them): evaluate measures how "
        "well the anomaly score tells them apart",
    )
    noise_kind: str = key("noise.kind")  # a noisy input means a denoising fit

    @property
    def denoising(self) -> bool:
        return self.noise_kind != "none"

    def check(self) -> None:
        try:
            models.check_args(self.variant, self.latent_dim, self.decoder)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        # Checked for every variant, not only those that read them (VAEs, sparse).
        require(0.0 <= self.beta < math.inf, "model.beta", "a finite number >= 0", self.beta)
        require(
            0.0 <= self.activity_l1 < math.inf,
            "model.activity_l1",
            "a finite number >= 0",
            self.activity_l1,
        )
        require(1 <= self.epochs <= 10000, "train.epochs", "1..10000", self.epochs)
        require(1 <= self.batch_size <= 65536, "train.batch_size", "1..65536", self.batch_size)
        require(
            self.optimizer in OPTIMIZERS,
            "train.optimizer",
            f"one of {tuple(OPTIMIZERS)}",
            self.optimizer,
        )
        require(
            0.0 < self.learning_rate < 10.0,
            "train.learning_rate",
            "a rate in (0, 10)",
            self.learning_rate,
        )
        require(
            self.lr_schedule in LR_SCHEDULES,
            "train.lr_schedule",
            f"one of {LR_SCHEDULES}",
            self.lr_schedule,
        )
        require(0 <= self.seed < 2**31, "train.seed", "0..2**31-1", self.seed)
        require(
            self.early_stopping_patience >= 0,
            "train.early_stopping_patience",
            ">= 0 (0 = off)",
            self.early_stopping_patience,
        )
        require(self.shuffle_buffer >= 1, "train.shuffle_buffer", ">= 1", self.shuffle_buffer)
        require(
            self.memory_budget_mb >= 0,
            "train.memory_budget_mb",
            ">= 0 (0 = always stream)",
            self.memory_budget_mb,
        )
        # Increasing order, so one set of classes has one cache key and one lineage.
        require(
            all(0 <= c < F.NUM_CLASSES for c in self.holdout_labels)
            and list(self.holdout_labels) == sorted(set(self.holdout_labels))
            and len(self.holdout_labels) < F.NUM_CLASSES - 1,
            "data.holdout_labels",
            f"distinct class indices 0..{F.NUM_CLASSES - 1} in "
            "increasing order, leaving at least two classes to train on",
            list(self.holdout_labels),
        )
        require(
            self.steps_per_execution >= 1,
            "train.steps_per_execution",
            ">= 1",
            self.steps_per_execution,
        )
        require(
            self.distribute in distribution.MODES,
            "train.distribute",
            f"one of {distribution.MODES}",
            self.distribute,
        )
        distribution.multi_worker_cluster(self.distribute)  # a usable TF_CONFIG, when needed


TRAIN = Component(
    name="train",
    inputs={EXAMPLES_KEY: Input(artifacts.EXAMPLES)},
    outputs={MODEL_KEY: artifacts.MODEL, MODEL_RUN_KEY: artifacts.MODEL_RUN},
    params=TrainParams,
    executor_module="components.train.executor",
    description="fit the autoencoder (GPU when visible)",
    view=View(headline=("best_val_loss", "best_epoch", "epochs_run", "images_per_second")),
    kind="accelerator",
)
