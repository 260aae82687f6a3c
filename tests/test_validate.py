"""validate: TFDV statistics and the curated raw schema catch bad data, naming split and feature."""

import os

import numpy as np
import pytest
import tensorflow_data_validation as tfdv

from pipeline.errors import DataAnomalyError
from tests.helpers import (output_artifacts, params, run_executor, synthetic_images,
                           write_examples_artifact)


def _raw(tmp_path, mutate=None, float_images=False):
    splits = {}
    for split, n, seed in (("train", 120, 1), ("validation", 30, 2), ("test", 60, 3)):
        images, labels = synthetic_images(n, seed)
        images = images.astype(np.float32 if float_images else np.int64)
        if mutate:
            images, labels = mutate(split, images, labels)
        splits[split] = (images, labels)
    return write_examples_artifact(str(tmp_path / "raw"), splits, normalized=float_images)


def _validate(tmp_path, examples, outs=None):
    outs = outs if outs is not None else output_artifacts("validate", tmp_path)
    return run_executor("validate", params("validate"), {"examples": examples}, outs), outs


def test_clean_data_passes_and_writes_tfdv_artifacts(tmp_path):
    metrics, outs = _validate(tmp_path, _raw(tmp_path))
    assert metrics["anomalous_splits"] == []
    # What transform reads (its raw_anomalies input): no anomalous split, every split checked.
    assert outs["anomalies"].properties["anomalous_splits"] == []
    assert outs["anomalies"].properties["splits"] == ["train", "validation", "test"]
    assert metrics["splits"]["train"]["num_examples"] == 120
    test_images, _ = synthetic_images(60, 3)
    assert metrics["splits"]["test"]["pixel_max"] == float(test_images.max()) <= 255
    assert metrics["splits"]["test"]["pixel_min"] == float(test_images.min())
    stats = tfdv.load_stats_binary(os.path.join(outs["statistics"].uri, "Split-test", "FeatureStats.pb"))
    names = {"/".join(f.path.step) for f in stats.datasets[0].features}
    assert names == {"id", "label", "image"}
    assert os.path.getsize(os.path.join(outs["statistics"].uri, "Split-train", "statistics.html")) > 1000
    assert os.path.exists(os.path.join(outs["anomalies"].uri, "Split-train", "SchemaDiff.pb"))
    assert "test" in metrics["label_drift"]


def test_out_of_range_pixels_stop_the_run(tmp_path):
    def mutate(split, images, labels):
        if split == "validation":
            images[3, 5, 5] = 300
        return images, labels

    outs = output_artifacts("validate", tmp_path)
    with pytest.raises(DataAnomalyError) as e:
        _validate(tmp_path, _raw(tmp_path, mutate), outs)
    assert "validation/image" in str(e.value)
    assert "train/" not in str(e.value)
    # The published anomalies artifact names the split, so transform refuses these examples.
    assert outs["anomalies"].properties["anomalous_splits"] == ["validation"]
    anomalies = tfdv.load_anomalies_text(
        os.path.join(tmp_path, "anomalies", "Split-validation", "anomalies.pbtxt"))
    assert "image" in anomalies.anomaly_info


def test_nan_pixels_reaching_validation_are_anomalies(tmp_path):
    def mutate(split, images, labels):
        if split == "train":
            images[0, 0, 0] = np.nan
        return images, labels

    with pytest.raises(DataAnomalyError, match=r"image"):
        _validate(tmp_path, _raw(tmp_path, mutate, float_images=True))


def test_bad_labels_are_anomalies(tmp_path):
    def mutate(split, images, labels):
        if split == "test":
            labels[4] = 11
        return images, labels

    with pytest.raises(DataAnomalyError, match=r"test/label"):
        _validate(tmp_path, _raw(tmp_path, mutate))


def test_label_drift_between_train_and_test_is_caught(tmp_path):
    def mutate(split, images, labels):
        if split == "test":
            labels[:] = labels % 3  # only classes 0..2 in test
        return images, labels

    with pytest.raises(DataAnomalyError, match=r"test/label: High Linfty distance"):
        _validate(tmp_path, _raw(tmp_path, mutate))


def test_wrong_image_size_is_an_anomaly(tmp_path):
    def mutate(split, images, labels):
        if split == "train":
            images = images[:, :27, :]  # 756 values per example
        return images, labels

    with pytest.raises(DataAnomalyError, match=r"train/image"):
        _validate(tmp_path, _raw(tmp_path, mutate))
