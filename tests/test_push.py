"""push: the executor alone on artifacts on disk, with parameters from the real config:
a blessed model lands in TensorFlow Serving's layout with versions that only grow, an
unblessed one does not (unless forced), and a failed copy leaves no version behind."""

from __future__ import annotations

import json
import os
import threading

import pytest

from components.push import executor as push_executor
from pipeline.artifacts import BLESSING, MODEL, SAVED_MODEL, Artifact
from pipeline.component import ExecutionContext
from tests.helpers import output_artifacts, params, run_executor


@pytest.fixture
def saved_model(tmp_path):
    """A SavedModel artifact laid out as export writes it:
    <uri>/model/{saved_model.pb,variables/}."""
    uri = tmp_path / "saved_model"
    (uri / "model" / "variables").mkdir(parents=True)
    (uri / "model" / "saved_model.pb").write_bytes(b"\x08\x01" * 64)
    (uri / "model" / "variables" / "variables.index").write_bytes(b"index")
    return Artifact(SAVED_MODEL, str(uri), properties={"path": "model"})


CANDIDATE = Artifact(MODEL, "/unused/model", properties={"run_id": "r2"}, id=7)
BASELINE = Artifact(MODEL, "/unused/baseline", properties={"run_id": "r1"}, id=3)


def _blessing(blessed: bool, against: Artifact | None = None) -> Artifact:
    return Artifact(
        BLESSING,
        "/unused",
        properties={
            "blessed": blessed,
            "reason": "better: bce_excess 0.03 vs 0.04"
            if blessed
            else "worse than the blessed baseline: bce_excess 0.05 vs 0.04",
            "baseline_artifact_id": against.id if against else None,
            "baseline_run_id": against.properties["run_id"] if against else None,
        },
    )


def _push(
    tmp_path,
    saved_model,
    blessed: bool,
    *overrides: str,
    name: str = "p",
    against: Artifact | None = None,
    current: Artifact | None = None,
) -> dict:
    """Push with the blessing decided against `against`; `current`: the lineage's blessed
    model when push starts (what the launcher resolves)."""
    out = output_artifacts("push", tmp_path / name)
    ctx = ExecutionContext(root=str(tmp_path / "root"))
    inputs = {
        "model": CANDIDATE,
        "saved_model": saved_model,
        "blessing": _blessing(blessed, against),
        "current_baseline": current,
    }
    metrics = run_executor("push", params("push", *overrides), inputs, out, ctx)
    record = json.load(open(os.path.join(out["pushed_model"].uri, push_executor.PUSH_JSON)))
    assert out["pushed_model"].properties["pushed"] == record["pushed"] == metrics["pushed"]
    return record


def test_blessed_model_is_pushed_into_servings_layout_with_growing_versions(tmp_path, saved_model):
    first = _push(tmp_path, saved_model, True, name="a")
    model_dir = tmp_path / "root" / "serving" / "fashion_mnist_best"  # the config's defaults
    assert first["pushed"] is True and first["version"] == 1
    assert first["destination"] == str(model_dir / "1")
    assert (model_dir / "1" / "saved_model.pb").read_bytes() == b"\x08\x01" * 64
    assert (model_dir / "1" / "variables" / "variables.index").exists()
    second = _push(tmp_path, saved_model, True, name="b")
    assert second["version"] == 2
    assert sorted(n for n in os.listdir(model_dir) if not n.startswith(".")) == ["1", "2"]
    assert not [n for n in os.listdir(model_dir) if n.startswith(".tmp-")]


def test_deleting_the_newest_version_never_reissues_its_number(tmp_path, saved_model):
    _push(tmp_path, saved_model, True, name="a")
    _push(tmp_path, saved_model, True, name="b")
    model_dir = tmp_path / "root" / "serving" / "fashion_mnist_best"
    import shutil

    shutil.rmtree(model_dir / "2")
    assert _push(tmp_path, saved_model, True, name="c")["version"] == 3


def test_unblessed_model_is_not_pushed_and_says_why(tmp_path, saved_model):
    record = _push(tmp_path, saved_model, False)
    assert record["pushed"] is False and record["version"] is None
    assert record["reason"].startswith("not blessed: worse than the blessed baseline")
    assert not (tmp_path / "root" / "serving").exists()


def test_force_push_pushes_an_unblessed_model_and_records_it(tmp_path, saved_model):
    record = _push(tmp_path, saved_model, False, "push.force=true")
    assert record["pushed"] is True and record["forced"] is True and record["version"] == 1
    assert record["reason"].startswith("forced (--force-push) although not blessed")


def test_model_name_and_absolute_serving_dir_from_the_config(tmp_path, saved_model):
    target = tmp_path / "elsewhere"
    record = _push(
        tmp_path, saved_model, True, f"push.serving_dir={target}", "push.model_name=garments"
    )
    assert record["destination"] == str(target / "garments" / "1")
    denoise = params("push", "noise.kind=gaussian", "model.variant=denoise")
    assert denoise.name == "fashion_mnist_denoise_gaussian"


def test_a_failed_copy_leaves_no_version_and_no_staging(tmp_path, saved_model):
    broken = Artifact(SAVED_MODEL, saved_model.uri, properties={"path": "missing"})
    with pytest.raises(FileNotFoundError):
        _push(tmp_path, broken, True)
    model_dir = tmp_path / "root" / "serving" / "fashion_mnist_best"
    assert [n for n in os.listdir(model_dir) if not n.startswith(".push")] == []


def test_overlapping_pushes_get_distinct_versions(tmp_path, saved_model):
    model_dir = str(tmp_path / "serving" / "m")
    source = os.path.join(saved_model.uri, "model")
    versions = []

    def push():
        versions.append(push_executor._push(source, model_dir)[0])

    threads = [threading.Thread(target=push) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "override",
    ["push.serving_dir=gs://bucket/serving", "push.model_name=-bad", "push.model_name=a/b"],
)
def test_bad_push_config_is_rejected_naming_the_key(override):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        params("push", override)


def test_a_blessing_superseded_by_an_overlapping_run_is_not_pushed(tmp_path, saved_model):
    """Decided against r1's model, but another run blessed a newer model meanwhile."""
    newer = Artifact(MODEL, "/unused/newer", properties={"run_id": "r3"}, id=9)
    record = _push(tmp_path, saved_model, True, against=BASELINE, current=newer)
    assert record["pushed"] is False
    assert record["reason"].startswith("superseded: blessed against run r1's model")
    assert "run r3 has blessed another model" in record["reason"]
    assert not (tmp_path / "root" / "serving").exists()
    # still the model it was decided against: pushed
    assert (
        _push(tmp_path, saved_model, True, name="q", against=BASELINE, current=BASELINE)["pushed"]
        is True
    )
    # forced anyway, and recorded so
    forced = _push(
        tmp_path, saved_model, True, "push.force=true", name="f", against=BASELINE, current=newer
    )
    assert forced["pushed"] and forced["forced"]
    assert forced["reason"].startswith("forced (--force-push) although superseded")
    # the baseline it was decided against is gone and nothing replaced it: not pushed either
    gone = _push(tmp_path, saved_model, True, name="g", against=BASELINE, current=None)
    assert gone["pushed"] is False
    assert gone["reason"].startswith("superseded: blessed against run r1's model")
    assert "no longer a usable blessed model" in gone["reason"]


def test_the_push_record_stands_for_the_model_directory_not_one_version(tmp_path, saved_model):
    """A rollback (deleting the newest version) keeps the record reusable, so the schedule
    does not push the same model back; a wiped model directory makes it unusable."""
    from pipeline.artifacts import EXTERNAL_PATHS

    out = output_artifacts("push", tmp_path / "p")
    ctx = ExecutionContext(root=str(tmp_path / "root"))
    run_executor(
        "push",
        params("push"),
        {"model": CANDIDATE, "saved_model": saved_model, "blessing": _blessing(True)},
        out,
        ctx,
    )
    [path] = out["pushed_model"].properties[EXTERNAL_PATHS]
    model_dir = tmp_path / "root" / "serving" / "fashion_mnist_best"
    assert path == str(model_dir / push_executor.LAST_VERSION) and os.path.exists(path)
    import shutil

    shutil.rmtree(model_dir / "1")  # rollback
    assert os.path.exists(path)
    shutil.rmtree(model_dir)  # wiped
    assert not os.path.exists(path)


def test_gate_baseline_none_disables_the_supersession_check():
    assert params("push").baseline_lineage() == "fashion_mnist/best/clean"
    assert params("push", "gate.baseline=none").baseline_lineage() is None
    assert params("evaluate", "gate.baseline=none").baseline_lineage() is None
    assert params("evaluate").lineage() == params("push").baseline_lineage()


def test_a_model_trained_without_some_classes_is_served_under_its_own_name():
    assert params("push").name == "fashion_mnist_best"
    assert params("push", "data.holdout_labels=[9, 3]").name == "fashion_mnist_best_holdout3-9"
    assert (
        params("push", "data.holdout_labels=[9]", "noise.kind=mask").name
        == "fashion_mnist_best_mask_holdout9"
    )
    # an explicit push.model_name is the user's choice
    assert params("push", "data.holdout_labels=[9]", "push.model_name=novelty").name == "novelty"
