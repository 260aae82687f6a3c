"""train component: artifacts, learning, denoising input, NaN guard, resume after a crash."""

from __future__ import annotations

import csv
import json
import logging
import math
import os

import keras
import numpy as np
import pytest

from components.train import executor as train_executor
from components.train import model_io
from components.train.component import COMPONENT
from conftest import synthetic_images, write_examples_artifact
from pipeline.artifacts import MODEL, MODEL_RUN, Artifact
from pipeline.component import ExecutionContext, run_executor
from pipeline.errors import StageError


def train_params(variant="dense", epochs=2, denoising=False, **train):
    params = {
        "model": {"variant": variant, "latent_dim": 0, "beta": 1.0, "activity_l1": 1e-5,
                  "decoder": "transpose"},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": "adam", "learning_rate": 3e-3,
                  "seed": 7, "early_stopping_patience": 0, "shuffle_buffer": 1000,
                  "mixed_precision": False, "jit_compile": False, "steps_per_execution": 1},
        "denoising": denoising,
    }
    params["train"].update(train)
    return params


def make_outputs(root) -> dict[str, Artifact]:
    outputs = {"model": Artifact(MODEL, str(root / "model")),
               "model_run": Artifact(MODEL_RUN, str(root / "model_run"))}
    for artifact in outputs.values():
        os.makedirs(artifact.uri)
    return outputs


def history_rows(model_run: Artifact) -> list[dict]:
    with open(os.path.join(model_run.uri, "history.csv")) as f:
        return list(csv.DictReader(f))


def test_dense_learns_and_writes_its_artifacts(normalized_examples, tmp_path, caplog):
    epochs = 8
    outputs = make_outputs(tmp_path)
    # mixed precision is asked for but there is no GPU: warned about and ignored.
    params = train_params("dense", epochs=epochs, mixed_precision=True)
    with caplog.at_level(logging.INFO, logger="pipeline"):
        metrics = run_executor(COMPONENT, {"examples": normalized_examples}, outputs, params,
                               ExecutionContext())

    model_dir, run_dir = outputs["model"].uri, outputs["model_run"].uri
    assert os.path.getsize(os.path.join(model_dir, "model.weights.h5")) > 0
    info = json.load(open(os.path.join(model_dir, "model.json")))
    assert info["variant"] == "dense" and info["latent_dim"] == 32
    assert info["input_feature"] == "image" and info["denoising"] is False
    assert info["is_variational"] is False

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
    assert metrics["device"].startswith("CPU") and metrics["precision"] == "float32"
    assert metrics["params"] == 784 * 32 + 32 + 32 * 784 + 784
    assert outputs["model"].properties["best_epoch"] == metrics["best_epoch"]
    json.dumps(metrics)  # goes into the run summary

    assert keras.mixed_precision.global_policy().name == "float32"
    log = caplog.text
    assert "mixed_precision" in log and f"epoch {epochs}/{epochs}" in log and "images/s" in log

    # The artifact holds the best epoch's weights: rebuilt, it scores best_val_loss again.
    from components import examples_io
    model = model_io.load_model(outputs["model"])
    model.compile_for_training(keras.optimizers.Adam())
    val = examples_io.dataset(normalized_examples, "validation", 64)
    assert model.evaluate(val, verbose=0, return_dict=True)["loss"] == pytest.approx(
        metrics["best_val_loss"], rel=1e-4)


def test_denoising_trains_on_noisy_input(normalized_examples, tmp_path):
    outputs = make_outputs(tmp_path)
    run_executor(COMPONENT, {"examples": normalized_examples}, outputs,
                 train_params("dense", epochs=1, denoising=True), ExecutionContext())
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
    return write_examples_artifact(str(tmp_path_factory.mktemp("clean") / "examples"), splits,
                                   normalized=True, noisy=None)


def test_denoising_requires_noisy_image(clean_only_examples, tmp_path):
    with pytest.raises(StageError, match="noisy_image"):
        run_executor(COMPONENT, {"examples": clean_only_examples}, make_outputs(tmp_path),
                     train_params("dense", epochs=1, denoising=True), ExecutionContext())


def test_nan_loss_fails_the_stage(tmp_path):
    images, labels = synthetic_images(64, 0)
    x = images.astype(np.float32) / 255.0
    x[5, 3, 3] = np.nan  # one poisoned pixel
    examples = write_examples_artifact(
        str(tmp_path / "examples"), {"train": (x, labels), "validation": (x[:16], labels[:16])},
        normalized=True)
    with pytest.raises(StageError, match="non-finite loss"):
        run_executor(COMPONENT, {"examples": examples}, make_outputs(tmp_path / "out"),
                     train_params("dense", epochs=3), ExecutionContext())


def test_interrupted_training_resumes_from_the_backup(normalized_examples, tmp_path,
                                                      monkeypatch):
    epochs, crash_at = 4, 2  # crash after 0-based epoch 2 was logged but before its backup
    work_dir = str(tmp_path / "work")
    original = train_executor.EpochLogger.on_epoch_end

    def crashing(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == crash_at:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(train_executor.EpochLogger, "on_epoch_end", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_executor(COMPONENT, {"examples": normalized_examples}, make_outputs(tmp_path / "a"),
                     train_params("dense", epochs=epochs), ExecutionContext(work_dir=work_dir))
    assert os.path.exists(os.path.join(work_dir, "backup", "training_metadata.json"))
    meta = json.load(open(os.path.join(work_dir, "backup", "training_metadata.json")))
    assert meta["epoch"] == crash_at  # epochs 0 .. crash_at-1 are backed up

    monkeypatch.setattr(train_executor.EpochLogger, "on_epoch_end", original)
    outputs = make_outputs(tmp_path / "b")
    metrics = run_executor(COMPONENT, {"examples": normalized_examples}, outputs,
                           train_params("dense", epochs=epochs),
                           ExecutionContext(work_dir=work_dir))
    assert metrics["resumed"] is True
    assert metrics["epochs_run"] == epochs
    # One row per epoch over both attempts (epoch 2 ran twice; the resumed run's row is kept).
    rows = history_rows(outputs["model_run"])
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    assert metrics["best_val_loss"] == pytest.approx(min(float(r["val_loss"]) for r in rows),
                                                     rel=1e-5)
    assert not os.path.exists(os.path.join(work_dir, "backup"))
    assert not os.path.exists(os.path.join(work_dir, train_executor.STATE_DIR))


# --- components/examples_io.py: the input pipeline train / evaluate / export share -------------

def _epoch_ids(ds) -> list[list[float]]:
    """Per batch element, a fingerprint of x and of y (pixel sums) to follow examples."""
    return [(round(float(x.sum()), 3), round(float(y.sum()), 3))
            for xb, yb in ds for x, y in zip(xb.numpy(), yb.numpy())]


def test_dataset_epochs_are_reproducible_shuffles_of_every_example(normalized_examples):
    from components import examples_io

    split = examples_io.load_split(normalized_examples, "train")
    assert split["image"].shape == (320, 28, 28, 1) and split["noisy_image"].shape == (
        320, 28, 28, 1)
    assert split["label"].dtype == np.int64 and split["id"][0].startswith("train-")
    pairs = sorted((round(float(n.sum()), 3), round(float(c.sum()), 3))
                   for n, c in zip(split["noisy_image"], split["image"]))

    ds = examples_io.dataset(normalized_examples, "train", 64, "noisy_image", shuffle=True,
                             seed=3)
    epoch1, epoch2 = _epoch_ids(ds), _epoch_ids(ds)
    # Every example once per epoch, x = noisy input paired with y = its clean target.
    assert sorted(epoch1) == pairs and sorted(epoch2) == pairs
    assert epoch1 != epoch2  # reshuffled each epoch ...
    again = examples_io.dataset(normalized_examples, "train", 64, "noisy_image", shuffle=True,
                                seed=3)
    assert _epoch_ids(again) == epoch1  # ... reproducibly from the seed
    shapes = [tuple(x.shape) for x, _ in ds]
    assert shapes == [(64, 28, 28, 1)] * 5

    # The streaming (uncached) path yields the same examples.
    streamed = examples_io.dataset(normalized_examples, "train", 50, "noisy_image",
                                   shuffle=True, seed=3, shuffle_buffer=100, cache=False)
    assert sorted(_epoch_ids(streamed)) == pairs


def test_corrupt_shard_is_a_data_error_naming_the_file(normalized_examples, tmp_path):
    import shutil

    from components import examples_io
    from pipeline.errors import DataError

    copy = tmp_path / "examples"
    shutil.copytree(normalized_examples.uri, copy)
    bad = sorted((copy / "Split-test").glob("data-*"))[1]
    bad.write_bytes(bad.read_bytes()[: 300])  # truncated gzip
    broken = Artifact(normalized_examples.type, str(copy), dict(normalized_examples.properties))
    with pytest.raises(DataError, match=bad.name):
        examples_io.load_split(broken, "test")


def test_cosine_schedule_decays_to_one_percent_and_bad_names_fail():
    from components.train.executor import make_optimizer

    opt = make_optimizer("adam", 1e-3, "cosine", total_steps=100)
    schedule = opt._learning_rate
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(0.5 * 1e-3 * (1 + 0.01), rel=1e-3)
    assert float(schedule(100)) == pytest.approx(1e-5)
    assert float(make_optimizer("rmsprop", 2e-3).learning_rate) == pytest.approx(2e-3)
    with pytest.raises(StageError, match="train.lr_schedule"):
        make_optimizer("adam", 1e-3, "step")
