"""train component: artifacts, learning, denoising input, NaN guard, resume after a crash,
the parameters' checks."""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import os
import re

import keras
import numpy as np
import pytest

import models
from components.train import component as train_component
from components.train import fit as train_fit
from components.train import model_io
from pipeline.artifacts import MODEL, Artifact
from pipeline.component import ExecutionContext
from pipeline.errors import ConfigError, StageError
from tests.helpers import (
    output_artifacts,
    params,
    run_executor,
    synthetic_images,
    without_labels,
    write_examples_artifact,
)

# What evaluate and export need to rebuild the model; train writes every one of them.
MODEL_JSON_KEYS = ("variant", "latent_dim", "beta", "activity_l1", "decoder", "input_feature")


def dense(epochs: int, *overrides: str):
    """Train parameters from the real config: the dense variant for a short run, without
    early stopping (so exactly `epochs` epochs run)."""
    return params(
        "train",
        "model.variant=dense",
        f"train.epochs={epochs}",
        "train.early_stopping_patience=0",
        *overrides,
    )


def history_rows(model_run: Artifact) -> list[dict]:
    with open(os.path.join(model_run.uri, model_io.HISTORY_CSV)) as f:
        return list(csv.DictReader(f))


def test_dense_learns_and_writes_its_artifacts(normalized_examples, tmp_path, caplog):
    epochs = 8
    outputs = output_artifacts("train", tmp_path)
    p = dense(epochs)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        metrics = run_executor("train", p, {"examples": normalized_examples}, outputs)

    model_dir, run_dir = outputs["model"].uri, outputs["model_run"].uri
    assert os.path.getsize(os.path.join(model_dir, "model.weights.h5")) > 0
    info = json.load(open(os.path.join(model_dir, "model.json")))
    # Everything model_io.build_model needs is written (it fills in no defaults).
    assert {k: info[k] for k in MODEL_JSON_KEYS} == {
        "variant": "dense",
        "latent_dim": 32,
        "beta": p.beta,
        "activity_l1": p.activity_l1,
        "decoder": p.decoder,
        "input_feature": "image",
    }
    assert info["denoising"] is False and info["is_variational"] is False

    rows = history_rows(outputs["model_run"])
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    losses = [float(r["loss"]) for r in rows]
    val_losses = [float(r["val_loss"]) for r in rows]
    assert losses[-1] < 0.9 * losses[0], losses
    history = json.load(open(os.path.join(run_dir, "history.json")))
    assert history["loss"] == pytest.approx(losses)
    events = [f for _, _, files in os.walk(os.path.join(run_dir, "tensorboard")) for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)

    assert metrics["epochs_run"] == epochs
    assert metrics["best_val_loss"] == pytest.approx(min(val_losses), rel=1e-5)
    assert metrics["best_epoch"] == int(np.argmin(val_losses)) + 1
    assert metrics["final_loss"] == pytest.approx(losses[-1], rel=1e-5)
    assert metrics["images_per_second"] > 0 and math.isfinite(metrics["train_seconds"])
    # Whatever this machine trains on (CPU or GPU), as the executor itself reports it.
    device, _ = train_fit.device_name()
    assert metrics["device"] == device and outputs["model_run"].properties["device"] == device
    assert metrics["precision"] == "float32"  # train.mixed_precision is off by default
    assert metrics["params"] == 784 * 32 + 32 + 32 * 784 + 784
    assert outputs["model"].properties["best_epoch"] == metrics["best_epoch"]
    json.dumps(metrics)  # goes into the run summary

    log = caplog.text
    assert f"epoch {epochs}/{epochs}" in log and "images/s" in log and device in log

    # The artifact holds the best epoch's weights: rebuilt, it scores best_val_loss again.
    from components import examples_io

    model = model_io.load_model(outputs["model"])
    model.compile_for_training(keras.optimizers.Adam())
    val = examples_io.dataset(normalized_examples, "validation", 64)
    assert model.evaluate(val, verbose=0, return_dict=True)["loss"] == pytest.approx(
        metrics["best_val_loss"], rel=1e-4
    )


def test_mixed_precision_is_used_on_a_gpu_only(normalized_examples, tmp_path, caplog):
    _, gpus = train_fit.device_name()
    outputs = output_artifacts("train", tmp_path)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        metrics = run_executor(
            "train",
            dense(1, "train.mixed_precision=true"),
            {"examples": normalized_examples},
            outputs,
        )
    if gpus:
        assert metrics["precision"] == "mixed_float16"
        assert "needs a GPU" not in caplog.text
    else:  # asked for without a GPU: warned about and ignored
        assert metrics["precision"] == "float32"
        assert "train.mixed_precision=true needs a GPU" in caplog.text
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards


def test_denoising_trains_on_noisy_input(normalized_examples, tmp_path):
    outputs = output_artifacts("train", tmp_path)
    p = dense(1, "noise.kind=gaussian")
    assert p.denoising
    run_executor("train", p, {"examples": normalized_examples}, outputs)
    info = json.load(open(os.path.join(outputs["model"].uri, "model.json")))
    assert info["denoising"] is True and info["input_feature"] == "noisy_image"
    assert outputs["model"].properties["input_feature"] == "noisy_image"


@pytest.fixture(scope="module")
def clean_only_examples(tmp_path_factory):
    """Normalized examples without noisy_image (transform with noise.kind = none)."""
    splits = {}
    for split, n, seed in (("train", 64, 1), ("validation", 16, 2), ("test", 16, 3)):
        images, labels = synthetic_images(n, seed)
        splits[split] = (images.astype(np.float32) / 255.0, labels)
    return write_examples_artifact(
        str(tmp_path_factory.mktemp("clean") / "examples"), splits, normalized=True, noisy=None
    )


def test_denoising_requires_noisy_image(clean_only_examples, tmp_path):
    with pytest.raises(StageError, match="noisy_image"):
        run_executor(
            "train",
            dense(1, "noise.kind=gaussian"),
            {"examples": clean_only_examples},
            output_artifacts("train", tmp_path),
        )


def test_nan_loss_fails_the_stage(tmp_path):
    images, labels = synthetic_images(64, 0)
    x = images.astype(np.float32) / 255.0
    x[5, 3, 3] = np.nan  # one poisoned pixel
    examples = write_examples_artifact(
        str(tmp_path / "examples"),
        {"train": (x, labels), "validation": (x[:16], labels[:16])},
        normalized=True,
    )
    with pytest.raises(StageError, match="non-finite loss"):
        run_executor(
            "train", dense(3), {"examples": examples}, output_artifacts("train", tmp_path / "out")
        )


def test_several_steps_per_execution_train_exactly_as_one(normalized_examples, tmp_path):
    """train.steps_per_execution only changes how often Python sees a batch: the same
    batches in the same order make the same updates, so the per-epoch history, the best
    epoch (checkpoint, early stopping) and the weights match one step per call. Batch 48
    over 320 examples is 7 steps per epoch, run as 3 + 3 + 1 (a short last call) at 3."""

    def fit(steps: int, name: str):
        outputs = output_artifacts("train", tmp_path / name)
        metrics = run_executor(
            "train",
            dense(
                6,
                "train.batch_size=48",
                "train.early_stopping_patience=2",
                f"train.steps_per_execution={steps}",
            ),
            {"examples": normalized_examples},
            outputs,
        )
        weights = model_io.load_model(outputs["model"]).get_weights()
        return metrics, history_rows(outputs["model_run"]), weights

    one, one_rows, one_weights = fit(1, "one")
    three, three_rows, three_weights = fit(3, "three")
    assert [r["epoch"] for r in three_rows] == [r["epoch"] for r in one_rows]
    for key in ("loss", "val_loss", "mse", "val_mse"):
        assert [float(r[key]) for r in three_rows] == pytest.approx(
            [float(r[key]) for r in one_rows], rel=1e-4
        ), key
    assert (three["best_epoch"], three["epochs_run"]) == (one["best_epoch"], one["epochs_run"])
    for a, b in zip(three_weights, one_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_interrupted_training_resumes_from_the_backup(normalized_examples, tmp_path, monkeypatch):
    epochs, crash_at = 4, 2  # crash after 0-based epoch 2 was logged but before its backup
    work_dir = str(tmp_path / "work")
    original = train_fit.EpochLogger.on_epoch_end

    def crashing(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == crash_at:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(train_fit.EpochLogger, "on_epoch_end", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_executor(
            "train",
            dense(epochs),
            {"examples": normalized_examples},
            output_artifacts("train", tmp_path / "a"),
            ExecutionContext(work_dir=work_dir),
        )
    newest = sorted(glob.glob(os.path.join(work_dir, "backup", "epoch-*")))[-1]
    meta = json.load(open(os.path.join(newest, "training_metadata.json")))
    assert meta["epoch"] == crash_at  # epochs 0 .. crash_at-1 are backed up

    monkeypatch.setattr(train_fit.EpochLogger, "on_epoch_end", original)
    outputs = output_artifacts("train", tmp_path / "b")
    metrics = run_executor(
        "train",
        dense(epochs),
        {"examples": normalized_examples},
        outputs,
        ExecutionContext(work_dir=work_dir),
    )
    assert metrics["resumed"] is True
    assert metrics["epochs_run"] == epochs
    # One row per epoch over both attempts (epoch 2 ran twice; the resumed run's row is kept).
    rows = history_rows(outputs["model_run"])
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    assert metrics["best_val_loss"] == pytest.approx(
        min(float(r["val_loss"]) for r in rows), rel=1e-5
    )
    assert not os.path.exists(os.path.join(work_dir, "backup"))
    assert not os.path.exists(os.path.join(work_dir, train_fit.STATE_DIR))


# --- components/examples_io.py: the input pipeline train / evaluate / export share -------------


def _epoch_ids(ds) -> list[list[float]]:
    """Per batch element, a fingerprint of x and of y (pixel sums) to follow examples."""
    return [
        (round(float(x.sum()), 3), round(float(y.sum()), 3))
        for xb, yb in ds
        for x, y in zip(xb.numpy(), yb.numpy())
    ]


def test_dataset_epochs_are_reproducible_shuffles_of_every_example(normalized_examples):
    from components import examples_io

    split = examples_io.load_split(normalized_examples, "train")
    assert split["image"].shape == (320, 28, 28, 1) and split["noisy_image"].shape == (
        320,
        28,
        28,
        1,
    )
    assert split["label"].dtype == np.int64 and split["id"][0].startswith("train-")
    pairs = sorted(
        (round(float(n.sum()), 3), round(float(c.sum()), 3))
        for n, c in zip(split["noisy_image"], split["image"])
    )

    ds = examples_io.dataset(normalized_examples, "train", 64, "noisy_image", shuffle=True, seed=3)
    epoch1, epoch2 = _epoch_ids(ds), _epoch_ids(ds)
    # Every example once per epoch, x = noisy input paired with y = its clean target.
    assert sorted(epoch1) == pairs and sorted(epoch2) == pairs
    assert epoch1 != epoch2  # reshuffled each epoch ...
    again = examples_io.dataset(
        normalized_examples, "train", 64, "noisy_image", shuffle=True, seed=3
    )
    assert _epoch_ids(again) == epoch1  # ... reproducibly from the seed
    shapes = [tuple(x.shape) for x, _ in ds]
    assert shapes == [(64, 28, 28, 1)] * 5

    # The streaming (uncached) path yields the same examples.
    streamed = examples_io.dataset(
        normalized_examples,
        "train",
        50,
        "noisy_image",
        shuffle=True,
        seed=3,
        shuffle_buffer=100,
        cache=False,
    )
    assert sorted(_epoch_ids(streamed)) == pairs


def test_dataset_leaves_out_the_held_out_classes(normalized_examples):
    """Cached and streamed: exactly the examples of the other classes, each once, x and y
    still paired."""
    from components import examples_io

    split = without_labels(examples_io.load_split(normalized_examples, "train"), (9, 3))
    assert len(split["label"]) < 320 and not np.isin(split["label"], (3, 9)).any()
    pairs = sorted(
        (round(float(n.sum()), 3), round(float(c.sum()), 3))
        for n, c in zip(split["noisy_image"], split["image"])
    )
    for cache in (True, False):
        ds = examples_io.dataset(
            normalized_examples,
            "train",
            64,
            "noisy_image",
            shuffle=True,
            seed=3,
            shuffle_buffer=100,
            cache=cache,
            exclude_labels=(9, 3),
        )
        assert sorted(_epoch_ids(ds)) == pairs, cache
    per_class = examples_io.label_counts(normalized_examples, "train")
    assert per_class.sum() == 320 and len(split["label"]) == 320 - per_class[[3, 9]].sum()


def test_training_with_held_out_classes_never_fits_on_them(
    normalized_examples, tmp_path, caplog, monkeypatch
):
    from components import examples_io

    train_counts = examples_io.label_counts(normalized_examples, "train")
    val_counts = examples_io.label_counts(normalized_examples, "validation")
    assert train_counts[9] > 0 and val_counts[9] > 0  # the fixture has some to leave out
    # Record the datasets train builds (the real ones) to look at what fit iterated over.
    built, dataset = {}, examples_io.dataset

    def recording_dataset(examples, split, *args, **kwargs):
        built[split] = dataset(examples, split, *args, **kwargs)
        return built[split]

    monkeypatch.setattr(examples_io, "dataset", recording_dataset)
    outputs = output_artifacts("train", tmp_path)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        metrics = run_executor(
            "train", dense(1, "data.holdout_labels=[9]"), {"examples": normalized_examples}, outputs
        )
    monkeypatch.undo()
    for split in ("train", "validation"):
        kept = without_labels(examples_io.load_split(normalized_examples, split), (9,))
        assert sorted(round(float(x.sum()), 3) for x, _ in _unbatched(built[split])) == sorted(
            round(float(x.sum()), 3) for x in kept["image"]
        ), split
    assert metrics["train_examples"] == 320 - train_counts[9]
    assert metrics["train_examples_held_out"] == train_counts[9]
    assert metrics["validation_examples_held_out"] == val_counts[9]
    assert metrics["holdout_labels"] == [9]
    assert f"left out {train_counts[9]} of 320 examples" in caplog.text
    # the model says which classes it never saw (evaluate and export read it)
    info = json.load(open(os.path.join(outputs["model"].uri, "model.json")))
    assert info["holdout_labels"] == [9] == outputs["model"].properties["holdout_labels"]
    assert model_io.holdout_labels(info) == (9,)
    # ... and a normal model says none
    assert model_io.holdout_labels({}) == ()


def _unbatched(ds):
    return [(x, y) for xb, yb in ds for x, y in zip(xb.numpy(), yb.numpy())]


def test_held_out_classes_that_leave_a_split_empty_are_a_data_error(tmp_path):
    from pipeline.errors import DataError

    images, labels = synthetic_images(48, 0)
    x = images.astype(np.float32) / 255.0
    labels[32:] = 9  # the validation split: class 9 only
    examples = write_examples_artifact(
        str(tmp_path / "examples"),
        {"train": (x[:32], labels[:32]), "validation": (x[32:], labels[32:])},
        normalized=True,
    )
    with pytest.raises(
        DataError,
        match=r"split 'validation' .* no examples left after leaving "
        r"out classes \[9\] \(data.holdout_labels\)",
    ):
        run_executor(
            "train",
            dense(1, "data.holdout_labels=[9]"),
            {"examples": examples},
            output_artifacts("train", tmp_path / "out"),
        )


def test_corrupt_shard_is_a_data_error_naming_the_file(normalized_examples, tmp_path):
    import shutil

    from components import examples_io
    from pipeline.errors import DataError

    copy = tmp_path / "examples"
    shutil.copytree(normalized_examples.uri, copy)
    bad = sorted((copy / "Split-test").glob("data-*"))[1]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated gzip
    broken = Artifact(normalized_examples.type, str(copy), dict(normalized_examples.properties))
    with pytest.raises(DataError, match=bad.name):
        examples_io.load_split(broken, "test")


def test_cosine_schedule_decays_to_one_percent_and_constant_stays():
    from components.train.fit import make_optimizer

    opt = make_optimizer("adam", 1e-3, "cosine", total_steps=100)
    schedule = opt._learning_rate
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(0.5 * 1e-3 * (1 + 0.01), rel=1e-3)
    assert float(schedule(100)) == pytest.approx(1e-5)
    constant = make_optimizer("rmsprop", 2e-3, "constant", total_steps=100)
    assert isinstance(constant, keras.optimizers.RMSprop)
    assert float(constant.learning_rate) == pytest.approx(2e-3)
    sgd = make_optimizer("sgd", 1e-2, "constant", total_steps=100)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == pytest.approx(0.9)


def test_every_optimizer_and_schedule_the_config_accepts_is_built():
    for name in train_component.OPTIMIZERS:
        for schedule in train_component.LR_SCHEDULES:
            p = params("train", f"train.optimizer={name}", f"train.lr_schedule={schedule}")
            assert (p.optimizer, p.lr_schedule) == (name, schedule)
            opt = train_fit.make_optimizer(p.optimizer, p.learning_rate, p.lr_schedule, 10)
            assert isinstance(opt, keras.optimizers.Optimizer)


@pytest.mark.parametrize(
    "overrides, preset, key",
    [
        (["model.latent_dim=32"], "conv_pool", "model.latent_dim"),  # fixed at 256
        (["model.latent_dim=256"], "denoise", "model.latent_dim"),  # fixed at 512
        (["model.latent_dim=5000"], None, "model.latent_dim"),
        (["model.variant=resnet"], None, "model.variant"),
        (["model.decoder=pixelshuffle"], "conv_small", "model.decoder"),
        (["model.beta=-1"], "vae_mlp", "model.beta"),
        (["model.activity_l1=-0.1"], "sparse", "model.activity_l1"),
        (["train.optimizer=lbfgs"], None, "train.optimizer"),
        (["train.lr_schedule=step"], None, "train.lr_schedule"),
        (["train.learning_rate=0"], None, "train.learning_rate"),
        (["train.epochs=0"], None, "train.epochs"),
        (["train.batch_size=0"], None, "train.batch_size"),
        (["train.early_stopping_patience=-1"], None, "train.early_stopping_patience"),
        (["train.steps_per_execution=0"], None, "train.steps_per_execution"),
        (["data.holdout_labels=[10]"], None, "data.holdout_labels"),
        (["data.holdout_labels=[9, 9]"], None, "data.holdout_labels"),
        (["data.holdout_labels=[0, 1, 2, 3, 4, 5, 6, 7, 8]"], None, "data.holdout_labels"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(overrides, preset, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        params("train", *overrides, preset=preset)


def test_model_checks_are_the_zoos():
    # TrainParams.check defers to models.check_args: what the zoo builds, the config accepts.
    for variant in models.VARIANTS:
        p = params(
            "train",
            f"model.variant={variant}",
            f"model.latent_dim={models.DEFAULT_LATENT[variant]}",
        )
        assert (p.variant, p.latent_dim) == (variant, models.DEFAULT_LATENT[variant])
    with pytest.raises(ValueError) as zoo:
        models.check_args("conv_pool", 32)
    with pytest.raises(ConfigError) as config:
        params("train", "model.variant=conv_pool", "model.latent_dim=32")
    assert str(zoo.value) in str(config.value)


def _model_json(**drop) -> dict:
    info = {
        "variant": "dense",
        "latent_dim": 8,
        "beta": 1.0,
        "activity_l1": 1e-5,
        "decoder": "transpose",
        "input_feature": "image",
    }
    return {k: v for k, v in info.items() if k not in drop}


@pytest.mark.parametrize("missing", MODEL_JSON_KEYS)
def test_model_json_without_a_needed_key_is_rejected(tmp_path, missing):
    model_io.write_model_json(str(tmp_path), _model_json(**{missing: True}))
    with pytest.raises(StageError, match=f"missing key '{missing}'"):
        model_io.read_model_json(Artifact(MODEL, str(tmp_path)))


@pytest.mark.parametrize("missing", ["variant", "latent_dim", "beta", "activity_l1", "decoder"])
def test_build_model_fills_in_no_defaults(missing):
    assert model_io.build_model(_model_json()).latent_dim == 8
    with pytest.raises(StageError, match=f"cannot build model: '{missing}'"):
        model_io.build_model(_model_json(**{missing: True}))
