"""Retention (`pipeline/gc.py`): which runs and artifacts are kept, what is deleted and how,
and that gc never races a live run. Fast cases build roots through the real ML Metadata
store with artifact directories committed as the launcher commits them; one slow case
collects a real root made by the CLI and reruns the collected run's command."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time

import pytest
from ml_metadata.proto import metadata_store_pb2 as pb

import run_pipeline
from pipeline import artifacts, gc, locks, runner
from pipeline.artifacts import Artifact
from pipeline.errors import EXIT_CONFIG, EXIT_OK, EXIT_SKIPPED, ConfigError
from pipeline.metadata import MetadataStore
from pipeline.views import Views

DAY = 86400.0
VIEWS = Views.of(run_pipeline.create_pipeline())  # what the pages of collected runs show


# -- roots built through the real MetadataStore ----------------------------------------------


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _commit(root: str, stage: str, run_id: str, key: str, type_: str, props: dict) -> Artifact:
    """A committed artifact directory like the launcher's: a payload, _artifact.json and
    the _COMMITTED marker, renamed into artifacts/<stage>/<run_id>/<key>."""
    uri = os.path.join(root, "artifacts", stage, run_id, key)
    tmp = artifacts.begin(uri)
    with open(os.path.join(tmp, "payload.bin"), "wb") as f:
        f.write(os.urandom(1000 + 100 * len(key)))
    props = {
        "fingerprint": _fingerprint(stage, run_id, key),
        "producer": stage,
        "run_id": run_id,
        **props,
    }
    artifacts.commit(tmp, uri, {**props, "type": type_})
    return Artifact(type_, uri, properties=props)


def _stage(
    store: MetadataStore,
    run_id: str,
    stage: str,
    inputs: dict,
    outputs: dict,
    state: str = "complete",
    fingerprint: str | None = None,
) -> dict[str, Artifact]:
    """One execution as the launcher records it. `outputs`: key -> (type, properties)
    committed now, or key -> an existing Artifact (a cache hit reuses it)."""
    made = {
        k: v if isinstance(v, Artifact) else _commit(store.root, stage, run_id, k, *v)
        for k, v in outputs.items()
    }
    store.put_execution(
        run_id,
        stage,
        state,
        {"fingerprint": fingerprint or _fingerprint(stage, run_id)},
        inputs=inputs,
        outputs=made,
    )
    return made


def _start(store: MetadataStore, run_id: str, age_days: float, **props) -> None:
    store.start_run(
        run_id,
        {
            "status": "succeeded",
            "started": time.time() - age_days * DAY,
            "stages": ["ingest", "train", "evaluate"],
            **props,
        },
    )


def _pipeline_run(store, run_id, age_days, blessed: bool | None = None) -> dict[str, Artifact]:
    """ingest -> train -> evaluate, every output its own directory; `blessed` given:
    evaluate also writes a ModelBlessing."""
    _start(store, run_id, age_days)
    out = _stage(store, run_id, "ingest", {}, {"examples": (artifacts.EXAMPLES, {})})
    out |= _stage(
        store,
        run_id,
        "train",
        {"examples": out["examples"]},
        {"model": (artifacts.MODEL, {}), "model_run": (artifacts.MODEL_RUN, {})},
    )
    evaluated = {"evaluation": (artifacts.EVALUATION, {})}
    if blessed is not None:
        evaluated["blessing"] = (artifacts.BLESSING, {"blessed": blessed})
    out |= _stage(
        store,
        run_id,
        "evaluate",
        {k: out[k] for k in ("model", "model_run", "examples")},
        evaluated,
    )
    return out


def _state(store: MetadataStore, a: Artifact) -> int:
    return store.store.get_artifacts_by_id([a.id])[0].state


def _rel(store: MetadataStore, *arts: Artifact) -> set[str]:
    return {os.path.relpath(a.uri, store.root) for a in arts}


def _size(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _digest(root) -> str:
    """Every file under the root (ML Metadata's database included) but the lock files."""
    h = hashlib.sha256()
    paths = sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )
    for rel in paths:
        if rel.split(os.sep)[0] != "locks":
            h.update(rel.encode())
            with open(os.path.join(root, rel), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture
def store(tmp_path) -> MetadataStore:
    return MetadataStore(str(tmp_path / "root"))


# -- policy -------------------------------------------------------------------------------


def test_keep_last_deletes_the_older_runs_own_artifacts_and_marks_them_deleted(store):
    old = _pipeline_run(store, "r1", 3)
    mid = _pipeline_run(store, "r2", 2)
    new = _pipeline_run(store, "r3", 1)
    sizes = {a.uri: _size(a.uri) for a in old.values()}

    result = gc.collect(store.root, keep_last=2, keep_days=None, dry_run=False, views=VIEWS)

    assert result["kept_runs"] == ["r3", "r2"] and result["collected_runs"] == ["r1"]
    assert {d["uri"] for d in result["deleted"]} == _rel(store, *old.values())
    assert {d["run_id"] for d in result["deleted"]} == {"r1"}
    assert result["protected"] == []
    # the directories are gone, and ML Metadata says so: the cache can never reuse them
    for a in old.values():
        assert not os.path.exists(a.uri)
        assert _state(store, a) == pb.Artifact.DELETED
    for a in [*mid.values(), *new.values()]:
        assert artifacts.is_committed(a.uri) and _state(store, a) == pb.Artifact.LIVE
    assert result["freed_bytes"] == sum(sizes.values())
    assert result["freed_bytes"] == sum(d["bytes"] for d in result["deleted"])
    # the run record stays and says what gc took
    record = store.get_run("r1")["gc"]
    assert record["artifacts"] == len(old)
    assert time.time() - 60 < record["deleted_at"] <= time.time()
    assert "gc" not in store.get_run("r2")
    # nothing left to do: a second gc deletes nothing
    again = gc.collect(store.root, keep_last=2, keep_days=None, dry_run=False, views=VIEWS)
    assert again["deleted"] == [] and again["freed_bytes"] == 0


@pytest.mark.parametrize(
    "keep_last, keep_days, kept",
    [
        (2, None, ["r3", "r2"]),  # the skipped run takes no slot
        (None, 2, ["skipped", "r3"]),  # started within 2 days
        (1, 4, ["skipped", "r3", "r2"]),  # union: the days rule reaches further
        (3, 0.5, ["skipped", "r3", "r2", "r1"]),  # union: the count reaches further
        (0, 0, []),
    ],
)
def test_runs_kept_are_the_newest_n_and_those_within_d_days(store, keep_last, keep_days, kept):
    for run_id, age in (("r1", 5), ("r2", 3), ("r3", 1)):
        _pipeline_run(store, run_id, age)
    _start(store, "skipped", 0.1, status="skipped")  # --skip-if-running: no stage ran

    result = gc.collect(store.root, keep_last, keep_days, dry_run=True, views=VIEWS)

    assert result["kept_runs"] == kept
    assert result["collected_runs"] == [r for r in ("skipped", "r3", "r2", "r1") if r not in kept]
    collected_uris = {d["uri"] for d in result["deleted"]}
    for run_id in ("r1", "r2", "r3"):
        own = os.path.join("artifacts", "train", run_id, "model")
        assert (own in collected_uris) == (run_id not in kept)


@pytest.mark.parametrize(
    "keep_last, keep_days, flag",
    [
        (None, None, "--keep-last and/or --keep-days"),
        (-1, None, "--keep-last"),
        (None, -0.5, "--keep-days"),
        (None, math.nan, "--keep-days"),
    ],
)
def test_a_bad_policy_is_a_config_error_naming_the_flag(store, keep_last, keep_days, flag):
    _pipeline_run(store, "r1", 3)
    before = _digest(store.root)
    with pytest.raises(ConfigError, match=flag) as e:
        gc.collect(store.root, keep_last, keep_days, dry_run=False, views=VIEWS)
    assert e.value.exit_code == EXIT_CONFIG
    assert _digest(store.root) == before


def test_a_directory_without_ml_metadata_is_refused_and_left_alone(tmp_path):
    with pytest.raises(ConfigError, match="not a pipeline root"):
        gc.collect(
            str(tmp_path / "nothing"), keep_last=1, keep_days=None, dry_run=False, views=VIEWS
        )
    assert not (tmp_path / "nothing").exists()


# -- what is protected --------------------------------------------------------------------


def test_a_blessed_model_of_a_collected_run_is_kept_with_why(store):
    unblessed = _pipeline_run(store, "r0", 3, blessed=False)
    blessed = _pipeline_run(store, "r1", 2, blessed=True)
    # r1b retrained the same model (`--only train`), then hit the cache on r1's evaluate:
    # the blessing is r1's verdict on r1's model, not on r1b's copy
    _start(store, "r1b", 1.5)
    retrained = _stage(
        store,
        "r1b",
        "train",
        {"examples": blessed["examples"]},
        {"model": (artifacts.MODEL, {}), "model_run": (artifacts.MODEL_RUN, {})},
    )
    _stage(
        store,
        "r1b",
        "evaluate",
        {**retrained, "examples": blessed["examples"]},
        {k: blessed[k] for k in ("evaluation", "blessing")},
        state="cached",
    )
    _pipeline_run(store, "r2", 1)

    result = gc.collect(store.root, keep_last=1, keep_days=None, dry_run=False, views=VIEWS)

    backing = [blessed[k] for k in ("model", "model_run", "evaluation", "blessing")]
    assert {p["uri"] for p in result["protected"]} == _rel(store, *backing)
    assert {p["why"] for p in result["protected"]} == {
        "backs the model blessed by evaluate in run r1"
    }
    for a in backing:
        assert artifacts.is_committed(a.uri) and _state(store, a) == pb.Artifact.LIVE
    # data is not part of a release: it can be regenerated
    assert _rel(store, blessed["examples"]) <= {d["uri"] for d in result["deleted"]}
    # a blessing that said no protects nothing, nor does a cache hit on a blessing
    assert _rel(store, *unblessed.values(), *retrained.values()) <= {
        d["uri"] for d in result["deleted"]
    }
    text = gc.render_text(result)
    assert (
        "keep Model artifacts/train/r1/model: backs the model blessed by evaluate in run r1" in text
    )


def test_a_pushed_model_of_a_collected_run_is_kept_with_why(store):
    released = {}
    for run_id, age, pushed in (("r0", 3, False), ("r1", 2, True)):
        out = _pipeline_run(store, run_id, age, blessed=False)
        out |= _stage(
            store,
            run_id,
            "export",
            {k: out[k] for k in ("model", "examples")},
            {"saved_model": (artifacts.SAVED_MODEL, {}), "embeddings": (artifacts.EMBEDDINGS, {})},
        )
        out |= _stage(
            store,
            run_id,
            "push",
            {k: out[k] for k in ("saved_model", "blessing")},
            {
                "pushed_model": (
                    artifacts.PUSHED_MODEL,
                    {"pushed": pushed, "version": 1 if pushed else None},
                )
            },
        )
        released[run_id] = out
    _pipeline_run(store, "r2", 1)

    result = gc.collect(store.root, keep_last=1, keep_days=None, dry_run=False, views=VIEWS)

    r1 = released["r1"]
    backing = [r1[k] for k in ("saved_model", "blessing", "pushed_model")]
    assert {p["uri"] for p in result["protected"]} == _rel(store, *backing)
    assert {p["why"] for p in result["protected"]} == {"backs the model pushed by push in run r1"}
    assert all(artifacts.is_committed(a.uri) for a in backing)
    # the push keeps what it read and wrote, not the whole run
    deleted = {d["uri"] for d in result["deleted"]}
    assert _rel(store, r1["model"], r1["embeddings"], r1["examples"]) <= deleted
    assert _rel(store, *released["r0"].values()) <= deleted


def test_what_a_kept_run_reuses_from_the_cache_is_kept(store):
    """r2 changed only evaluate: ingest, train and export are cache hits on r1's outputs,
    attached to r2 by the OUTPUT events of its cached executions."""
    old = _pipeline_run(store, "r1", 3)
    old |= _stage(
        store,
        "r1",
        "export",
        {k: old[k] for k in ("model", "examples")},
        {"saved_model": (artifacts.SAVED_MODEL, {}), "embeddings": (artifacts.EMBEDDINGS, {})},
    )
    _start(store, "r2", 1)
    reused = {k: old[k] for k in ("examples", "model", "model_run", "saved_model", "embeddings")}
    _stage(store, "r2", "ingest", {}, {"examples": old["examples"]}, state="cached")
    _stage(
        store,
        "r2",
        "train",
        {"examples": old["examples"]},
        {k: old[k] for k in ("model", "model_run")},
        state="cached",
    )
    _stage(
        store,
        "r2",
        "export",
        {k: old[k] for k in ("model", "examples")},
        {k: old[k] for k in ("saved_model", "embeddings")},
        state="cached",
    )
    _stage(
        store,
        "r2",
        "evaluate",
        {k: old[k] for k in ("model", "model_run", "examples")},
        {"evaluation": (artifacts.EVALUATION, {})},
    )

    result = gc.collect(store.root, keep_last=1, keep_days=None, dry_run=False, views=VIEWS)

    assert result["collected_runs"] == ["r1"]
    assert [d["uri"] for d in result["deleted"]] == [*_rel(store, old["evaluation"])]
    for a in reused.values():
        assert artifacts.is_committed(a.uri) and _state(store, a) == pb.Artifact.LIVE
    assert result["protected"] == []  # kept by a kept run, not by a release


# -- safety and side effects -----------------------------------------------------------------


def test_a_gc_that_fails_half_way_leaves_nothing_reusable_and_the_next_one_finishes(
    store, monkeypatch
):
    old = _pipeline_run(store, "r1", 2)
    _pipeline_run(store, "r2", 1)
    first = min(old.values(), key=lambda a: a.id)  # deleted first

    def fail(path, *args, **kwargs):
        raise OSError(f"disk error removing {path}")

    with monkeypatch.context() as m:
        m.setattr(gc.shutil, "rmtree", fail)
        with pytest.raises(OSError, match="disk error"):
            gc.collect(store.root, keep_last=1, keep_days=None, dry_run=False, views=VIEWS)
    # still LIVE in ML Metadata, but no longer committed: the cache cannot reuse it
    assert os.path.exists(first.uri) and not artifacts.is_committed(first.uri)
    assert _state(store, first) == pb.Artifact.LIVE
    result = gc.collect(store.root, keep_last=1, keep_days=None, dry_run=False, views=VIEWS)
    assert {d["uri"] for d in result["deleted"]} == _rel(store, *old.values())
    assert not os.path.exists(first.uri) and _state(store, first) == pb.Artifact.DELETED


def test_a_live_run_makes_gc_refuse_and_a_dead_one_does_not(store):
    old = _pipeline_run(store, "r1", 3)
    _pipeline_run(store, "r2", 2)
    _start(
        store,
        "live",
        0,
        status="running",
        heartbeat=time.time(),
        owner_pid=os.getpid(),
        owner_host=socket.gethostname(),
    )
    staging = os.path.join(
        store.root, "artifacts", "train", "live", artifacts.TMP_PREFIX + "model-0123abcd"
    )
    os.makedirs(staging)
    before = _digest(store.root)
    lock = runner.run_lock(store.root, "live")
    lock.acquire()
    try:
        with pytest.raises(gc.RootBusy, match="run live still running") as e:
            gc.collect(store.root, keep_last=1, keep_days=None, dry_run=False, views=VIEWS)
        assert e.value.exit_code == EXIT_SKIPPED
        assert _digest(store.root) == before
    finally:
        lock.release()
    # its process is gone: recorded as abandoned, its staging directory removed
    result = gc.collect(store.root, keep_last=1, keep_days=None, dry_run=False, views=VIEWS)
    assert store.get_run("live")["status"] == "abandoned"
    assert [s["path"] for s in result["staging_removed"]] == [os.path.relpath(staging, store.root)]
    assert not os.path.exists(staging)
    assert not os.path.exists(old["model"].uri)


def test_staging_and_finished_work_dirs_are_removed_resumable_and_locked_ones_kept(store):
    _start(store, "r1", 1)
    fp = {name: _fingerprint("train", name) for name in ("done", "locked", "resumable", "stale")}
    _stage(store, "r1", "train", {}, {}, fingerprint=fp["done"])
    _stage(store, "r1", "train", {}, {}, fingerprint=fp["locked"])
    _stage(store, "r1", "train", {}, {}, state="failed", fingerprint=fp["resumable"])
    work = {}
    for name, f in fp.items():
        work[name] = os.path.join(store.root, "work", "train", f[:16])
        os.makedirs(os.path.join(work[name], "backup"))
        with open(os.path.join(work[name], "backup", "chkpt"), "wb") as fh:
            fh.write(b"x" * 3000)
    month_ago = time.time() - 30 * DAY
    for d, _, files in os.walk(work["stale"]):
        for p in [d, *(os.path.join(d, f) for f in files)]:
            os.utime(p, (month_ago, month_ago))
    staging = os.path.join(store.root, "artifacts", "train", "r0", artifacts.TMP_PREFIX + "model-1")
    os.makedirs(staging)
    with open(os.path.join(staging, "weights"), "wb") as fh:
        fh.write(b"y" * 500)
    scratch = os.path.join(store.root, "tmp", "r0")  # a dead run's TMPDIR (Beam, autograph)
    os.makedirs(os.path.join(scratch, "beam-pipeline-temp1"))
    with open(os.path.join(scratch, "__autograph_generated_file1.py"), "wb") as fh:
        fh.write(b"z" * 70)
    sizes = {p: _size(p) for p in [staging, scratch, *work.values()]}
    held = locks.FileLock(store.root, f"stage-train-{fp['locked'][:16]}")
    held.acquire()
    try:
        result = gc.collect(store.root, keep_last=1, keep_days=None, dry_run=False, views=VIEWS)
        # with --keep-days, work untouched for longer than that is given up too
        aged = gc.collect(store.root, keep_last=1, keep_days=7, dry_run=False, views=VIEWS)
    finally:
        held.release()

    rel = {k: os.path.relpath(p, store.root) for k, p in work.items()}
    assert result["staging_removed"] == [
        {"path": os.path.relpath(p, store.root), "bytes": sizes[p]} for p in (staging, scratch)
    ]
    assert [w["path"] for w in result["work_removed"]] == [rel["done"]]
    assert result["freed_bytes"] == sizes[staging] + sizes[scratch] + sizes[work["done"]]
    assert [w["path"] for w in aged["work_removed"]] == [rel["stale"]]
    assert aged["freed_bytes"] == sizes[work["stale"]]
    assert not os.path.exists(staging) and not os.path.exists(scratch)
    assert {k for k, p in work.items() if os.path.exists(p)} == {"locked", "resumable"}


def test_dry_run_changes_nothing_and_reports_what_gc_then_does(store):
    _pipeline_run(store, "r1", 3, blessed=True)
    _pipeline_run(store, "r2", 2)
    _pipeline_run(store, "r3", 1)
    os.makedirs(os.path.join(store.root, "artifacts", "train", "r2", artifacts.TMP_PREFIX + "x-1"))
    os.makedirs(os.path.join(store.root, "work", "train", _fingerprint("train", "r2")[:16]))
    before = _digest(store.root)

    dry = gc.collect(store.root, keep_last=1, keep_days=None, dry_run=True, views=VIEWS)

    assert _digest(store.root) == before
    assert dry["deleted"] and dry["protected"] and dry["staging_removed"] and dry["work_removed"]
    text = gc.render_text(dry)
    assert "kept 1 run(s): r3; collected 2: r2, r1" in text
    assert "would delete Model artifacts/train/r2/model" in text
    assert text.splitlines()[-1].startswith("would free ")
    real = gc.collect(store.root, keep_last=1, keep_days=None, dry_run=False, views=VIEWS)
    assert real == {**dry, "dry_run": False}
    assert _digest(store.root) != before
    assert gc.render_text(real).splitlines()[-1] == f"freed {real['freed_bytes'] / 2**20:.1f} MiB"


# -- a real root ------------------------------------------------------------------------------


@pytest.mark.slow
def test_gc_of_a_real_root_deletes_only_the_collected_runs_own_work_and_it_is_recomputed(
    tmp_path, idx_dir
):
    root = tmp_path / "root"

    def run(run_id: str, epochs: int) -> dict:
        code = run_pipeline.main(
            [
                "run",
                "--root",
                str(root),
                "--run-id",
                run_id,
                "--config",
                "dense",
                "--set",
                f"data.source=idx:{idx_dir}",
                "--set",
                "data.num_shards=2",
                "--set",
                "train.batch_size=64",
                "--set",
                f"train.epochs={epochs}",
                # nothing blessed, nothing pushed: every unshared artifact of r1 is collectable
                "--set",
                "gate.max_bce_excess=1e-9",
            ]
        )
        assert code == EXIT_OK
        with open(root / "runs" / run_id / "summary.json") as f:
            return json.load(f)

    first = run("r1", 1)
    second = run("r2", 2)
    shared = [n for n, st in second["stages"].items() if st["status"] == "cached"]
    own = [n for n, st in second["stages"].items() if st["status"] == "ran"]
    assert shared[:3] == ["ingest", "validate", "transform"] and "train" in own

    result = gc.collect(str(root), keep_last=1, keep_days=None, dry_run=False, views=VIEWS)

    assert result["kept_runs"] == ["r2"] and result["collected_runs"] == ["r1"]
    r1_own = {uri for n in own for uri in first["stages"][n]["artifacts"].values()}
    assert {os.path.join(str(root), d["uri"]) for d in result["deleted"]} == r1_own
    assert result["protected"] == []
    assert not any(os.path.exists(uri) for uri in r1_own)
    for n in shared:
        assert all(artifacts.is_committed(u) for u in first["stages"][n]["artifacts"].values())
    # r1's command again: the shared stages come from the cache, the deleted ones are
    # computed again (same fingerprint as r1's: only the deletion makes them run)
    third = run("r3", 1)
    assert {n: third["stages"][n]["status"] for n in third["stages"]} == {
        **{n: "cached" for n in shared},
        **{n: "ran" for n in own},
    }
    assert third["stages"]["train"]["fingerprint"] == first["stages"]["train"]["fingerprint"]
