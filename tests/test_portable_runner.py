"""The data-parallel stages run unchanged on Beam's portable job API (what Flink and
Spark use), here through the SDK's embedded job service with a loopback worker."""

import os

import pytest

from components.ingest.component import COMPONENT as INGEST
from components.transform.component import COMPONENT as TRANSFORM
from pipeline.artifacts import Artifact
from pipeline.component import ExecutionContext, run_executor
from pipeline.config import load_config
from tests.conftest import synthetic_images, write_idx

PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


@pytest.mark.slow
def test_ingest_and_transform_on_the_portable_runner(tmp_path):
    write_idx(tmp_path / "idx", "train", *synthetic_images(100, 1))
    write_idx(tmp_path / "idx", "t10k", *synthetic_images(40, 2))
    config = load_config(None, [f"data.source=idx:{tmp_path / 'idx'}", "noise.kind=mask"])
    ctx = ExecutionContext(beam_args=PORTABLE)

    raw = Artifact("Examples", str(tmp_path / "raw"))
    os.makedirs(raw.uri)
    m = run_executor(INGEST, {}, {"examples": raw}, INGEST.params(config), ctx)
    assert m["num_examples"] == 140

    outs = {k: Artifact(t, str(tmp_path / k)) for k, t in TRANSFORM.outputs.items()}
    for a in outs.values():
        os.makedirs(a.uri)
    m = run_executor(TRANSFORM, {"examples": raw, "statistics": None}, outs,
                     TRANSFORM.params(config), ctx)
    assert m["num_examples"] == 140
    assert outs["examples"].properties["noisy"] is True
    assert os.path.exists(tmp_path / "statistics" / "Split-test" / "FeatureStats.pb")
